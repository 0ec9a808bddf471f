"""Transports for ExecServer: newline-delimited JSON on stdio, or websockets.

The websocket listener binds to loopback unless told otherwise, and refuses to
listen anywhere else without a token (the server runs arbitrary commands).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import sys
from typing import Any, Literal
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from .._errors import InvalidRequestError
from .._protocol._jsonrpc import MessageError, NdjsonDecoder
from ..backends import LocalPtyBackend
from ..backends._base import ExecBackend
from ._server import ExecServer

__all__ = ["MAX_MESSAGE_BYTES", "parse_listen", "serve_exec_server"]

log = logging.getLogger("unified_exec.server")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class _StdioConnection:
    kind: Literal["stdio", "websocket"] = "stdio"
    name = "stdio"

    def __init__(self, receive: trio.abc.ReceiveStream, send: trio.abc.SendStream) -> None:
        self._receive = receive
        self._send = send
        self._decoder = NdjsonDecoder(MAX_MESSAGE_BYTES)
        self._ready: list[bytes | MessageError] = []

    async def send(self, text: str) -> None:
        await self._send.send_all(text.encode() + b"\n")

    async def receive(self) -> str | bytes | MessageError | None:
        while not self._ready:
            data = await self._receive.receive_some(65536)
            if not data:
                return None
            self._ready.extend(self._decoder.feed(bytes(data)))
        return self._ready.pop(0)


class _WebSocketConnection:
    kind: Literal["stdio", "websocket"] = "websocket"

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        remote = ws.remote
        self.name = f"websocket {getattr(remote, 'address', remote)}:{getattr(remote, 'port', '')}"

    async def send(self, text: str) -> None:
        await self._ws.send_message(text)

    async def receive(self) -> str | bytes | MessageError | None:
        try:
            return await self._ws.get_message()
        except ConnectionClosed:
            return None


def parse_listen(listen: str) -> tuple[Literal["stdio", "ws"], str, int]:
    """``stdio`` or ``ws://HOST:PORT`` → (kind, host, port)."""
    if listen == "stdio":
        return ("stdio", "", 0)
    parts = urlsplit(listen)
    if parts.scheme != "ws" or not parts.hostname:
        raise InvalidRequestError(f"--listen takes stdio or ws://HOST:PORT, not {listen!r}")
    try:
        port = parts.port if parts.port is not None else 0
    except ValueError:
        raise InvalidRequestError(f"bad port in {listen!r}") from None
    return ("ws", parts.hostname, port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve_exec_server(
    backend: ExecBackend | None = None,
    *,
    listen: str = "ws://127.0.0.1:0",
    token: str | None = None,
    retain_closed: float = 80.0,
    detach_timeout: float = 80.0,
    announce: Any = None,
    allowed_origins: frozenset[str] = frozenset(),
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an exec-server until cancelled (stdio: until stdin reaches EOF).

    ``task_status.started()`` gets the bound URL (``ws://127.0.0.1:PORT``) or
    ``"stdio"``; ``announce(url)``, if given, is called with it too. A websocket
    listener on a non-loopback address needs ``token``; clients then send
    ``Authorization: Bearer <token>``. Handshakes that carry an ``Origin`` header
    (browsers always send one) are refused unless it is in ``allowed_origins``.
    """
    kind, host, port = parse_listen(listen)
    if kind == "ws" and not _is_loopback(host) and not token:
        raise InvalidRequestError(
            f"refusing to listen on {host} without a token: the exec-server runs "
            "arbitrary commands (pass --token, or listen on 127.0.0.1)"
        )
    if backend is None:
        # codex's process/terminate kills at once (SIGKILL, exit 137): match it.
        backend = LocalPtyBackend(kill_grace=0)
    async with ExecServer(
        backend, retain_closed=retain_closed, detach_timeout=detach_timeout
    ) as server:
        if kind == "stdio":
            receive = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            send = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
            task_status.started("stdio")
            if announce is not None:
                announce("stdio")
            async with receive, send:
                await server.serve_connection(_StdioConnection(receive, send))
            return

        async def handler(request: WebSocketRequest) -> None:
            headers = dict(request.headers)
            origin = headers.get(b"origin")
            if origin is not None and origin.decode(errors="replace") not in allowed_origins:
                # A browser page: it could otherwise drive a loopback server without a
                # token (cross-site WebSocket hijacking). Real clients send no Origin.
                await request.reject(403, body=b"cross-origin websocket refused\n")
                return
            if token is not None:
                given = headers.get(b"authorization", b"")
                if not hmac.compare_digest(given, b"Bearer " + token.encode()):
                    await request.reject(401, body=b"missing or wrong token\n")
                    return
            ws = await request.accept()
            await server.serve_connection(_WebSocketConnection(ws))

        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(
                lambda task_status=trio.TASK_STATUS_IGNORED: serve_websocket(
                    handler, host, port, ssl_context=None,
                    max_message_size=MAX_MESSAGE_BYTES, task_status=task_status,
                )
            )  # fmt: skip
            bound_host = host if ":" not in host else f"[{host}]"
            url = f"ws://{bound_host}:{ws_server.port}"
            task_status.started(url)
            if announce is not None:
                announce(url)
