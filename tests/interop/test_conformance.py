"""One conformance suite, unchanged, for every backend we ship and for codex."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import unified_exec as ue
from unified_exec.testing import CHECKS, check_backend

from .._support import announced_server, embedded_server

Factory = Callable[[], AbstractAsyncContextManager[Any]]


@pytest.mark.parametrize("check", list(CHECKS))
async def test_local_backend(check: str) -> None:
    assert await check_backend(ue.LocalPtyBackend, only=[check]) == [check]


@pytest.mark.parametrize("check", list(CHECKS))
async def test_our_server_over_stdio(ours_stdio: Factory, check: str) -> None:
    assert await check_backend(ours_stdio, only=[check]) == [check]


@pytest.mark.parametrize("check", list(CHECKS))
async def test_our_server_over_websocket(check: str) -> None:
    async with embedded_server() as url:
        assert await check_backend(lambda: ue.RemoteExecBackend.connect(url), only=[check])


@pytest.mark.parametrize("check", list(CHECKS))
async def test_real_codex_over_stdio(codex_stdio: Factory, check: str) -> None:
    assert await check_backend(codex_stdio, only=[check]) == [check]


@pytest.mark.parametrize("check", ["echo", "stdin", "tty", "8mib_checksum", "concurrent_50"])
async def test_real_codex_over_websocket(
    codex_bin: str, codex_env: dict[str, str], check: str
) -> None:
    argv = [codex_bin, "exec-server", "--listen", "ws://127.0.0.1:0"]
    async with announced_server(argv, codex_env) as url:
        assert url.startswith("ws://127.0.0.1:")
        assert await check_backend(lambda: ue.RemoteExecBackend.connect(url), only=[check])
