"""Run an ExecServer on stdio, on a TCP websocket (optionally TLS), or on a Unix socket.

The library function keeps its backward-compatible defaults: loopback without a token
is allowed (any local user can then connect: pass ``token`` or ``token_sha256``, or
listen on a 0600 ``unix://`` socket), and a non-loopback address needs a token. The
secure defaults (a generated token, TLS off loopback) live in ``unified-exec serve``.

Shutdown, when ``stop`` is set: stop accepting, terminate every process (the
``ExecServer`` block ends), let the connections flush the final ``exited``/``closed``
notifications until they fall quiet (at most ``_FLUSH_MAX`` s), close them with 1001,
and return. Cancellation from outside still works, without the flush.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import sys
from collections import deque
from typing import Any, Literal

import trio

from .._errors import InvalidRequestError
from .._protocol._jsonrpc import MessageError, NdjsonDecoder
from .._protocol._limits import DEFAULT_LIMITS, Limits
from .._validate import check_duration
from ..backends import LocalPtyBackend
from ..backends._base import ExecBackend
from ..backends._fdpipe import FdReader, FdWriter
from ._auth import TokenAuth
from ._listen import is_loopback
from ._listen import open_listeners as _open_listeners
from ._listen import parse_listen as _parse_listen
from ._server import ExecServer
from ._websocket import WsPolicy, WsServerConnection, handle_stream

__all__ = ["MAX_MESSAGE_BYTES", "parse_listen", "serve_exec_server"]

log = logging.getLogger("unified_exec.server")

MAX_MESSAGE_BYTES = DEFAULT_LIMITS.max_message_bytes  # kept for importers; see Limits

_FLUSH_QUIET = 0.05  # a connection that sent nothing for this long has flushed
_FLUSH_MAX = 1.0


class _StdioConnection:
    """Newline-delimited JSON over a pair of streams, frames handed out in arrival order.

    One read can carry many frames. Each ``receive()`` hands out one, oldest first
    (a deque: O(1) at the head), and is a checkpoint even when the frame was already
    buffered, so the work a frame started gets to run before the next frame is
    handed out, and other tasks are never starved by a burst (review defect 2).

    With ``on_eof``, stdin's EOF sets that event instead of ending the connection:
    the output side stays open while the server terminates the processes.
    """

    kind: Literal["stdio", "websocket"] = "stdio"
    name = "stdio"
    send_checkpoints = True  # a stream's send_all is a schedule point; FdWriter's when full

    def __init__(
        self,
        receive: trio.abc.ReceiveStream,
        send: trio.abc.SendStream,
        max_message_bytes: int = DEFAULT_LIMITS.max_message_bytes,
        on_eof: trio.Event | None = None,
    ) -> None:
        self._receive = receive
        self._on_eof = on_eof
        self._send = send
        self._decoder = NdjsonDecoder(max_message_bytes)
        self._ready: deque[bytes | MessageError] = deque()
        self.last_sent = trio.current_time()
        # Our pipe writer takes the frame and its newline as two parts (no copy).
        self._send_parts = send.send_parts if isinstance(send, FdWriter) else None

    async def send(self, text: str) -> None:
        await self.send_bytes(text.encode())

    async def send_bytes(self, data: bytes) -> None:
        if self._send_parts is not None:
            await self._send_parts(data, b"\n")
        else:
            await self._send.send_all(data + b"\n")
        self.last_sent = trio.current_time()

    async def receive(self) -> str | bytes | MessageError | None:
        if self._ready:
            await trio.lowlevel.checkpoint()
            return self._ready.popleft()
        while not self._ready:
            data = await self._receive.receive_some(65536)
            if not data:
                if self._on_eof is not None:
                    # The owner shuts the server down first and only then drops this
                    # connection, so the children's last notifications still go out.
                    self._on_eof.set()
                    await trio.sleep_forever()
                return None
            self._ready.extend(self._decoder.feed(bytes(data)))
        return self._ready.popleft()


def parse_listen(listen: str) -> tuple[Literal["stdio", "ws", "unix"], str, int]:
    """``stdio``, ``ws://HOST:PORT`` or ``unix:///PATH`` → (kind, host or path, port)."""
    spec = _parse_listen(listen)
    return (spec.kind, spec.host, spec.port)


def _auth(token: str | None, token_sha256: str | None) -> TokenAuth | None:
    if token is not None and token_sha256 is not None:
        raise InvalidRequestError("pass token or token_sha256, not both")
    if token is not None:
        return TokenAuth.from_token(token)
    if token_sha256 is not None:
        return TokenAuth.from_sha256(token_sha256)
    return None


