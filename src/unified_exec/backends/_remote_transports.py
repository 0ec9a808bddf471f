"""The two links a RemoteExecBackend speaks over: a websocket, or a child's stdin/stdout.

Both are message-framed (``send(text)`` / ``receive() -> frame | None``). The websocket
one is opened here from a plain TCP (or TLS) stream we own, upgraded with wsproto and
then driven by ``WsChannel`` from the reading task itself (no reader task: two
scheduler passes less per message); its socket options and its abrupt close are ours
(review observation 11), and every way the opening can fail comes out as one of our
typed errors (defect 25).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError as WsProtocolError

from .._errors import InvalidRequestError, TransportLostError
from .._groups import unwrap_single
from .._protocol import _jsonrpc as rpc
from ._fdpipe import FdReader, FdWriter
from ._wschannel import WsChannel

__all__ = [
    "HandshakeRefused",
    "StdioTransport",
    "WsTarget",
    "WsTransport",
    "open_websocket",
    "parse_ws_url",
]

log = logging.getLogger("unified_exec.remote")

#: Bytes asked of the socket per read. 4 KiB reads made reading the client's
#: bottleneck on output floods (py-spy: 58% of a busy client); 1 MiB reads took
#: 256 MiB over ws from 48-69 to 172-219 MiB/s on this 2-core machine.
_RECEIVE_BYTES = 1 << 20
#: A stdio read asks for this much while frames come in small bursts: ``os.read`` of
#: 1 MiB costs ~17 us more than of 64 KiB here (the buffer is mmapped and given back
#: on every read), as much as a scheduler pass, for a 200-byte answer.
_SMALL_READ = 1 << 16
_HANDSHAKE_READ = 16 * 1024
_REJECT_BODY_MAX = 4096  # of a refusal's body, kept for the error text
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_STDERR_LINES = 20  # last lines of the server's stderr kept for a loss message
_STDERR_LINE_MAX = 4096  # ... each at most this long (a progress bar never ends a line)


class HandshakeRefused(TransportLostError):
    """The server answered the upgrade with an HTTP error (401: wrong or missing token,
    403: an Origin header): asking again will get the same answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class WsTarget:
    """A checked ``ws://`` / ``wss://`` URL and the headers to send."""

    url: str
    host: str
    port: int
    resource: str
    tls: bool
    headers: list[tuple[bytes, bytes]] | None


