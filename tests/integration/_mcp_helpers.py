"""Shared helpers for the MCP front-door tests: the official SDK client talking to a
real ``unified-exec mcp`` child (stdio or streamable HTTP), and a /proc scan for
processes that carry a marker variable in their environment."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import mcp_types as types
import trio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from .. import _support

MARKER_VAR = "UE_MCP_TEST_MARKER"


def new_marker() -> str:
    return secrets.token_hex(8)


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment holds ``MARKER_VAR=marker`` (zombies excluded)."""
    return _support.marked_pids(MARKER_VAR, marker)


async def wait_no_marked(marker: str, timeout: float = 15.0) -> list[int]:
    """Poll until no process carries the marker; what is left after ``timeout``."""
    return await _support.wait_until_none(lambda: marked_pids(marker), timeout)


def text_of(result: types.CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def session_id_of(text: str) -> int:
    match = re.search(r"Process running with session ID (\d+)", text)
    assert match, text
    return int(match.group(1))


def server_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "unified_exec", "mcp", *extra]


@asynccontextmanager
async def stdio_session(
    marker: str, *extra: str, cwd: str | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized SDK client session on a ``unified-exec mcp`` stdio child."""
    argv = server_argv(*extra)
    params = StdioServerParameters(
        command=argv[0],
        args=argv[1:],
        env={MARKER_VAR: marker, "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd=cwd,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def mcp_http_child(marker: str, *extra: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """A ``unified-exec mcp --listen http://127.0.0.1:0`` child and its endpoint URL."""
    env = dict(os.environ, **{MARKER_VAR: marker})
    proc = await trio.lowlevel.open_process(
        server_argv("--listen", "http://127.0.0.1:0", *extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                if not chunk:
                    raise AssertionError("mcp server exited before printing its URL")
                line += chunk
        yield proc, line.decode().strip()
    finally:
        if proc.returncode is None:
            proc.terminate()
        with trio.move_on_after(20):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
