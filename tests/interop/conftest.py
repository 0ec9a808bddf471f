"""The real codex exec-server, fetched by scripts/fetch-codex.sh (pinned by integrity).

``codex_bin`` is 0.169.0 (the version the protocol notes describe); ``codex_release``
runs a test once per pinned version (0.169.0 and 0.171.0); ``server_url`` once against
our server and once against a codex exec-server of each pinned version, on websocket.
Never skipped: if a binary cannot be fetched, these tests fail and say why.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import unified_exec as ue

from .._support import CODEX_VERSIONS, announced_server, embedded_server, fetch_codex


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


@pytest.fixture(params=["ours", *CODEX_VERSIONS])
async def server_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[str]:
    """Our server in this trio run, or a codex exec-server of each pinned version."""
    if request.param == "ours":
        async with embedded_server() as url:
            yield url
    else:
        argv = [fetch_codex(request.param), "exec-server", "--listen", "ws://127.0.0.1:0"]
        env = {"CODEX_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        async with announced_server(argv, env) as url:
            yield url
