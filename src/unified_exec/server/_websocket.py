"""One websocket connection to the exec-server, from the first byte to the last.

Two jobs, both about surviving peers:

- **An exception boundary per connection** (review defect 1). Everything a single
  peer can make fail (a hang-up mid-handshake, ``ENOTCONN`` from ``getpeername``, a
  broken TLS handshake, a malformed request or frame) ends *that* connection and is
  logged; nothing reaches the listener, so no peer can end the server. Only
  cancellation (the server shutting down) goes through.
- **Liveness** (review defect 9). A link that dies without FIN or RST never ends a
  ``receive()``. We ping every ``ping_interval`` seconds; when neither a pong nor
  a message has arrived for ``ping_timeout`` seconds, the connection counts as gone:
  ``receive()`` returns None, so ``ExecServer.serve_connection`` detaches the session
  and it becomes resumable, exactly as if the peer had hung up. A peer that stops
  reading altogether blocks our sends and so our pings, and is detached the same way.

The framing is ``WsChannel`` (wsproto, driven by the receiving task: no reader task
and no channel between it and ExecServer's receive loop).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Literal

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError as WsProtocolError

from .._protocol._jsonrpc import MessageError
from ..backends._wschannel import WsChannel
from ._auth import TokenAuth
from ._http import BadRequest, HttpRequest, read_request, respond

__all__ = ["WsPolicy", "WsServerConnection", "handle_stream"]

log = logging.getLogger("unified_exec.server")

# Bytes asked of the socket per read: a 4 MiB process/write in 4 KiB reads was a
# thousand reads (and wsproto passes) before its frame was whole.
_RECEIVE_BYTES = 64 * 1024


@attrs.frozen
class WsPolicy:
    """What every websocket connection of one server is held to."""

    auth: TokenAuth | None
    allowed_origins: frozenset[str]
    max_message_bytes: int
    handshake_timeout: float = 10.0
    ping_interval: float | None = 15.0  # None: no keepalive
    ping_timeout: float = 30.0
    close_timeout: float = 1.0


class WsServerConnection:
    """The ``Connection`` ExecServer serves, over one accepted websocket."""

    kind: Literal["stdio", "websocket"] = "websocket"

    def __init__(self, channel: WsChannel, name: str) -> None:
        self._channel = channel
        self.name = name
        # As the stdio pipes (_fdpipe.FdWriter): on plain TCP a frame the kernel takes
        # at once goes without a scheduler pass (ConnState takes none either when its
        # lock is free); a send waits, and so yields, only when the socket is full.
        # Every pusher yields per event anyway (EventStream), every handler in its work.
        self.send_checkpoints = True
        self._dead = False
        self.last_sent = trio.current_time()

    @property
    def last_heard(self) -> float:
        """When bytes last came from the peer (a pong's included)."""
        return self._channel.last_heard

    def last_activity(self) -> float:
        """When the peer last showed life (any bytes, a pong): ExecServer's Heartbeat."""
        return self.last_heard

    def give_up(self) -> None:
        """Count the link as gone: close its socket, which wakes every receive (None)
        and send (BrokenResourceError) on it. No cancel scope per call needed."""
        self._dead = True
        self._channel.abort()

    async def send(self, text: str) -> None:
        await self.send_bytes(text.encode())

    async def send_bytes(self, data: bytes) -> None:
        """One text frame of ``data`` (UTF-8, as ConnState encoded it): no str copy."""
        await self._channel.send_utf8(data)
        self.last_sent = trio.current_time()

    async def receive(self) -> str | bytes | MessageError | None:
        if self._dead:  # nothing more is taken from a link the keepalive gave up
            await trio.lowlevel.checkpoint()
            return None
        return await self._channel.receive()

    async def keepalive(self, interval: float, timeout: float) -> None:
        """Ping on a timer; give the link up when it stays silent past ``timeout``."""
        while not self._dead:
            await trio.sleep(interval)
            with trio.move_on_after(timeout):
                try:
                    await self._channel.ping()
                except trio.BrokenResourceError:
                    return  # receive() sees it too
                continue
            if trio.current_time() - self.last_heard < timeout:
                continue  # a big message held the pong back, but the peer is talking
            log.warning(
                "exec-server %s: no pong for %.0f s, detaching its session", self.name, timeout
            )
            self.give_up()
            return

    async def close(self, code: int, reason: str, timeout: float) -> None:
        await self._channel.aclose(code, reason, timeout)


def _peer_name(stream: trio.abc.Stream) -> str:
    """``websocket HOST:PORT`` for error texts; never raises (the peer may be gone)."""
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    sock = getattr(inner, "socket", None)
    if sock is None:
        return "websocket"
    try:
        peer = sock.getpeername()
    except OSError:
        return "websocket (peer gone)"
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"websocket {host}:{peer[1]}"
    return "websocket unix"


async def _refuse_or_pass(stream: trio.abc.Stream, head: HttpRequest, policy: WsPolicy) -> bool:
    """Answer plain HTTP and refused upgrades; True if the upgrade may go ahead."""
    head_only = head.method == b"HEAD"
    if head.path == b"/readyz" and not head.is_upgrade:
        if head.method in (b"GET", b"HEAD"):
            await respond(stream, 200)
        else:
            await respond(stream, 405, extra_headers=((b"allow", b"GET,HEAD"),))
        return False
    if not head.is_upgrade:
        if head.path == b"/":
            await respond(
                stream, 400, b"Connection header did not include 'upgrade'", head_only=head_only
            )
        else:
            await respond(stream, 404, head_only=head_only)
        return False
    origin = head.header(b"origin")
    if origin is not None and origin.decode(errors="replace") not in policy.allowed_origins:
        # A browser page: it could otherwise drive a loopback server (cross-site
        # WebSocket hijacking). Real clients send no Origin. Checked before the token,
        # as codex does, so a page learns nothing about the token either.
        await respond(stream, 403, b"cross-origin websocket refused\n")
        return False
    if policy.auth is not None and not policy.auth.check(head.header(b"authorization")):
        await respond(
            stream, 401, b"missing or wrong token\n",
            extra_headers=((b"www-authenticate", b"Bearer"),),
        )  # fmt: skip
        return False
    if (
        head.method != b"GET"
        or head.header(b"sec-websocket-key") is None
        or (head.header(b"sec-websocket-version") != b"13")
    ):
        await respond(stream, 400, b"malformed websocket upgrade\n")
        return False
    return True


async def _open(stream: trio.abc.Stream, policy: WsPolicy) -> WsChannel | None:
    try:
        head = await read_request(stream)
    except BadRequest as exc:
        await respond(stream, 400, f"bad request: {exc}\n".encode())
        await _linger(stream)
        return None
    if head is None:
        return None
    if not await _refuse_or_pass(stream, head, policy):
        await _linger(stream)
        return None
    # The head passed our checks; wsproto checks it once more and writes the 101.
    # What the peer sent after the head (frames already) stays in the connection.
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(head.raw)
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
        if request is None:
            raise BadRequest("not a websocket upgrade")
        accept = ws.send(AcceptConnection())
    except (WsProtocolError, BadRequest) as exc:
        await respond(stream, 400, f"malformed websocket upgrade: {exc}\n".encode())
        await _linger(stream)
        return None
    await stream.send_all(accept)
    assert ws.connection is not None
    return WsChannel(
        stream, ws.connection, max_message_bytes=policy.max_message_bytes,
        receive_bytes=_RECEIVE_BYTES, eager_send=True,
    )  # fmt: skip


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close and drain briefly, so an unread request body cannot turn our close
    into an RST that destroys the answer before the peer has read it."""
    if isinstance(stream, trio.SocketStream):
        await stream.send_eof()
    with trio.move_on_after(0.5):
        received = 0
        while received < 65536 and (data := await stream.receive_some(16384)):
            received += len(data)


Serve = Callable[[WsServerConnection], Awaitable[None]]


async def handle_stream(stream: trio.abc.Stream, policy: WsPolicy, serve: Serve) -> None:
    """Serve one accepted stream; whatever the peer does, this returns normally."""
    name = "websocket"
    try:
        name = _peer_name(stream)
        await _handle(stream, policy, serve, name)
    except Exception as exc:  # the per-connection boundary: one peer never ends the server
        _log_failure(name, exc)
    except BaseExceptionGroup as group:
        # Cancelled (the server is stopping) mixed with a peer's failure: log the
        # failure, let the cancellation through.
        failures, rest = group.split(Exception)
        if failures is not None:
            _log_failure(name, failures)
        if rest is not None:
            raise rest from None
    finally:
        await trio.aclose_forcefully(stream)


def _log_failure(name: str, exc: BaseException) -> None:
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(exc)
    expected = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError)
    if all(isinstance(e, expected) for e in leaves):
        log.info("exec-server %s went away: %s", name, "; ".join(map(repr, leaves)))
    else:
        log.warning("closing exec-server %s after an error", name, exc_info=exc)


async def _handle(stream: trio.abc.Stream, policy: WsPolicy, serve: Serve, name: str) -> None:
    channel = None
    with trio.move_on_after(policy.handshake_timeout):
        channel = await _open(stream, policy)
    if channel is None:
        return
    conn = WsServerConnection(channel, name)
    async with trio.open_nursery() as inner:
        if policy.ping_interval is not None:
            inner.start_soon(conn.keepalive, policy.ping_interval, policy.ping_timeout)
        await serve(conn)
        inner.cancel_scope.cancel()
    if not conn._dead:
        await conn.close(1000, "", policy.close_timeout)
