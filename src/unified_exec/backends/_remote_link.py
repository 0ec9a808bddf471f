"""One exec-server session across links: keepalive, reconnect and resume.

A websocket session outlives its connection on the server (codex keeps a detached
session ~80 s). So when the link drops, or stops answering pings, ``Link`` reconnects
with backoff, sends ``initialize{resumeSessionId}`` then ``initialized``, and lets every
live process re-read what it missed. Requests that are safe to repeat (write with its
writeId, read, terminate, start with its processId, resize, closeStdin) wait for the
new link and are sent again; nothing is dropped in silence. Only when resuming fails
for good (no server listens any more, the session is gone, or the budget runs out) do
processes fail, with ``exec-server transport disconnected: ...``.

A stdio link is not resumable: the child's exit is the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from .._errors import InvalidRequestError, RemoteProtocolError, RpcError, TransportLostError
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._protocol._limits import Limits
from .._validate import check_duration
from ._remote_transports import HandshakeRefused
from ._rpc import RpcClient, Transport

__all__ = ["Link", "LinkSettings"]

log = logging.getLogger("unified_exec.remote")

_SESSION_ATTACHED = -32010  # the server has not yet noticed that the old link died


def _positive_seconds(name: str) -> Callable[[Any, Any, float], None]:
    def check(_inst: Any, _attr: Any, value: float) -> None:
        check_duration(name, value)

    return check


@attrs.frozen
class LinkSettings:
    """How a websocket link is kept alive and re-established.

    - ``ping_interval`` (5 s): a websocket ping is sent this often; 0 turns keepalive off.
    - ``ping_misses`` (3): pings in a row without a pong before the link is given up,
      so a link that died without FIN/RST is noticed within about 15-20 s.
    - ``reconnect_budget`` (30 s): how long to keep trying to resume after a drop;
      0 turns reconnecting off (a drop then fails every process at once).
    - ``backoff_initial`` / ``backoff_max`` (0.05 s / 2 s): the delay between attempts
      doubles from the first to the second.
    """

    ping_interval: float = attrs.field(default=5.0, validator=_positive_seconds("ping_interval"))
    ping_misses: int = 3
    reconnect_budget: float = attrs.field(
        default=30.0, validator=_positive_seconds("reconnect_budget")
    )
    backoff_initial: float = attrs.field(
        default=0.05, validator=_positive_seconds("backoff_initial")
    )
    backoff_max: float = attrs.field(default=2.0, validator=_positive_seconds("backoff_max"))

    def __attrs_post_init__(self) -> None:
        if isinstance(self.ping_misses, bool) or not isinstance(self.ping_misses, int):
            raise InvalidRequestError("ping_misses must be an integer")
        if self.ping_misses < 1:
            raise InvalidRequestError(f"ping_misses must be >= 1, got {self.ping_misses}")


def _refused(exc: BaseException) -> bool:
    """Was a connection refused somewhere in ``exc``'s causes (nobody listens there)?"""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return True
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return False


