"""One open websocket over a trio stream, framed by wsproto and driven by its callers.

Both ends of our websocket links (the client's ``WsTransport`` and the server's
``WsServerConnection``) stand on this. There is no background reader task: the task
that calls ``receive()`` reads the socket, feeds wsproto and takes the next message,
and answers pings and closes on the way. trio-websocket's reader task handed every
message through a channel to the caller, two more scheduler passes per message at
each end (~20 µs each here; a remote round trip is two messages each way).

What that asks of callers: someone keeps calling ``receive()`` while pongs and closes
are awaited (both our ends always do; the server stops only under backpressure, as
trio-websocket's one-message queue did), and only one task receives at a time.
Sends may come from any task: whole frames go out under one lock, and a frame whose
sending failed part-way marks the link broken, so nothing is ever sent after a torn
frame. With ``eager_send`` (the server) a frame is written at once when the kernel
takes it, without a scheduler pass (~20 us); it waits, and so yields, when the socket
is full.

Our frames are built here (a header, and a client's mask); wsproto parses what comes
in and keeps the close handshake's state.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable
from typing import cast

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

__all__ = ["WsChannel", "WsClosed"]

_STREAM_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_OVER = (ConnectionState.CLOSED, ConnectionState.REMOTE_CLOSING)


#: Up to this size a client frame is masked here (one big-int XOR: ~2 us for a small
#: frame, against ~9 us through wsproto); past it wsproto's table masking is faster.
_OWN_MASK_MAX = 16 * 1024


def _text_frame(data: bytes, *, masked: bool) -> bytes:
    """One final text frame of ``data`` (RFC 6455 5.2); a client's is masked."""
    n = len(data)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((0x81, bit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x81, bit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, bit | 127, n)
    if not masked:
        return head + data
    key = os.urandom(4)
    if not n:
        return head + key
    pad = key * ((n + 3) // 4)
    mask = int.from_bytes(pad[:n], "little")
    return head + key + (int.from_bytes(data, "little") ^ mask).to_bytes(n, "little")


_FRAGMENT_COST = 64  # charged per continuation fragment against max_message_bytes


class WsClosed(trio.BrokenResourceError):
    """The websocket is closed (or broken): nothing more can be sent on it."""


class WsChannel:
    """Messages in and out of one websocket whose opening handshake is done."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        *,
        max_message_bytes: int,
        receive_bytes: int,
        small_receive_bytes: int | None = None,
        eager_send: bool = False,
        checkpoint_buffered: bool = True,
    ) -> None:
        self._stream = stream
        # eager_send: on plain TCP a frame is written at once, with no scheduler pass
        # (~20 us) when the kernel takes it all; for callers that yield elsewhere.
        self._socket = (
            stream.socket if eager_send and isinstance(stream, trio.SocketStream) else None
        )
        # checkpoint_buffered=False: a message already read is handed out without a
        # checkpoint (RpcClient checkpoints after every message itself).
        self._checkpoint_buffered = checkpoint_buffered
        self._ws = conn
        self._server = not conn.client
        self._max = max_message_bytes
        # Adaptive when small_receive_bytes is given: reads ask for that much until
        # one comes back more than half full, then for receive_bytes until one does
        # not (a big buffer is dear to allocate for a small answer).
        self._big_read = receive_bytes
        self._small_read = min(small_receive_bytes or receive_bytes, receive_bytes)
        self._receive_bytes = self._small_read
        self._send_lock = trio.Lock()
        self._ready: deque[str | bytes] = deque()
        self._parts: list[str | bytes] = []
        self._size = 0
        self._pings: dict[bytes, trio.Event] = {}
        self._receiving = False
        self._broken = False  # a send failed part-way: the byte stream is torn
        self._closed = trio.Event()
        #: (code, reason) once a close frame went either way or the stream ended.
        self.close_reason: tuple[int, str] | None = None
        #: trio.current_time() of the latest bytes from the peer.
        self.last_heard = trio.current_time()
        #: Called after every read that returned bytes (the client acks at once then).
        self.after_read: Callable[[], None] | None = None
        # What the handshake's read carried past its end: frames, maybe whole ones.
        self._replies = self._take_events()

    @property
    def is_open(self) -> bool:
        return self.close_reason is None and not self._broken

    # -- receiving -------------------------------------------------------------------

    async def receive(self) -> str | bytes | None:
        """The next whole message; None once the websocket is closed (or the stream
        ended). Always a checkpoint."""
        if self._ready:
            if self._checkpoint_buffered:
                await trio.lowlevel.checkpoint()
            return self._ready.popleft()
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this websocket")
        self._receiving = True
        try:
            while not self._ready:
                if self.close_reason is not None:
                    await trio.lowlevel.checkpoint()
                    return None
                await self._read_once()
        finally:
            self._receiving = False
        return self._ready.popleft()

    async def _read_once(self) -> None:
        try:
            data = await self._stream.receive_some(self._receive_bytes)
        except _STREAM_GONE:
            data = b""
        if data:
            self._receive_bytes = (
                self._big_read if len(data) > self._small_read // 2 else self._small_read
            )
            self.last_heard = trio.current_time()
            self._ws.receive_data(data if isinstance(data, bytes) else bytes(data))
            if self.after_read is not None:
                self.after_read()
        else:
            self._ws.receive_data(None)  # wsproto: a CloseConnection(1006), CLOSED
        replies = self._replies + self._take_events()
        self._replies = b""
        if replies and not self._broken:
            try:
                await self._send_frame(replies)
            except WsClosed:
                pass
        if self._ws.state in _OVER:
            self._finish()

    def _take_events(self) -> bytes:
        """Hand wsproto's events out; the bytes to answer with (pongs, a close)."""
        replies = b""
        for event in self._ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                if self.close_reason is not None:
                    continue
                data = event.data
                # Counted as the bytes a message costs us: UTF-8 for text, and an
                # overhead per fragment, so that a flood of empty continuation
                # frames (6 bytes on the wire each) reaches the limit too.
                size = (
                    len(data)
                    if isinstance(data, bytes | bytearray) or data.isascii()
                    else len(data.encode())
                )
                self._size += size + (_FRAGMENT_COST if self._parts else 0)
                if self._size > self._max:
                    self._parts.clear()
                    self._size = 0
                    replies += self._start_close(
                        CloseReason.MESSAGE_TOO_BIG,
                        f"message larger than {self._max} bytes",
                    )
                    continue
                self._parts.append(data if isinstance(data, str) else bytes(data))
                if event.message_finished:
                    parts = self._parts
                    if len(parts) == 1:
                        self._ready.append(parts[0])
                    elif isinstance(event, TextMessage):
                        self._ready.append("".join(cast("list[str]", parts)))
                    else:
                        self._ready.append(b"".join(cast("list[bytes]", parts)))
                    self._parts = []
                    self._size = 0
            elif isinstance(event, Ping):
                if self._ws.state is ConnectionState.OPEN:
                    replies += self._ws.send(event.response())
            elif isinstance(event, Pong):
                self._pong(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                if self.close_reason is None:
                    self.close_reason = (event.code, event.reason or "")
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    replies += self._ws.send(event.response())
                elif self._ws.state is ConnectionState.OPEN:
                    # wsproto's word for a frame it could not parse (1002, 1007):
                    # say so to the peer, and read no more.
                    replies += self._ws.send(CloseConnection(event.code, event.reason))
        return replies

    def _pong(self, payload: bytes) -> None:
        # A pong answers its ping and every ping sent before it.
        if payload not in self._pings:
            return
        while self._pings:
            key, event = next(iter(self._pings.items()))
            del self._pings[key]
            event.set()
            if key == payload:
                return

    def abort(self) -> None:
        """Drop the connection now (no closing handshake), from any task: its socket
        is closed, so a receive waiting on it returns None and a send raises."""
        self._broken = True
        self._finish()
        inner = self._stream
        if isinstance(inner, trio.SSLStream):
            inner = inner.transport_stream
        if isinstance(inner, trio.SocketStream):
            inner.socket.close()

    def _finish(self) -> None:
        """The websocket is over: wake pings and closers."""
        for event in self._pings.values():
            event.set()
        self._pings.clear()
        self._closed.set()

    # -- sending ---------------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send one text message; WsClosed (a trio.BrokenResourceError) once closed."""
        if not self.is_open or self._ws.state is not ConnectionState.OPEN:
            raise WsClosed(self._why())
        if self._server or len(text) <= _OWN_MASK_MAX:
            await self._send_frame(_text_frame(text.encode(), masked=not self._server))
        else:
            await self._send_frame(self._ws.send(Message(data=text)))

    async def send_utf8(self, data: bytes) -> None:
        """Send ``data`` (valid UTF-8) as one text message, without a str round trip."""
        if not self.is_open or self._ws.state is not ConnectionState.OPEN:
            raise WsClosed(self._why())
        if self._server or len(data) <= _OWN_MASK_MAX:
            await self._send_frame(_text_frame(data, masked=not self._server))
        else:
            await self._send_frame(self._ws.send(Message(data=data.decode("utf-8"))))

    async def ping(self) -> None:
        """Send a ping and wait for its pong; WsClosed if the websocket closes first."""
        payload = os.urandom(8)
        while payload in self._pings:
            payload = os.urandom(8)
        if not self.is_open or self._ws.state is not ConnectionState.OPEN:
            raise WsClosed(self._why())
        pong = self._pings[payload] = trio.Event()
        try:
            await self._send_frame(self._ws.send(Ping(payload)))
            await pong.wait()
        finally:
            self._pings.pop(payload, None)
        if self.close_reason is not None or self._broken:
            raise WsClosed(self._why())

    async def _send_frame(self, frame: bytes) -> None:
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # the stream's send_all is the checkpoint
        try:
            if self._broken:
                raise WsClosed(self._why())
            try:
                sent = self._write_now(frame) if self._socket is not None else 0
                if sent < len(frame):
                    await self._stream.send_all(memoryview(frame)[sent:] if sent else frame)
            except BaseException as exc:
                # Whatever went out of this frame (maybe part of it), the stream is
                # no longer at a frame boundary: nothing may follow it.
                self._broken = True
                self._finish()
                if isinstance(exc, _STREAM_GONE):
                    raise WsClosed(f"websocket lost: {exc!r}") from exc
                raise
        finally:
            lock.release()

    def _write_now(self, frame: bytes) -> int:
        """What of ``frame`` the kernel takes right now (no waiting, no checkpoint)."""
        assert self._socket is not None
        fd = self._socket.fileno()  # -1 once closed: never a stale, reused number
        if fd < 0:
            raise trio.ClosedResourceError("the websocket's socket is closed")
        try:
            return os.write(fd, frame)
        except BlockingIOError:
            return 0

    def _why(self) -> str:
        if self.close_reason is not None:
            code, reason = self.close_reason
            return f"websocket closed ({code}{': ' + reason if reason else ''})"
        return "websocket broken"

    # -- closing ---------------------------------------------------------------------

    def _start_close(self, code: int, reason: str) -> bytes:
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        self.close_reason = (code, reason)
        return self._ws.send(CloseConnection(code=code, reason=reason))

    async def aclose(self, code: int = 1000, reason: str = "", timeout: float = 1.0) -> None:
        """The closing handshake, bounded by ``timeout``; then the stream is closed."""
        try:
            with trio.move_on_after(timeout):
                if self.is_open:
                    frame = self._start_close(code, reason)
                    if frame:
                        try:
                            await self._send_frame(frame)
                        except WsClosed:
                            return
                if self._broken:
                    return
                # Wait for the peer's close frame (or its hang-up).
                while self._ws.state is ConnectionState.LOCAL_CLOSING:
                    if self._receiving:
                        await self._closed.wait()
                        break
                    self._receiving = True
                    try:
                        await self._read_once()
                    finally:
                        self._receiving = False
        finally:
            self._finish()
            await trio.aclose_forcefully(self._stream)
