"""An ExecServer in this trio run, spoken to in raw JSON-RPC over a real socketpair.

The connection class frames ndjson the way the stdio transport does (every frame of
one read is handed out without a checkpoint), so pipelined requests reach the server
in one batch, exactly as over a pipe. ``kind`` can be "websocket" for the detach and
resume rules. Nothing is mocked: the server, the backend and the children are real.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio

import unified_exec as ue
from unified_exec._protocol._jsonrpc import MessageError, NdjsonDecoder
from unified_exec.server import ExecServer

from .test_server_protocol import Raw

__all__ = ["SocketConnection", "connect", "served", "start_params"]


def start_params(process_id: str, argv: list[str], **kw: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "processId": process_id,
        "argv": argv,
        "cwd": "file:///tmp",
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        "tty": False,
    }
    params.update(kw)
    return params


class SocketConnection:
    """The server's end of a socketpair, framed as ndjson."""

    def __init__(self, stream: trio.SocketStream, kind: Literal["stdio", "websocket"]) -> None:
        self.kind = kind
        self.name = f"socketpair ({kind})"
        self._stream = stream
        self._decoder = NdjsonDecoder()
        self._ready: list[bytes | MessageError] = []

    async def send(self, text: str) -> None:
        await self._stream.send_all(text.encode() + b"\n")

    async def receive(self) -> str | bytes | MessageError | None:
        while not self._ready:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)


@asynccontextmanager
async def connect(
    server: ExecServer,
    kind: Literal["stdio", "websocket"] = "websocket",
    *,
    conn_class: type[SocketConnection] | None = None,
) -> AsyncIterator[Raw]:
    """One raw client connection to ``server``; leaving the block hangs up."""
    a, b = socket.socketpair()
    client, theirs = (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )

    async def send(frame: str | bytes) -> None:
        await client.send_all((frame if isinstance(frame, bytes) else frame.encode()) + b"\n")

    raw = Raw(send)

    async def reader() -> None:
        decoder = NdjsonDecoder()
        while True:
            try:
                data = await client.receive_some(1 << 20)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                raw.eof()
                return
            for line in decoder.feed(data):
                assert isinstance(line, bytes)
                raw.feed(line)

    async def serve() -> None:
        async with theirs:
            await server.serve_connection((conn_class or SocketConnection)(theirs, kind))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(reader)
        try:
            yield raw
        finally:
            await client.aclose()


@asynccontextmanager
async def served(backend: Any = None, **settings: Any) -> AsyncIterator[ExecServer]:
    """An ExecServer over ``backend`` (default: a real LocalPtyBackend)."""
    if backend is None:
        async with (
            ue.LocalPtyBackend(kill_grace=0) as local,
            ue.ExecServer(local, **settings) as server,
        ):
            yield server
    else:
        async with ue.ExecServer(backend, **settings) as server:
            yield server


async def send_lines(raw: Raw, messages: list[dict[str, Any]]) -> None:
    """Several messages in one write (they reach the server in one read)."""
    await raw.send_raw("\n".join(json.dumps(msg) for msg in messages))


def ids(raw: Raw) -> list[Any]:
    """Ids of the responses received so far, in arrival order."""
    return [m["id"] for _, m in raw.messages if "id" in m]


Pred = Callable[[dict[str, Any]], bool]