class Link:
    """The current RpcClient of a session, replaced by a fresh one after each resume."""

    def __init__(
        self,
        opener: Callable[[], AbstractAsyncContextManager[Transport]],
        *,
        client_name: str,
        request_timeout: float,
        limits: Limits,
        settings: LinkSettings,
        resumable: bool,
        on_notification: Callable[[rpc.Notification], bool | None],
        on_resumed: Callable[[], Awaitable[None]],
        on_lost: Callable[[str], None],
    ) -> None:
        self._opener = opener
        self._client_name = client_name
        self.request_timeout = request_timeout
        self.limits = limits
        self.settings = settings
        self._resumable = resumable and settings.reconnect_budget > 0
        self._on_notification = on_notification
        self._on_resumed = on_resumed
        self._on_lost = on_lost
        self.client: RpcClient | None = None
        self.session_id: str | None = None
        self.environment_info: dict[str, Any] = {}
        self.extensions: frozenset[str] = frozenset()
        self.resumes = 0  # completed resumes, for tests and for start()'s retry rule
        self.lost: str | None = None  # set once, when the session is lost for good
        self.ready = trio.Event()  # the first handshake finished (or failed: first_error)
        self.first_error: BaseException | None = None
        self._changed = trio.Event()
        self._scope = trio.CancelScope()
        self._done = trio.Event()

    # -- requests --------------------------------------------------------------------

    async def _current(self) -> RpcClient:
        while True:
            if self.lost is not None:
                raise TransportLostError(self.lost)
            client = self.client
            if client is not None and client.lost is None:
                return client
            await self._changed.wait()

    async def call(
        self, method: str, params: Any, *, timeout: float | None = None, retry: bool = False
    ) -> Any:
        """One request. While the link is down it waits for the resume; with ``retry``
        one that was cut off in flight is sent again on the new link (only for requests
        that are safe to repeat)."""
        wire = params if isinstance(params, dict) else m.unstructure(params)
        while True:
            client = await self._current()
            try:
                return await client.request(method, wire, timeout=timeout)
            except TransportLostError:
                if not retry or not self._resumable or self.lost is not None:
                    if self.lost is not None:
                        raise TransportLostError(self.lost) from None
                    raise

    # -- the session's life ------------------------------------------------------------

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _finish(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            self._poke()
            self._on_lost(reason)

    async def close(self) -> None:
        """Stop reconnecting and drop the link; every waiting request is told."""
        self._finish("exec-server transport disconnected: connection closed by the client")
        self._scope.cancel()
        await self._done.wait()

    async def run(self) -> None:
        """Connect, handshake, then keep the session alive until ``close()``."""
        try:
            with self._scope:
                reason = await self._first()
                if reason is not None:
                    await self._keep_resuming(reason)
        finally:
            self._finish("exec-server transport disconnected: connection closed by the client")
            self.ready.set()
            self._done.set()

    async def _first(self) -> str | None:
        try:
            async with self._opener() as transport:
                return await self._serve(transport, resume=False)
        except Exception as exc:
            if not self.ready.is_set():
                self.first_error = exc
                self.ready.set()
                return None
            return f"exec-server transport disconnected: {exc}"

    async def _keep_resuming(self, reason: str) -> None:
        while True:
            if not self._resumable:
                self._finish(reason)
                return
            log.info("%s; resuming session %s", reason, self.session_id)
            deadline = trio.current_time() + self.settings.reconnect_budget
            delay = self.settings.backoff_initial
            why = "no attempt"
            while True:
                remaining = deadline - trio.current_time()
                if remaining <= 0:
                    self._finish(
                        f"{reason} (could not resume within "
                        f"{self.settings.reconnect_budget:g} s: {why})"
                    )
                    return
                await trio.sleep(min(delay, remaining))
                delay = min(delay * 2, self.settings.backoff_max)
                next_reason: str | None = None
                try:
                    # The budget bounds connecting and the handshake (a frozen link
                    # would otherwise hold an attempt for the whole connect timeout).
                    with trio.CancelScope(deadline=deadline) as attempt:
                        async with self._opener() as transport:
                            next_reason = await self._serve(transport, resume=True, attempt=attempt)
                except RpcError as exc:
                    if exc.code == _SESSION_ATTACHED:
                        why = exc.message
                        continue
                    self._finish(f"{reason} (the exec-server refused to resume: {exc.message})")
                    return
                except RemoteProtocolError as exc:
                    self._finish(f"{reason} (could not resume: {exc})")
                    return
                except Exception as exc:  # TransportLostError, a timeout, a dying link's error
                    if next_reason is None:
                        if _refused(exc) or isinstance(exc, HandshakeRefused):
                            # Nobody listens (the server and its sessions are gone), or
                            # it refuses us (HTTP 401/403): trying again cannot help.
                            self._finish(f"{reason} (could not resume: {exc})")
                            return
                        why = f"{type(exc).__name__}: {exc}"
                        continue
                    log.debug("closing a lost link raised %r", exc)
                if next_reason is None:
                    why = "the last attempt timed out"
                    continue
                reason = next_reason  # resumed, and lost again: a fresh budget
                break

    async def _serve(
        self, transport: Transport, *, resume: bool, attempt: trio.CancelScope | None = None
    ) -> str:
        """Run one link until it is lost; return why. Handshake errors propagate."""
        client = RpcClient(
            transport,
            on_notification=self._on_notification,
            on_lost=lambda _reason: None,
            request_timeout=self.request_timeout,
            limits=self.limits,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
                await self._handshake(client, resume=resume)
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            if attempt is not None:
                attempt.deadline = math.inf  # connected: the budget is spent no more
            self.client = client
            self._poke()
            if resume:
                self.resumes += 1
                log.info("resumed session %s", self.session_id)
                nursery.start_soon(self._on_resumed)
            else:
                self.ready.set()
            if self.settings.ping_interval > 0 and hasattr(transport, "ping"):
                nursery.start_soon(self._keepalive, client, transport)
            await client.lost_event.wait()
            nursery.cancel_scope.cancel()
        assert client.lost is not None
        return client.lost

    async def _handshake(self, client: RpcClient, *, resume: bool) -> None:
        params = m.InitializeParams(
            self._client_name, resume_session_id=self.session_id if resume else None
        )
        result = await client.request(m.INITIALIZE, m.unstructure(params))
        try:
            init = m.structure(result, m.InitializeResult)
        except m.ParamsError as exc:
            raise RemoteProtocolError(
                f"the exec-server's initialize answer is malformed: {exc}"
            ) from None
        if resume and init.session_id != self.session_id:
            raise RemoteProtocolError(
                f"asked to resume session {self.session_id}, got {init.session_id}"
            )
        await client.notify(m.INITIALIZED, {})
        if not resume:
            self.session_id = init.session_id
            self.environment_info = init.environment_info or {}
            self.extensions = frozenset(init.extensions or ())

    async def _keepalive(self, client: RpcClient, transport: Any) -> None:
        """Ping every ``ping_interval``; after ``ping_misses`` unanswered, drop the link."""
        interval = self.settings.ping_interval
        missed = 0
        async with trio.open_nursery() as nursery:
            while True:
                started = trio.current_time()
                pong = trio.Event()
                nursery.start_soon(self._ping_once, transport, pong)
                with trio.move_on_after(interval):
                    await pong.wait()
                missed = 0 if pong.is_set() else missed + 1
                if missed >= self.settings.ping_misses:
                    client.abandon(
                        f"no answer to {missed} keepalive pings in {missed * interval:g} s"
                    )
                    with trio.move_on_after(1):
                        await transport.abort()
                    nursery.cancel_scope.cancel()
                    return
                await trio.sleep_until(started + interval)

    @staticmethod
    async def _ping_once(transport: Any, pong: trio.Event) -> None:
        try:
            await transport.ping()
        except Exception as exc:  # the link is closing; the reader reports that
            log.debug("keepalive ping failed: %r", exc)
            return
        pong.set()
