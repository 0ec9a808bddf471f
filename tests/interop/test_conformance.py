"""One conformance suite, unchanged, for every backend we ship and for codex."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio

import unified_exec as ue
from unified_exec.testing import CHECKS, check_backend

Factory = Callable[[], AbstractAsyncContextManager[Any]]


@pytest.mark.parametrize("check", list(CHECKS))
async def test_local_backend(check: str) -> None:
    assert await check_backend(ue.LocalPtyBackend, only=[check]) == [check]


@pytest.mark.parametrize("check", list(CHECKS))
async def test_our_server_over_stdio(ours_stdio: Factory, check: str) -> None:
    assert await check_backend(ours_stdio, only=[check]) == [check]


@pytest.mark.parametrize("check", list(CHECKS))
async def test_our_server_over_websocket(check: str) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(ue.serve_exec_server)
        assert await check_backend(lambda: ue.RemoteExecBackend.connect(url), only=[check])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("check", list(CHECKS))
async def test_real_codex_over_stdio(codex_stdio: Factory, check: str) -> None:
    assert await check_backend(codex_stdio, only=[check]) == [check]


@pytest.mark.parametrize("check", ["echo", "stdin", "tty", "8mib_checksum", "concurrent_50"])
async def test_real_codex_over_websocket(
    codex_bin: str, codex_env: dict[str, str], check: str
) -> None:
    proc = await trio.lowlevel.open_process(
        [codex_bin, "exec-server", "--listen", "ws://127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=codex_env,
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(30):
            first = b""
            while b"\n" not in first:
                first += await proc.stdout.receive_some(4096)
        url = first.split(b"\n")[0].decode().strip()
        assert url.startswith("ws://127.0.0.1:")
        assert await check_backend(lambda: ue.RemoteExecBackend.connect(url), only=[check])
    finally:
        proc.kill()
        await proc.wait()
