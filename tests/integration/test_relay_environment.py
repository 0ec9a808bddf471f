"""A relay (our server serving a RemoteExecBackend) announces where its processes run —
the inner server's cwd and home, from the backend's description — not its own machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

import unified_exec as ue
from tests._support import announced_server, embedded_server
from unified_exec._uri import uri_path


async def test_a_relay_announces_the_inner_servers_cwd_and_home(tmp_path: Path) -> None:
    inner_cwd = tmp_path / "inner-cwd"
    inner_home = tmp_path / "inner-home"
    inner_cwd.mkdir()
    inner_home.mkdir()
    env = {**os.environ, "HOME": str(inner_home)}
    argv = [sys.executable, "-m", "unified_exec", "serve", "--listen", "ws://127.0.0.1:0",
            "--ws-auth", "none"]  # fmt: skip
    with trio.fail_after(60):
        async with (
            announced_server(argv, env, cwd=inner_cwd) as inner_url,
            ue.RemoteExecBackend.connect(inner_url) as inner,
            embedded_server(backend=inner) as outer_url,
            ue.RemoteExecBackend.connect(outer_url) as outer,
        ):
            info = outer.environment_info
            assert uri_path(info["cwd"]) == str(inner_cwd) != os.getcwd()
            assert uri_path(info["userHomeDir"]) == str(inner_home)
            assert ue.describe_backend(outer).cwd == str(inner_cwd)
            # and a process started with no cwd runs there, two hops away
            async with ue.open_process(outer, ue.ExecRequest(["pwd"])) as proc:
                await proc.wait()
                out = b"".join(c.data for c in (await proc.read()).chunks)
            assert out.decode().strip() == str(inner_cwd)
