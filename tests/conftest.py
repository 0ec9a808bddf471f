"""Shared test rules: every test leaves no child process behind, and every test has a
name that is the same in every process that collects it.

``make test`` runs the suite on pytest-xdist workers (``-n``, ``--dist loadgroup``):
each worker collects the whole suite and must find the same tests under the same
names, each runs its own session fixtures, and tests on different workers run at the
same time. So tests listen on port 0, write under ``tmp_path``, and find their
processes by a marker of their own (``tests/_support.py``), never by a fixed name.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator

import pytest

from unified_exec.backends import _procfs

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

# Login shells (`bash -lc`: codex runs every command so, and so do our tools) read
# the rc files in HOME. This machine's ~/.bashrc runs `pyenv rehash` under a lock
# file: racing shells warn about it on stderr (into output the tests compare), and a
# rehash killed mid-way (tests kill process groups) leaves the lock behind, so every
# later login shell waits 60 s for it. The tests' children get a HOME of their own
# with no rc files; the caches and the npm config (fetch-codex) stay where they are.
_REAL_HOME = os.path.expanduser("~")
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_REAL_HOME, ".cache"))
if os.path.exists(os.path.join(_REAL_HOME, ".npmrc")):
    os.environ.setdefault("NPM_CONFIG_USERCONFIG", os.path.join(_REAL_HOME, ".npmrc"))
os.environ["HOME"] = tempfile.mkdtemp(prefix="ue-test-home-")
atexit.register(shutil.rmtree, os.environ["HOME"], ignore_errors=True)
os.environ.setdefault("PYENV_REHASH_TIMEOUT", "1")


def _leftovers() -> set[int]:
    # Zombies count too: they are children nobody reaped.
    return _procfs.descendants(os.getpid())


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    before = _leftovers()
    yield
    deadline = time.monotonic() + 5
    leaked = _leftovers() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _leftovers() - before
    assert not leaked, f"test leaked processes: {sorted(leaked)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # An object's address in a test id differs from process to process: xdist workers
    # would collect different tests and refuse to run ("Different tests were collected").
    unstable = [item.nodeid for item in items if _ADDRESS.search(item.nodeid)]
    if unstable:
        raise pytest.UsageError(
            "test ids must not hold object addresses (give the parametrize ids): "
            + ", ".join(unstable[:5])
        )