async def serve_exec_server(
    backend: ExecBackend | None = None,
    *,
    listen: str = "ws://127.0.0.1:0",
    token: str | None = None,
    retain_closed: float = 80.0,
    detach_timeout: float = 80.0,
    announce: Any = None,
    allowed_origins: frozenset[str] = frozenset(),
    token_sha256: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ping_interval: float | None = 15.0,
    ping_timeout: float = 30.0,
    handshake_timeout: float = 10.0,
    limits: Limits | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an exec-server until cancelled, until ``stop`` is set, or (stdio) stdin EOF.

    ``task_status.started()`` gets the announced URL (``ws://127.0.0.1:PORT``,
    ``wss://...`` with ``ssl_context``, ``unix:///PATH``) or ``"stdio"``;
    ``announce(url)``, if given, is called with it too.

    Websocket clients authenticate with ``Authorization: Bearer <token>``, checked on
    the upgrade before any JSON-RPC is read (401 if missing or wrong); configure the
    token itself (``token``) or only its SHA-256 in hex (``token_sha256``). Without
    either, loopback listeners accept anyone who can connect (the historic default;
    ``unified-exec serve`` generates a token instead), and other addresses are
    refused. ``unix:///PATH`` creates a 0600 socket. Upgrades that carry an ``Origin``
    header (browsers always send one) get 403 unless it is in ``allowed_origins``.
    ``GET /readyz`` answers 200. A connection silent for ``ping_timeout`` s after a
    ping (sent every ``ping_interval`` s; None: never) is detached, so its session
    can be resumed.
    """
    spec = _parse_listen(listen)
    auth = _auth(token, token_sha256)
    check_duration("ping_timeout", ping_timeout)
    check_duration("handshake_timeout", handshake_timeout)
    if check_duration("ping_interval", ping_interval, allow_none=True) == 0:
        raise InvalidRequestError("ping_interval must be > 0 seconds (or None for no pings)")
    limits = limits if limits is not None else DEFAULT_LIMITS
    if spec.kind == "ws" and not is_loopback(spec.host) and auth is None:
        raise InvalidRequestError(
            f"refusing to listen on {spec.host} without a token: the exec-server runs "
            "arbitrary commands (pass --ws-auth capability-token --ws-token-file FILE, "
            "or listen on 127.0.0.1)"
        )
    if backend is None:
        # codex's process/terminate kills at once (SIGKILL, exit 137): match it.
        backend = LocalPtyBackend(kill_grace=0)
    if spec.kind == "stdio":
        await _serve_stdio(
            backend, retain_closed=retain_closed, detach_timeout=detach_timeout,
            limits=limits, stop=stop, announce=announce, task_status=task_status,
        )  # fmt: skip
        return
    policy = WsPolicy(
        auth=auth,
        allowed_origins=allowed_origins,
        max_message_bytes=limits.max_message_bytes,
        handshake_timeout=handshake_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
    bound = await _open_listeners(spec, ssl_context)
    live: set[WsServerConnection] = set()
    try:
        async with trio.open_nursery() as connections:
            async with ExecServer(
                backend, retain_closed=retain_closed, detach_timeout=detach_timeout, limits=limits
            ) as server:
                accepting = True

                async def serve(conn: WsServerConnection) -> None:
                    if not accepting:
                        return
                    live.add(conn)
                    try:
                        await server.serve_connection(conn)
                    finally:
                        live.discard(conn)

                async def handler(stream: trio.abc.Stream) -> None:
                    await handle_stream(stream, policy, serve)

                async with trio.open_nursery() as listening:
                    await listening.start(
                        functools.partial(
                            trio.serve_listeners, handler, bound.listeners,
                            handler_nursery=connections,
                        )
                    )  # fmt: skip
                    task_status.started(bound.url)
                    if announce is not None:
                        announce(bound.url)
                    if stop is None:
                        await trio.sleep_forever()
                    await stop.wait()
                    accepting = False
                    listening.cancel_scope.cancel()
            # Every process has been terminated; let their last notifications out.
            await _flush(live)
            connections.cancel_scope.cancel()
    finally:
        if bound.unix_path is not None:
            try:
                os.unlink(bound.unix_path)
            except OSError:
                pass


async def _flush(conns: set[Any]) -> None:
    """Wait until every connection has sent nothing for a moment (or _FLUSH_MAX s)."""
    with trio.move_on_after(_FLUSH_MAX):
        while conns:
            now = trio.current_time()
            if all(now - c.last_sent >= _FLUSH_QUIET for c in conns):
                break
            await trio.sleep(_FLUSH_QUIET / 2)
    async with trio.open_nursery() as nursery:
        for conn in list(conns):
            if isinstance(conn, WsServerConnection):
                nursery.start_soon(conn.close, 1001, "exec-server shutting down", 0.5)


async def _serve_stdio(
    backend: ExecBackend,
    *,
    retain_closed: float,
    detach_timeout: float,
    limits: Limits,
    stop: trio.Event | None,
    announce: Any,
    task_status: trio.TaskStatus[str],
) -> None:
    receive = FdReader(os.dup(sys.stdin.fileno()))
    send = FdWriter(os.dup(sys.stdout.fileno()))
    async with receive, send:
        ended = trio.Event()
        conn = _StdioConnection(receive, send, limits.max_message_bytes, on_eof=ended)
        async with trio.open_nursery() as outer:
            async with ExecServer(
                backend, retain_closed=retain_closed, detach_timeout=detach_timeout, limits=limits
            ) as server:

                async def run() -> None:
                    try:
                        await server.serve_connection(conn)
                    finally:
                        ended.set()

                # The connection runs outside the ExecServer block, so it can still
                # send the final notifications while the server terminates.
                outer.start_soon(run)
                task_status.started("stdio")
                if announce is not None:
                    announce("stdio")
                async with trio.open_nursery() as either:
                    for event in (ended, stop):
                        if event is not None:
                            either.start_soon(_cancel_on, event, either.cancel_scope)
            await _flush({conn})
            outer.cancel_scope.cancel()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
