"""ExecServer: any ExecBackend, served with the codex exec-server 0.169.0 protocol.

Deliberate improvements over codex (see design.md): requests of different processes
on one connection run concurrently (a long-poll read never stalls a write), while the
state-changing requests of one process run in arrival order; each process's
notifications go out in seq order; exit codes of signalled tty children are 128+N;
the retention windows and wire limits are settings.

Nothing a peer sends and nothing a backend raises ends the server: each connection
and each background task has its own exception boundary (``spawn_guarded``), and the
server's own lifetime is a real ``async with trio.open_nursery()``, whose teardown
runs whatever terminate() does.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from .._errors import InvalidRequestError
from .._process import DEFAULT_RETENTION_BYTES
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._protocol._limits import DEFAULT_LIMITS, Limits
from .._validate import check_duration, check_size
from ..backends._base import ExecBackend
from ._conn import Connection, ConnState, Gone, spawn_guarded
from ._errors_map import Fail, error_reply
from ._forward import forward
from ._methods import CAPABILITIES, EXTENSIONS, Handler, Methods, Reply, environment
from ._session import Entry, Session, SessionStore

__all__ = ["CAPABILITIES", "EXTENSIONS", "Connection", "ExecServer", "open_exec_server"]

log = logging.getLogger("unified_exec.server")

_TERMINATE_BOUND = 30.0  # how long shutdown waits for a backend's terminate()


class ExecServer:
    """Serves one ExecBackend to any number of connections.

    Use as ``async with open_exec_server(backend) as server:`` (or the equivalent
    ``async with ExecServer(backend) as server:``) and hand each connection to
    ``await server.serve_connection(conn)``; leaving the block terminates every process
    it started, even if a backend's terminate() raises.

    Settings (seconds; all refused at construction when negative):

    - ``retain_closed`` (80): a closed process stays readable this long.
    - ``detach_timeout`` (80, codex measured at about 80): a websocket session whose
      connection went away stays resumable this long; then its processes are killed.
    - ``idle_timeout`` (None: off): a connection silent this long (no frame, and no
      transport-level sign of life, see ``Heartbeat``) is closed and its session
      detached. Stdio needs none: EOF says the peer is gone.
    - ``takeover_after`` (5): ``initialize{resumeSessionId}`` of a session that is still
      attached takes it over (the old connection is closed) once that connection has
      been silent this long; a livelier one (or a stdio one) answers -32010 as before.
      A half-open link (no FIN, no RST) thus cannot lock its owner out. The session id
      is the secret (uuid4, from the OS's CSPRNG, sent only to its creator).
    - ``limits`` (None: ``DEFAULT_LIMITS``): message size, JSON values, in-flight
      requests, process counts, writeIds, default read budget (see ``Limits``).
    """

    def __init__(
        self,
        backend: ExecBackend,
        *,
        retain_closed: float = 80.0,
        detach_timeout: float = 80.0,
        retention_bytes: int = DEFAULT_RETENTION_BYTES,
        limits: Limits | None = None,
        idle_timeout: float | None = None,
        takeover_after: float = 5.0,
    ) -> None:
        self.backend = backend
        self.retain_closed = _seconds("retain_closed", retain_closed)
        self.detach_timeout = _seconds("detach_timeout", detach_timeout)
        self.idle_timeout = check_duration("idle_timeout", idle_timeout, allow_none=True)
        self.takeover_after = _seconds("takeover_after", takeover_after)
        self.retention_bytes: int = check_size("retention_bytes", retention_bytes) or 0
        if limits is None:
            limits = DEFAULT_LIMITS
        elif not isinstance(limits, Limits):
            raise InvalidRequestError(f"limits must be a Limits, got {type(limits).__name__}")
        self.limits = limits
        self.store = SessionStore()
        self.methods = Methods(self)
        self._nursery: trio.Nursery | None = None
        self._stack: AsyncExitStack | None = None
        # Closed entries to forget, oldest first: (deadline, session, entry).
        self._expiring: collections.deque[tuple[float, Session, Entry]] = collections.deque()
        self._expirer = False  # the task that forgets them runs

    # -- lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> ExecServer:
        if self._stack is not None:
            raise InvalidRequestError("this ExecServer is already running")
        stack = AsyncExitStack()
        await stack.enter_async_context(self._running())
        self._stack = stack
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(*exc)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[ExecServer]:
        """The one place the server's nursery is opened and closed.

        The body's own exception is held while the nursery closes and re-raised
        after it, unchanged (not wrapped in an ExceptionGroup): to the caller, the
        server block behaves like any other block.
        """
        raised: BaseException | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            except BaseException as exc:
                raised = exc
            finally:
                await self._terminate_all(list(self.store.sessions.values()))
                nursery.cancel_scope.cancel()
        self._nursery = None
        if raised is not None:
            raise raised

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("use ExecServer as an async context manager")
        return self._nursery

    def spawn(self, job: Callable[[], Awaitable[Any]], what: str) -> None:
        """A background task of the server, behind an exception boundary."""

        async def run() -> None:
            await job()

        if self._nursery is None:
            log.warning("exec-server is not running; dropped: %s", what)
            return
        spawn_guarded(self._nursery, run, what)

    # -- connections -------------------------------------------------------------------

    async def serve_connection(self, conn: Connection) -> None:
        """Run one connection until the peer goes away, breaks the handshake, falls
        silent past ``idle_timeout``, or its session is taken over. Never raises
        because of what the peer sent."""
        async with trio.open_nursery() as nursery:
            state = ConnState(conn, nursery, self.limits)
            try:
                if self.idle_timeout is not None:
                    timeout = self.idle_timeout
                    spawn_guarded(nursery, lambda: state.watch_idle(timeout), "idle watchdog")
                await self._receive_loop(state)
            except Gone:
                pass
            except Exception:  # one connection's trouble must never take the server down
                log.exception("closing exec-server connection %s after an error", conn.name)
            finally:
                state.alive = False
                nursery.cancel_scope.cancel()
        await self._detach(state)

    async def _detach(self, state: ConnState) -> None:
        session = state.session
        if session is None or session.attached is not state:
            return  # never attached, or taken over by a resume
        session.attached = None
        session.detaches += 1
        if state.conn.kind == "stdio":
            await self._terminate_all([session])
        else:
            detach = session.detaches
            self.spawn(lambda: self._expire_detached(session, detach), "expire detached session")

    async def _receive_loop(self, state: ConnState) -> None:
        while state.alive:
            frame = await state.conn.receive()
            if frame is None:
                return
            state.touch()
            try:
                if isinstance(frame, rpc.MessageError):
                    raise frame
                message = rpc.decode_frame(frame, max_values=self.limits.max_json_values)
            except rpc.MessageError as exc:
                text = f"failed to parse JSON-RPC message from exec-server {state.conn.name}: {exc}"
                await state.reply_error(-1, rpc.INVALID_REQUEST, text)
                continue
            if isinstance(message, rpc.Request):
                await self._on_request(state, message)
            elif isinstance(message, rpc.Notification):
                if message.method == m.INITIALIZED and state.session is not None:
                    state.initialized = True
                    continue
                log.warning(
                    "closing exec-server connection after unexpected notification: %s",
                    message.method,
                )
                return
            # Responses from the client: we send no requests, so there is nothing to match.

    async def _on_request(self, state: ConnState, request: rpc.Request) -> None:
        """Answer the handshake inline; queue everything else in arrival order."""
        method = request.method
        known = self.methods.table.get(method)
        if method == m.INITIALIZE:
            try:
                result = self._initialize(state, request.params)
            except Exception as exc:
                await state.reply_error(request.id, *error_reply(exc, method))
                return
            await state.reply(request.id, result)
        elif known is None:
            # As codex: an unknown method is that, whatever the handshake state.
            text = f"exec-server does not implement `{method}`"
            await state.reply_error(request.id, rpc.METHOD_NOT_FOUND, text)
        elif state.session is None:
            text = "client must call initialize before using exec methods"
            await state.reply_error(request.id, rpc.INVALID_REQUEST, text)
        elif not state.initialized:
            text = "client must send initialized before using exec methods"
            await state.reply_error(request.id, rpc.INVALID_REQUEST, text)
        else:
            handler, rule = known
            session = state.session
            lane = _lane(request.params)
            ordered = rule == "ordered"
            if rule == "control" and lane is not None:
                entry = session.entries.get(lane)
                if entry is None or entry.proc is None:
                    ordered = True  # unknown or starting: wait for the start ahead of it
                else:
                    lane = None  # started: at once, ahead of queued writes
            try:  # the receive was this loop's checkpoint: no second scheduler pass
                state.slots.acquire_nowait()
            except trio.WouldBlock:
                await state.slots.acquire()  # past max_in_flight: stop reading (backpressure)
            job = functools.partial(self._run, state, session, request, handler)
            state.submit(lane, job, ordered=ordered, what=method)

    async def _run(
        self, state: ConnState, session: Session, request: rpc.Request, handler: Handler
    ) -> None:
        """Run one request and answer it; never raises (Gone included)."""
        then: Callable[[], Awaitable[None]] | None = None
        try:
            try:
                result = await handler(state, session, request.params)
            except Exception as exc:
                await state.reply_error(request.id, *error_reply(exc, request.method))
                return
            if isinstance(result, Reply):
                result, then = result.result, result.then
            await state.reply(request.id, result)
        except Gone:
            pass
        finally:
            state.slots.release()
            if then is not None:
                with trio.CancelScope(shield=True):
                    await then()

    # -- handshake ---------------------------------------------------------------------

    def _initialize(self, state: ConnState, params: Any) -> dict[str, Any]:
        if state.session is not None:
            raise Fail(rpc.INVALID_REQUEST, "initialize may only be sent once per connection")
        p = m.structure(params, m.InitializeParams)
        if p.resume_session_id is not None:
            session = self.store.sessions.get(p.resume_session_id)
            if session is None:
                raise Fail(rpc.INVALID_REQUEST, f"unknown session id {p.resume_session_id}")
            old = session.attached
            if isinstance(old, ConnState):
                # A stdio session lives and dies with its pipe: never taken over.
                if old.conn.kind == "stdio" or old.silent_for() < self.takeover_after:
                    raise Fail(
                        rpc.SESSION_ATTACHED,
                        f"session {session.session_id} is already attached to another connection",
                    )
                log.info("session %s taken over from silent %s", session.session_id, old.conn.name)
                old.close()
            # Output made while detached is not replayed: push from here on.
            for entry in session.entries.values():
                if entry.proc is not None and not entry.proc.closed:
                    self._forward_to(state, session, entry, entry.proc.last_seq)
        else:
            session = self.store.new()
        session.attached = state
        state.session = session
        result = m.unstructure(
            m.InitializeResult(
                session_id=session.session_id,
                environment_info=environment(self.backend),
                extensions=EXTENSIONS,
            )
        )
        return result

    # -- process lifetimes ---------------------------------------------------------------

    def _forward_to(self, state: ConnState, session: Session, entry: Entry, after_seq: int) -> None:
        async def push() -> None:
            ended = False
            try:
                ended = await forward(state, entry, after_seq)
            finally:
                if ended:
                    self._closed(session, entry)
                else:  # the connection went first: watch for the end some other way
                    self._watch(session, entry)

        if not spawn_guarded(state.nursery, push, f"forward {entry.process_id}"):
            self._watch(session, entry)  # the connection is closing: still forget it in time

    def process_started(self, state: ConnState, session: Session, entry: Entry) -> None:
        """A process/start succeeded: push its events, and forget it in time."""
        target = session.attached
        if isinstance(target, ConnState):
            self._forward_to(target, session, entry, 0)
        else:
            self._watch(session, entry)

    # Forgetting a closed process: ``retain_closed`` s after its end. The end is seen
    # by the forward task that pushes it (no task of its own per process: one that
    # waited in proc.wait() woke on every output event, a scheduler pass each); only
    # a process that nobody pushes (detached) has a watcher that waits for its end.

    def _watch(self, session: Session, entry: Entry) -> None:
        if entry.expiry is not None:
            return
        entry.expiry = "watching"

        async def watch() -> None:
            assert entry.proc is not None
            await entry.proc.wait()
            self._closed(session, entry)

        self.spawn(watch, f"watch {entry.process_id}")

    def _closed(self, session: Session, entry: Entry) -> None:
        """Forget ``entry`` retain_closed s from now: one timer task for them all (the
        same delay for each, so the queue is in deadline order), not one each."""
        if entry.expiry == "expiring":
            return
        entry.expiry = "expiring"
        self._expiring.append((trio.current_time() + self.retain_closed, session, entry))
        if not self._expirer and self._nursery is not None:
            self._expirer = True
            self.spawn(self._expire_closed, "expire closed processes")

    async def _expire_closed(self) -> None:
        queue = self._expiring
        try:
            while queue:
                await trio.sleep_until(queue[0][0])
                now = trio.current_time()
                while queue and queue[0][0] <= now:
                    _, session, entry = queue.popleft()
                    if session.entries.get(entry.process_id) is entry:
                        del session.entries[entry.process_id]
        finally:
            self._expirer = False

    async def _expire_detached(self, session: Session, detach: int) -> None:
        await trio.sleep(self.detach_timeout)
        if (
            session.attached is None
            and session.detaches == detach  # not resumed (and detached again) meanwhile
            and self.store.sessions.get(session.session_id) is session
        ):
            await self._terminate_all([session])

    async def _terminate_all(self, sessions: list[Session]) -> None:
        """Terminate every live process of ``sessions``; never raises, and gives up
        waiting after a bound (a backend whose terminate() hangs cannot wedge us)."""

        async def terminate(proc: Any) -> None:
            try:
                await proc.terminate()
            except Exception:
                log.exception("terminating %s failed", proc.process_id)

        # Shielded: the sessions leave the store first, so a cancelled terminate here
        # would leave children that no later shutdown knows of.
        with trio.CancelScope(shield=True), trio.move_on_after(_TERMINATE_BOUND):
            async with trio.open_nursery() as nursery:
                for session in sessions:
                    self.store.sessions.pop(session.session_id, None)
                    for proc in session.live_processes():
                        nursery.start_soon(terminate, proc)


def _seconds(name: str, value: float) -> float:
    checked = check_duration(name, value)
    assert checked is not None
    return checked


def _lane(params: Any) -> str | None:
    """The processId a request is about, if it names one: the key of its lane."""
    if isinstance(params, dict):
        pid = params.get("processId")
        if isinstance(pid, str):
            return pid
    return None


@asynccontextmanager
async def open_exec_server(backend: ExecBackend, **settings: Any) -> AsyncIterator[ExecServer]:
    """``async with open_exec_server(backend, ...) as server:`` — the server's lifetime
    as a block (trio's idiom for objects that own tasks). Settings as ExecServer's."""
    server = ExecServer(backend, **settings)
    async with server._running():
        yield server
