"""The real codex exec-server, fetched by scripts/fetch-codex.sh (pinned by integrity).

``codex_bin`` is 0.169.0 (the version the protocol notes describe); ``codex_release``
runs a test once per pinned version (0.169.0 and 0.171.0).
Never skipped: if a binary cannot be fetched, these tests fail and say why.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import unified_exec as ue

ROOT = pathlib.Path(__file__).parents[2]


CODEX_VERSIONS = ["0.169.0", "0.171.0"]


def fetch_codex(version: str) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-codex.sh"), version],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"the real codex exec-server {version} is needed for the interop tests and could not "
            f"be fetched:\n{done.stderr.strip()}",
            pytrace=False,
        )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def codex_bin() -> str:
    return fetch_codex("0.169.0")


@pytest.fixture(scope="session", params=CODEX_VERSIONS)
def codex_release(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(version, path of its binary), once per pinned codex version."""
    version: str = request.param
    return version, fetch_codex(version)


@pytest.fixture
def codex_env(tmp_path: pathlib.Path) -> dict[str, str]:
    home = tmp_path / "codex-home"
    home.mkdir()
    return {**os.environ, "CODEX_HOME": str(home)}


@pytest.fixture
def codex_stdio(
    codex_bin: str, codex_env: dict[str, str]
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    return lambda: ue.RemoteExecBackend.connect_stdio(
        [codex_bin, "exec-server", "--listen", "stdio"], env=codex_env
    )


@pytest.fixture
def ours_stdio() -> Callable[[], AbstractAsyncContextManager[Any]]:
    return lambda: ue.RemoteExecBackend.connect_stdio(
        [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]
    )
