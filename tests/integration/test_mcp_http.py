"""``unified-exec mcp --listen http://...``: streamable HTTP on trio (hypercorn), with
the official SDK client; and ``--exec-server`` on a real ``unified-exec serve``.

Every HTTP session has its own sessions: ending it (the client's DELETE) terminates
them, while the server keeps serving the next client.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import trio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from ._mcp_helpers import (
    MARKER_VAR,
    marked_pids,
    mcp_http_child,
    new_marker,
    session_id_of,
    stdio_session,
    text_of,
    wait_no_marked,
)

TOKEN = "mcp-http-test-token-0123456789"


@asynccontextmanager
async def http_session(url: str, token: str | None = TOKEN) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return str(path)


async def test_http_tools_python_session_and_teardown(tmp_path: Path) -> None:
    marker = new_marker()
    with trio.fail_after(120):
        async with mcp_http_child(marker, "--http-token-file", _token_file(tmp_path)) as (
            proc,
            url,
        ):
            assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
            async with http_session(url) as session:
                names = {t.name for t in (await session.list_tools()).tools}
                assert names == {"exec_command", "write_stdin"}
                ran = await session.call_tool("exec_command", {"cmd": "echo over-http"})
                assert not ran.is_error and "over-http" in text_of(ran)
                bad = await session.call_tool("exec_command", {"cmd": 5})
                assert bad.is_error and "missing field `cmd`" in text_of(bad)
                py = await session.call_tool(
                    "exec_command", {"cmd": "python3 -i -q", "tty": True, "yield_time_ms": 1500}
                )
                sid = session_id_of(text_of(py))
                out = await session.call_tool(
                    "write_stdin", {"session_id": sid, "chars": "print(2**10)\n"}
                )
                assert "1024" in text_of(out)
                await session.call_tool("exec_command", {"cmd": "sleep 300", "yield_time_ms": 300})
                children = set(marked_pids(marker)) - {proc.pid}
                assert len(children) >= 2
            # The client's DELETE ended the HTTP session: its processes are gone,
            # the server is not.
            with trio.move_on_after(15):
                while set(marked_pids(marker)) - {proc.pid}:
                    await trio.sleep(0.1)
            assert set(marked_pids(marker)) == {proc.pid}
            async with http_session(url) as session:
                again = await session.call_tool("exec_command", {"cmd": "echo next-client"})
                assert "next-client" in text_of(again)
                # Another client's session id is unknown here.
                other = await session.call_tool("write_stdin", {"session_id": sid, "chars": ""})
                assert other.is_error
    assert await wait_no_marked(marker) == []


async def test_http_requires_the_bearer_token(tmp_path: Path) -> None:
    child = mcp_http_child(new_marker(), "--http-token-file", _token_file(tmp_path))
    with trio.fail_after(60):
        async with child as (_proc, url), httpx2.AsyncClient() as client:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                response = await client.post(url, json=body, headers=headers)
                assert response.status_code == 401


async def test_refuses_off_loopback_without_a_token() -> None:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "unified_exec", "mcp", "--listen", "http://0.0.0.0:0",
             "--http-auth", "none"],
            capture_stdout=True, capture_stderr=True, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert done.returncode == 2
    assert b"off loopback a token is required" in done.stderr


async def test_exec_server_backend_uses_the_servers_cwd(tmp_path: Path) -> None:
    """--exec-server: commands run there, and the default directory is the one the
    exec-server announces, not the MCP process's own."""
    server_dir = tmp_path / "server-side"
    mcp_dir = tmp_path / "mcp-side"
    server_dir.mkdir()
    mcp_dir.mkdir()
    marker = new_marker()
    token_file = _token_file(tmp_path)
    env = dict(os.environ, **{MARKER_VAR: marker})
    serve = await trio.lowlevel.open_process(
        [sys.executable, "-m", "unified_exec", "serve", "--listen", "ws://127.0.0.1:0",
         "--ws-auth", "capability-token", "--ws-token-file", token_file],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=str(server_dir), env=env,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                line += await serve.stdout.receive_some(1)
        ws_url = line.decode().strip()
        with trio.fail_after(90):
            async with stdio_session(
                new_marker(), "--exec-server", ws_url, "--token-file", token_file,
                cwd=str(mcp_dir),
            ) as session:  # fmt: skip
                where = await session.call_tool("exec_command", {"cmd": "pwd"})
                assert str(server_dir) in text_of(where), text_of(where)
                # Remote sessions get the remote default environment: mark this one.
                marked = f"{MARKER_VAR}={marker} exec sleep 300"
                await session.call_tool("exec_command", {"cmd": marked, "yield_time_ms": 300})
                # A login shell on a loaded machine may take longer than the 300 ms yield.
                with trio.move_on_after(20):
                    while not set(marked_pids(marker)) - {serve.pid}:
                        await trio.sleep(0.1)
                assert set(marked_pids(marker)) - {serve.pid}
            with trio.move_on_after(15):
                while set(marked_pids(marker)) - {serve.pid}:
                    await trio.sleep(0.1)
            assert set(marked_pids(marker)) == {serve.pid}
    finally:
        serve.terminate()
        with trio.move_on_after(20):
            await serve.wait()
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
