"""A loopback websocket proxy that records every JSON-RPC message in both directions.

Sits between the real codex CLI and an exec-server (codex's own or ours): bytes are
forwarded untouched, and a passive decoder reads the websocket frames out of each
direction after the HTTP upgrade (client frames masked, server frames not; text frames
reassembled across continuations). So the list of methods a test asserts on comes from
the wire, not from what we believe codex sends.

``log`` holds ``(direction, message)`` in arrival order, direction ``">"`` for client
to server and ``"<"`` for server to client; ``calls()`` pairs each request with its
answer.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._support import LINK_ERRORS, bridge, serving_tcp

__all__ = ["RecordingProxy"]


class _FrameReader:
    """Feed raw bytes of one direction; yields decoded text messages."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._upgraded = False
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        if not self._upgraded:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            del self._buf[: end + 4]
            self._upgraded = True
        while True:
            buf = self._buf
            if len(buf) < 2:
                return out
            fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
            masked, length = buf[1] & 0x80, buf[1] & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return out
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return out
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            key = b""
            if masked:
                if len(buf) < pos + 4:
                    return out
                key, pos = bytes(buf[pos : pos + 4]), pos + 4
            if len(buf) < pos + length:
                return out
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            if key:
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            if opcode in (0x1, 0x0):  # text, continuation (binary is not JSON-RPC here)
                self._parts.append(payload)
                if fin:
                    out.append(b"".join(self._parts))
                    self._parts = []


class RecordingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._host = upstream_host
        self._port = upstream_port
        self.port = 0
        self.log: list[tuple[str, Any]] = []
        self.connections = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, *, direction: str, conn: int
    ) -> None:
        reader = _FrameReader()
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    break
                for text in reader.feed(data):
                    try:
                        msg: Any = json.loads(text)
                    except ValueError:
                        msg = {"<undecodable>": text[:200].decode(errors="replace")}
                    if isinstance(msg, dict):
                        msg = {**msg, "<conn>": conn}
                    self.log.append((direction, msg))
                await dst.send_all(data)
        except LINK_ERRORS:
            pass
        finally:
            with trio.move_on_after(1):
                try:
                    await dst.send_eof()
                except LINK_ERRORS:
                    pass

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        conn = self.connections
        async with client:
            await bridge(
                client, self._host, self._port,
                functools.partial(self._pump, direction=">", conn=conn),
                functools.partial(self._pump, direction="<", conn=conn),
            )  # fmt: skip

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RecordingProxy]:
        async with serving_tcp(self._handle) as self.port:
            yield self

    def calls(self) -> list[tuple[str, Any, Any]]:
        """(method, params, answer) for every request, in the order sent; the answer is
        the response's ``result`` or ``{"error": ...}``, None if none came."""
        answers: dict[tuple[int, Any], Any] = {}
        for direction, msg in self.log:
            if direction == "<" and isinstance(msg, dict) and "id" in msg and "method" not in msg:
                key = (msg["<conn>"], msg["id"])
                answers[key] = msg["result"] if "result" in msg else {"error": msg.get("error")}
        out = []
        for direction, msg in self.log:
            if direction == ">" and isinstance(msg, dict) and "method" in msg:
                key = (msg["<conn>"], msg.get("id"))
                out.append((msg["method"], msg.get("params"), answers.get(key)))
        return out

    def notifications(self) -> list[tuple[str, Any]]:
        return [
            (msg["method"], msg.get("params"))
            for direction, msg in self.log
            if direction == "<" and isinstance(msg, dict) and "method" in msg and "id" not in msg
        ]
