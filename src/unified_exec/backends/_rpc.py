"""The client end of one exec-server link: requests, responses, and routing
notifications to per-process handlers. Transport-agnostic (websocket or stdio).

One RpcClient lives as long as one link; reconnecting makes a new one (see
``_remote_link``). Frames are checked where they are built: one that the peer would
refuse (too big, not UTF-8) is an InvalidRequestError for that request alone, and the
link stays up (defects 8 and 13)."""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from .._errors import ExecTimeoutError, InvalidRequestError, RpcError, TransportLostError
from .._protocol import _jsonrpc as rpc
from .._protocol._limits import DEFAULT_LIMITS, Limits

__all__ = ["RpcClient", "Transport"]

log = logging.getLogger("unified_exec.remote")


class Transport(Protocol):
    async def send(self, text: str) -> None:
        """Send one frame; ``trio.BrokenResourceError`` (or ``OSError``) once the link is gone."""
        ...

    async def receive(self) -> str | bytes | None:
        """Next frame; None when the peer closed."""
        ...

    async def aclose(self) -> None: ...


@attrs.define(eq=False)
class _Pending:
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class RpcClient:
    """Matches responses to requests and hands notifications to ``on_notification``.

    When the transport breaks, every pending and later request raises
    TransportLostError at once, and ``on_lost`` is called exactly once.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        on_notification: Callable[[rpc.Notification], bool | None],
        on_lost: Callable[[str], None],
        request_timeout: float,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._transport = transport
        self._limits = limits
        self._on_notification = on_notification
        self._on_lost = on_lost
        self.request_timeout = request_timeout
        self._ids = itertools.count(1)
        self._pending: dict[rpc.RequestId, _Pending] = {}
        self._send_lock = trio.Lock()
        self.lost: str | None = None
        self.lost_event = trio.Event()
        self._run_scope: trio.CancelScope | None = None
        self._abandoned: str | None = None

    def abandon(self, reason: str) -> None:
        """Give the link up (the peer stopped answering): stop reading, fail what waits."""
        self._abandoned = reason
        if self._run_scope is not None:
            self._run_scope.cancel()
        self._lose(reason)

    async def run(self) -> None:
        """The reader loop; returns when the transport ends (or ``abandon()``)."""
        reason = "connection closed by the exec-server"
        try:
            with trio.CancelScope() as self._run_scope:
                await self._read_loop()
            if self._abandoned is not None:
                reason = self._abandoned
        except trio.Cancelled:
            reason = "connection closed by the client"
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._lose(reason)

    async def _read_loop(self) -> None:
        while True:
            frame = await self._transport.receive()
            if frame is None:
                return
            if self._dispatch(frame):
                # A reader has an event queued to take: let it run before the next
                # frame, or buffered frames would be handed out in bursts faster than
                # a keeping-up reader takes them one event at a time. (An event its
                # sink took, or a response, needs no pass: ~20 us each.)
                await trio.lowlevel.checkpoint()

    def _dispatch(self, frame: str | bytes) -> bool:
        """Handle one frame; True if a reader now has an event queued for it."""
        try:
            message = rpc.decode_frame(frame)
        except rpc.MessageError as exc:
            log.warning("unparseable message from the exec-server: %s", exc)
            return False
        if isinstance(message, rpc.Notification):
            try:
                return self._on_notification(message) is not False
            except Exception:
                log.exception("handling notification %s failed", message.method)
        elif isinstance(message, rpc.Response | rpc.ErrorResponse):
            pending = self._pending.pop(message.id, None)
            if pending is None:
                if isinstance(message, rpc.ErrorResponse):
                    log.warning("exec-server error without request: %s", message.message)
                return False
            if isinstance(message, rpc.ErrorResponse):
                pending.error = RpcError(message.code, message.message)
            else:
                pending.result = message.result
            pending.done.set()
        else:
            log.warning("exec-server sent a request (%s); ignored", message.method)
        return False

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = f"exec-server transport disconnected: {reason}"
        for pending in self._pending.values():
            pending.error = TransportLostError(self.lost)
            pending.done.set()
        self._pending.clear()
        self.lost_event.set()
        self._on_lost(self.lost)

    async def _send(self, message: rpc.Message, scope: trio.CancelScope) -> None:
        """Build the frame for ``message``, check it (InvalidRequestError if it cannot
        go), and send it in ``scope`` (see ``_send_frame``)."""
        await self._send_frame(self._frame(message), scope)

    def _frame(self, message: rpc.Message) -> str:
        if self.lost is not None:
            raise TransportLostError(self.lost)
        frame = rpc.encode(message)
        what = getattr(message, "method", "a message")
        if not frame.isascii() and "\ufffd" in frame:
            # rpc.encode turns lone surrogates into U+FFFD (right for echoed text). A
            # request of ours must not silently change: "caf\udce9" (os.fsdecode of a
            # Latin-1 name) would run another command. Refuse it, typed (defect 13).
            raw = json.dumps(rpc.to_wire(message), separators=(",", ":"), ensure_ascii=False)
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidRequestError(
                    f"{what} cannot be sent: its text is not valid UTF-8 ({exc.reason} at "
                    f"{raw[max(exc.start - 20, 0) : exc.end + 20]!r})"
                ) from None
        size = len(frame.encode("utf-8"))
        if size > self._limits.max_message_bytes:
            raise InvalidRequestError(
                f"{what} would be a {size}-byte message; the limit is "
                f"{self._limits.max_message_bytes} bytes"
            )
        return frame

    async def _send_frame(self, frame: str, scope: trio.CancelScope) -> None:
        """Send under the send lock, in ``scope``: shielded (a frame, once begun, is
        finished or the link is given up: a cancelled half-frame would corrupt all
        after it), with a deadline (a peer that stops reading must not stall every
        request forever)."""
        lock = self._send_lock
        if lock.locked():
            # Queued behind other frames: that wait is not this send's to time out
            # (each frame ahead has its own bound, and a stuck one loses the link,
            # which ends this wait too); the deadline starts once the lock is ours.
            bound = scope.deadline - trio.current_time()
            scope.deadline = math.inf
            await lock.acquire()
            scope.deadline = trio.current_time() + bound
        else:  # uncontended: no scheduler pass for the lock (the send has its own)
            await trio.lowlevel.checkpoint_if_cancelled()
            lock.acquire_nowait()
        try:
            if self.lost is not None:
                raise TransportLostError(self.lost)
            scope.shield = True  # only the scope's own deadline cancels the send now
            try:
                await self._transport.send(frame)
            except trio.Cancelled:  # that deadline: the frame may be cut off
                self._lose(f"sending timed out after {self.request_timeout:g} s")
                raise TransportLostError(self.lost) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._lose(f"send failed: {exc!r}")
                raise TransportLostError(self.lost) from exc
            finally:
                scope.shield = False
        finally:
            lock.release()

    async def notify(self, method: str, params: Any = None) -> None:
        with trio.CancelScope(deadline=trio.current_time() + self.request_timeout) as scope:
            await self._send(rpc.Notification(method=method, params=params), scope)

    async def request(self, method: str, params: Any, *, timeout: float | None = None) -> Any:
        """Send a request and wait for its answer; RpcError for an error answer."""
        limit = self.request_timeout if timeout is None else timeout
        request_id = next(self._ids)
        pending = _Pending()
        self._pending[request_id] = pending
        # One scope for the send (bounded by request_timeout) and the wait (by limit).
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.request_timeout) as scope:
                await self._send(rpc.Request(id=request_id, method=method, params=params), scope)
                sent = trio.current_time()  # the answer's time counts from here
                scope.deadline = sent + limit if math.isfinite(limit) else math.inf
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if not pending.done.is_set():
            raise ExecTimeoutError(f"exec-server did not answer {method} within {limit:g} s")
        if pending.error is not None:
            raise pending.error
        return pending.result