def parse_ws_url(url: str, token: str | None) -> WsTarget:
    """Check the URL and token now, so that a typo is an InvalidRequestError, not a
    ValueError from urllib or an h11 error from the handshake (defect 25)."""
    if not isinstance(url, str):
        raise InvalidRequestError(f"expected a ws:// URL, not {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequestError(f"bad exec-server URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InvalidRequestError(f"expected a ws:// URL, not {url!r}")
    tls = parts.scheme == "wss"
    if port is None:
        port = 443 if tls else 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    headers = None
    if token is not None:
        if not isinstance(token, str) or not token:
            raise InvalidRequestError("token must be a non-empty string")
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
            # A token read from a file often ends in a newline; h11 would refuse it
            # with its own exception. Say what is wrong without echoing the secret.
            raise InvalidRequestError(
                "token must be printable ASCII without spaces or line breaks "
                "(strip the newline of a token read from a file)"
            )
        headers = [(b"Authorization", b"Bearer " + token.encode("ascii"))]
    return WsTarget(url, parts.hostname, port, resource, tls, headers)


class WsTransport:
    """One websocket connection; ``abort()`` drops it at once (no closing handshake)."""

    def __init__(self, channel: WsChannel, stream: trio.SocketStream) -> None:
        self._channel = channel
        self._stream = stream
        if _TCP_QUICKACK is not None:
            channel.after_read = self._quickack

    def _quickack(self) -> None:
        # codex's websocket server leaves Nagle on; with our delayed ACKs every
        # exchange of small frames would stall ~40 ms. Acking at once after each
        # read avoids that (perf-baselines.md, finding 2).
        option = _TCP_QUICKACK
        if option is None:
            return
        try:
            self._stream.setsockopt(socket.IPPROTO_TCP, option, 1)
        except OSError:
            self._channel.after_read = None

    async def send(self, text: str) -> None:
        """Raises ``trio.BrokenResourceError`` once the peer closed, as trio's streams
        do, so the rpc layer tells a lost link by type."""
        await self._channel.send(text)

    async def receive(self) -> str | bytes | None:
        return await self._channel.receive()

    async def ping(self) -> None:
        """Send a websocket ping and wait for its pong (BrokenResourceError if gone)."""
        await self._channel.ping()

    async def abort(self) -> None:
        """Close the TCP connection now: used when the peer stopped answering."""
        await self._stream.aclose()

    async def aclose(self) -> None:
        await self._channel.aclose(1000, "", 2.0)


def _host_header(target: WsTarget) -> str:
    if ":" in target.host:
        return f"[{target.host}]:{target.port}"
    return target.host if target.port in (80, 443) else f"{target.host}:{target.port}"


async def _connect(target: WsTarget) -> tuple[trio.SocketStream, trio.abc.Stream]:
    tcp = await trio.open_tcp_stream(target.host, target.port)
    try:
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not target.tls:
            return tcp, tcp
        tls = trio.SSLStream(
            tcp, ssl.create_default_context(), server_hostname=target.host,
            https_compatible=True,
        )  # fmt: skip
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tcp, tls


async def _upgrade(target: WsTarget, stream: trio.abc.Stream) -> Connection:
    """The client's opening handshake; the open connection, or why not (typed).

    A peer that hangs up mid-handshake is a TransportLostError at once (with
    trio-websocket it waited out the whole connect_timeout).
    """
    ws = WSConnection(ConnectionType.CLIENT)
    request = Request(
        host=_host_header(target), target=target.resource, extra_headers=target.headers or []
    )
    await stream.send_all(ws.send(request))
    refused: RejectConnection | None = None
    body = bytearray()
    while True:
        data = await stream.receive_some(_HANDSHAKE_READ)
        if not data:
            if refused is not None:  # a refusal's body may run until the hang-up
                raise _refusal(target, refused, bytes(body))
            raise TransportLostError(
                f"cannot connect to exec-server {target.url}: the server closed the "
                "connection during the websocket handshake"
            )
        try:
            ws.receive_data(bytes(data))
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    assert ws.connection is not None
                    return ws.connection
                if isinstance(event, RejectConnection):
                    refused = event
                    if not event.has_body:
                        raise _refusal(target, event, b"")
                elif isinstance(event, RejectData) and refused is not None:
                    body += event.data[: _REJECT_BODY_MAX - len(body)]
                    if event.body_finished:
                        raise _refusal(target, refused, bytes(body))
        except WsProtocolError as exc:
            raise TransportLostError(
                f"cannot connect to exec-server {target.url}: bad handshake answer ({exc})"
            ) from None


def _refusal(target: WsTarget, event: RejectConnection, body: bytes) -> HandshakeRefused:
    text = body.decode(errors="replace").strip()[:200]
    return HandshakeRefused(
        f"exec-server {target.url} refused the websocket: HTTP {event.status_code}"
        + (f" ({text})" if text else ""),
        event.status_code,
    )


@asynccontextmanager
async def open_websocket(
    target: WsTarget,
    *,
    max_message_size: int,
    connect_timeout: float,
    disconnect_timeout: float = 2.0,
) -> AsyncIterator[WsTransport]:
    """Connect and upgrade; TransportLostError if that fails (refused, rejected, timeout)."""
    tcp: trio.SocketStream | None = None
    step = "connect"
    try:
        with trio.fail_after(connect_timeout):
            tcp, stream = await _connect(target)
            step = "handshake"
            conn = await _upgrade(target, stream)
    except trio.TooSlowError:
        if tcp is not None:
            await trio.aclose_forcefully(tcp)
        what = "handshake timed out" if step == "handshake" else "connect timed out"
        raise TransportLostError(f"cannot connect to exec-server {target.url}: {what}") from None
    except TransportLostError:
        if tcp is not None:
            await trio.aclose_forcefully(tcp)
        raise
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
        if tcp is not None:
            await trio.aclose_forcefully(tcp)
        raise TransportLostError(f"cannot connect to exec-server {target.url}: {exc!r}") from exc
    # A receive stays a checkpoint, as trio's streams are: RpcClient counts on that
    # to hand frames out without passes of its own. A send the kernel takes at once
    # is written without a pass (eager_send), as the stdio transport's is: every
    # request then waits for its answer, which is its pass. Reads start at 64 KiB
    # and grow to 1 MiB only while frames come in floods (a 1 MiB read of a 200-byte
    # answer costs an mmap and its unmapping, ~17 us here).
    channel = WsChannel(
        stream,
        conn,
        max_message_bytes=max_message_size,
        receive_bytes=_RECEIVE_BYTES,
        small_receive_bytes=_SMALL_READ,
        eager_send=True,
    )
    try:
        # As before (a nursery of trio-websocket's was here): what the caller's block
        # raises alone comes out bare, not in a group; Link catches RpcError so.
        with unwrap_single():
            yield WsTransport(channel, tcp)
    finally:
        with trio.CancelScope(shield=True):
            await channel.aclose(1000, "", disconnect_timeout)
            await tcp.aclose()


def _take_fd(stream: trio.abc.AsyncResource | None) -> int:
    """A non-inheritable copy of a trio pipe stream's fd; the stream itself is closed.

    Closed first, then made ours: trio's close puts the pipe back to blocking (its
    original mode, shared by the copy), and our ``_Fd`` sets it non-blocking again.
    """
    if not isinstance(stream, trio.lowlevel.FdStream):
        raise TypeError(f"expected a pipe of the exec-server child, not {stream!r}")
    fd = os.dup(stream.fileno())
    stream.close()
    return fd


class StdioTransport:
    """An exec-server child speaking ndjson on its stdin/stdout.

    The pipes are our ``FdReader``/``FdWriter`` (grown to 1 MiB where allowed): a read
    is tried before any wait and a write yields only while the pipe is full, so a
    request costs no scheduler pass on the way out and one on the way in (trio's
    streams took one before each syscall and another to wait); a frame and its newline
    go in one ``writev``, and a read takes up to 1 MiB while a flood lasts.
    """

    def __init__(self, proc: trio.Process, max_message_bytes: int) -> None:
        self._proc = proc
        self._writer = FdWriter(_take_fd(proc.stdin))
        self._reader = FdReader(_take_fd(proc.stdout))
        self._decoder = rpc.NdjsonDecoder(max_message_bytes)
        self._ready: deque[bytes] = deque()
        self._read_size = _SMALL_READ
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_LINES)

    async def send(self, text: str) -> None:
        """A cancel point; it waits (and so can time out) only while the pipe is full.
        BrokenResourceError once the server is gone, as trio's streams raise."""
        await self._writer.send_parts(text.encode(), b"\n")

    async def receive(self) -> str | bytes | None:
        while not self._ready:
            data = await self._reader.receive_some(self._read_size)
            # A flood (a read half as big as the small size) is read 1 MiB at a time.
            self._read_size = _RECEIVE_BYTES if len(data) > _SMALL_READ // 2 else _SMALL_READ
            if not data:
                # Say why, if the server died: its exit code and last stderr lines.
                with trio.move_on_after(1):
                    await self._proc.wait()
                if self._proc.returncode not in (None, 0):
                    tail = " | ".join(self.stderr_tail) or "no stderr"
                    raise TransportLostError(
                        f"exec-server exited with code {self._proc.returncode}: {tail}"
                    )
                return None
            for item in self._decoder.feed(data):
                if isinstance(item, rpc.MessageError):
                    log.warning("exec-server stdout: %s", item)
                else:
                    self._ready.append(item)
        return self._ready.popleft()

    async def drain_stderr(self) -> None:
        """Keep the last lines of the server's stderr, each cut to a bounded length.

        An unfinished line is held only up to ``_STDERR_LINE_MAX`` bytes (its tail),
        and each read is scanned once, so a progress bar or a binary dump without a
        newline costs neither memory nor quadratic time (defect 19).
        """
        assert self._proc.stderr is not None
        partial = bytearray()
        while True:
            data = await self._proc.stderr.receive_some(65536)
            if not data:
                if partial:
                    self._keep(bytes(partial))
                return
            start = 0
            while (nl := data.find(b"\n", start)) >= 0:
                partial += data[start:nl]
                self._keep(bytes(partial))
                partial.clear()
                start = nl + 1
            partial += data[start:]
            if len(partial) > _STDERR_LINE_MAX:
                del partial[: len(partial) - _STDERR_LINE_MAX]

    def _keep(self, line: bytes) -> None:
        text = line[-_STDERR_LINE_MAX:].decode(errors="replace")
        self.stderr_tail.append(text)
        log.debug("exec-server stderr: %s", text)

    async def aclose(self) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """EOF on the server's stdin (it then exits and kills its children), then reap."""
        self._writer.close()
        with trio.move_on_after(5):
            await self._proc.wait()
        try:
            if self._proc.returncode is None:
                try:
                    os.killpg(self._proc.pid, 9)
                except (ProcessLookupError, PermissionError):
                    self._proc.kill()
                await self._proc.wait()
        finally:
            # Their readers are done (the link and drain_stderr end before the shutdown).
            self._reader.close()
            if isinstance(self._proc.stderr, trio.lowlevel.FdStream):
                self._proc.stderr.close()
