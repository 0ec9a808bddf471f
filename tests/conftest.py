"""Shared test rules: every test leaves no child process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from unified_exec.backends import _procfs


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
