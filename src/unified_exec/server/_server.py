"""ExecServer: any ExecBackend, served with the codex exec-server 0.169.0 protocol.

Deliberate improvements over codex (see design.md): requests on one connection run
concurrently (a long-poll read never stalls a write), each process's notifications
go out in seq order, exit codes of signalled tty children are 128+N, and the
retention windows are settings.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import trio

from .._errors import InvalidRequestError, LaunchError
from .._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent
from .._process import DEFAULT_RETENTION_BYTES, UnifiedExecProcess
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._request import ExecRequest
from .._version import __version__
from ..backends._base import ExecBackend
from ._session import Entry, Session, SessionStore

__all__ = ["Connection", "ExecServer"]

log = logging.getLogger("unified_exec.server")

_MAX_WAIT_MS = 24 * 3600 * 1000
EXTENSIONS = [m.PROCESS_RESIZE, m.PROCESS_CLOSE_STDIN, m.START_TTY_SIZE]


class Connection(Protocol):
    """One transport-level connection, as the server sees it."""

    kind: Literal["stdio", "websocket"]
    name: str  # for error texts, e.g. "stdio" or "websocket 127.0.0.1:4242"

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes | rpc.MessageError | None:
        """The next frame, a framing error, or None once the peer has gone."""
        ...


class _Fail(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Gone(Exception):
    """The connection can no longer send."""


class _ConnState:
    def __init__(self, conn: Connection, nursery: trio.Nursery) -> None:
        self.conn = conn
        self.nursery = nursery
        self.session: Session | None = None
        self.initialized = False
        self._lock = trio.Lock()
        self.alive = True

    async def send(self, message: rpc.Message) -> None:
        if not self.alive:
            raise _Gone
        async with self._lock:
            try:
                await self.conn.send(rpc.encode(message))
            except Exception as exc:
                self.alive = False
                raise _Gone from exc


def _parse_cwd(cwd: str) -> str:
    """codex wants a file:// URI; we also take a plain absolute path."""
    if cwd.startswith("/"):
        return cwd
    parts = urlsplit(cwd)
    if not parts.scheme:
        raise _Fail(rpc.INVALID_PARAMS, "invalid URI: relative URL without a base")
    if parts.scheme != "file":
        raise _Fail(rpc.INVALID_PARAMS, f"unsupported path URI scheme `{parts.scheme}`")
    if parts.netloc not in ("", "localhost"):
        raise _Fail(rpc.INVALID_PARAMS, f"unsupported file URI host `{parts.netloc}`")
    path = unquote(parts.path) or "/"
    return path if path.startswith("/") else "/" + path


def _file_uri(path: str) -> str:
    return "file://" + path


class ExecServer:
    """Serves one ExecBackend to any number of connections.

    Use as ``async with ExecServer(backend) as server:`` and hand each connection to
    ``await server.serve_connection(conn)``; leaving the block terminates every
    process it started.
    """

    def __init__(
        self,
        backend: ExecBackend,
        *,
        retain_closed: float = 80.0,
        detach_timeout: float = 80.0,
        retention_bytes: int = DEFAULT_RETENTION_BYTES,
    ) -> None:
        self.backend = backend
        self.retain_closed = retain_closed
        self.detach_timeout = detach_timeout
        self.retention_bytes = retention_bytes
        self.store = SessionStore()
        self._nursery: trio.Nursery | None = None
        self._handlers: dict[str, Callable[[_ConnState, Session, Any], Awaitable[Any]]] = {
            m.PROCESS_START: self._start,
            m.PROCESS_READ: self._read,
            m.PROCESS_WRITE: self._write,
            m.PROCESS_SIGNAL: self._signal,
            m.PROCESS_TERMINATE: self._terminate,
            m.PROCESS_RESIZE: self._resize,
            m.PROCESS_CLOSE_STDIN: self._close_stdin,
            "environment/info": self._environment_info,
        }

    async def __aenter__(self) -> ExecServer:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._nursery is not None
        with trio.CancelScope(shield=True):
            await self._terminate_all(list(self.store.sessions.values()))
        self._nursery.cancel_scope.cancel()
        await self._nursery_cm.__aexit__(None, None, None)
        return None

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("use ExecServer as an async context manager")
        return self._nursery

    # -- connections -------------------------------------------------------------

    async def serve_connection(self, conn: Connection) -> None:
        """Run one connection until the peer goes away or breaks the handshake."""
        async with trio.open_nursery() as nursery:
            state = _ConnState(conn, nursery)
            try:
                await self._receive_loop(state)
            except _Gone:
                pass
            except Exception:  # one connection's trouble must never take the server down
                log.exception("closing exec-server connection %s after an error", conn.name)
            finally:
                state.alive = False
                nursery.cancel_scope.cancel()
        session = state.session
        if session is None or session.attached is not state:
            return
        session.attached = None
        session.detaches += 1
        if conn.kind == "stdio":
            await self._terminate_all([session])
        else:
            self.nursery.start_soon(self._expire_detached, session, session.detaches)

    async def _receive_loop(self, state: _ConnState) -> None:
        while True:
            frame = await state.conn.receive()
            if frame is None:
                return
            try:
                if isinstance(frame, rpc.MessageError):
                    raise frame
                message = rpc.decode(frame)
            except rpc.MessageError as exc:
                text = f"failed to parse JSON-RPC message from exec-server {state.conn.name}: {exc}"
                await state.send(rpc.ErrorResponse(id=-1, code=rpc.INVALID_REQUEST, message=text))
                continue
            if isinstance(message, rpc.Request):
                if message.method != m.INITIALIZE and message.method not in self._handlers:
                    # As codex: an unknown method is that, whatever the handshake state.
                    await self._error(
                        state, message, rpc.METHOD_NOT_FOUND,
                        f"exec-server does not implement `{message.method}`",
                    )  # fmt: skip
                elif message.method == m.INITIALIZE:
                    await self._reply(state, message, self._initialize(state, message.params))
                elif state.session is None:
                    await self._error(
                        state, message, rpc.INVALID_REQUEST,
                        "client must call initialize before using exec methods",
                    )  # fmt: skip
                elif not state.initialized:
                    await self._error(
                        state, message, rpc.INVALID_REQUEST,
                        "client must send initialized before using exec methods",
                    )  # fmt: skip
                else:
                    state.nursery.start_soon(self._dispatch, state, state.session, message)
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

    async def _reply(self, state: _ConnState, request: rpc.Request, work: Awaitable[Any]) -> None:
        try:
            result = await work
        except _Fail as exc:
            await self._error(state, request, exc.code, exc.message)
            return
        except m.ParamsError as exc:
            await self._error(state, request, rpc.INVALID_PARAMS, str(exc))
            return
        except _Gone:
            raise
        except Exception as exc:
            log.exception("request %s failed", request.method)
            await self._error(state, request, rpc.INTERNAL_ERROR, str(exc) or repr(exc))
            return
        await state.send(rpc.Response(id=request.id, result=result))

    async def _error(self, state: _ConnState, request: rpc.Request, code: int, text: str) -> None:
        await state.send(rpc.ErrorResponse(id=request.id, code=code, message=text))

    async def _dispatch(self, state: _ConnState, session: Session, request: rpc.Request) -> None:
        handler = self._handlers.get(request.method)
        if handler is None:
            await self._error(
                state, request, rpc.METHOD_NOT_FOUND,
                f"exec-server does not implement `{request.method}`",
            )  # fmt: skip
            return
        try:
            await self._reply(state, request, handler(state, session, request.params))
        except _Gone:
            pass

    # -- handshake ---------------------------------------------------------------

    async def _initialize(self, state: _ConnState, params: Any) -> dict[str, Any]:
        if state.session is not None:
            raise _Fail(rpc.INVALID_REQUEST, "initialize may only be sent once per connection")
        p = m.structure(params, m.InitializeParams)
        if p.resume_session_id is not None:
            session = self.store.sessions.get(p.resume_session_id)
            if session is None:
                raise _Fail(rpc.INVALID_REQUEST, f"unknown session id {p.resume_session_id}")
            if session.attached is not None:
                raise _Fail(
                    rpc.SESSION_ATTACHED,
                    f"session {session.session_id} is already attached to another connection",
                )
            # Output made while detached is not replayed: push from here on.
            for entry in session.entries.values():
                if entry.proc is not None and not entry.proc.closed:
                    after = entry.proc.last_seq
                    state.nursery.start_soon(self._forward, state, entry, after)
        else:
            session = self.store.new()
        session.attached = state
        state.session = session
        result = m.InitializeResult(
            session_id=session.session_id,
            environment_info=self._environment(),
            extensions=EXTENSIONS,
        )
        return m.unstructure(result)

    def _environment(self) -> dict[str, Any]:
        shell = os.environ.get("SHELL", "/bin/sh")
        return {
            "shell": {"name": os.path.basename(shell), "path": shell},
            "executorVersion": f"unified_exec {__version__}",
            "cwd": _file_uri(os.getcwd()),
            "userHomeDir": _file_uri(os.path.expanduser("~")),
            "platformOs": platform.system().lower(),
            "tempDir": _file_uri(os.environ.get("TMPDIR", "/tmp")),
        }

    async def _environment_info(self, state: _ConnState, session: Session, params: Any) -> Any:
        if params not in (None, {}):
            raise m.ParamsError("invalid type: map, expected unit")
        await trio.lowlevel.checkpoint()
        return self._environment()

    # -- process methods ------------------------------------------------------------

    def _entry(self, session: Session, process_id: str) -> Entry:
        entry = session.entries.get(process_id)
        if entry is None:
            raise _Fail(rpc.INVALID_REQUEST, f"unknown process id {process_id}")
        return entry

    async def _start(self, state: _ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.StartParams)
        if not p.argv:
            raise _Fail(rpc.INVALID_PARAMS, "argv must not be empty")
        cwd = _parse_cwd(p.cwd)
        if p.process_id in session.entries:
            raise _Fail(rpc.INVALID_REQUEST, f"process {p.process_id} already exists")
        try:
            request = ExecRequest(
                argv=p.argv, cwd=cwd, env=p.env, tty=p.tty, pipe_stdin=p.pipe_stdin,
                arg0=p.arg0, process_id=p.process_id,
                **({"size": tuple(p.tty_size)} if p.tty_size is not None else {}),
            )  # fmt: skip
        except InvalidRequestError as exc:
            raise _Fail(rpc.INVALID_PARAMS, str(exc)) from None
        entry = Entry(process_id=p.process_id, tty=p.tty, pipe_stdin=p.pipe_stdin)
        session.entries[p.process_id] = entry
        try:
            proc = await UnifiedExecProcess.start(
                self.backend, request, retention_bytes=self.retention_bytes
            )
        except LaunchError as exc:
            session.entries.pop(p.process_id, None)
            raise _Fail(rpc.INTERNAL_ERROR, str(exc)) from None
        except BaseException:
            session.entries.pop(p.process_id, None)
            raise
        entry.proc = proc
        entry.phase = "running"
        if entry.start_cancelled:
            session.entries.pop(p.process_id, None)
            self.nursery.start_soon(proc.terminate)
            raise _Fail(rpc.INVALID_REQUEST, f"process {p.process_id} start was cancelled")
        if session.attached is state:
            state.nursery.start_soon(self._forward, state, entry, 0)
        self.nursery.start_soon(self._expire_closed, session, entry)
        return m.unstructure(m.StartResult(process_id=p.process_id))

    async def _read(self, state: _ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.ReadParams)
        entry = self._entry(session, p.process_id)
        if entry.proc is None:
            raise _Fail(rpc.INVALID_REQUEST, f"process id {p.process_id} is starting")
        wait_ms = min(p.wait_ms or 0, _MAX_WAIT_MS)
        res = await entry.proc.read(
            after_seq=p.after_seq or 0, max_bytes=p.max_bytes, wait=wait_ms / 1000
        )
        next_seq = res.next_seq
        if p.max_bytes is not None and res.chunks:
            next_seq = res.chunks[-1].seq + 1  # as codex: the cursor follows the budget
        state_ = res.state
        result = m.ReadResult(
            chunks=[m.ReadChunk(seq=c.seq, stream=c.stream, chunk=c.data) for c in res.chunks],
            next_seq=next_seq,
            exited=state_.exit_code is not None,
            exit_code=state_.exit_code,
            closed=res.closed,
            failure=state_.failure_message,
        )
        return m.unstructure(result)

    async def _write(self, state: _ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.WriteParams)
        if p.write_id is not None and not p.write_id:
            raise _Fail(rpc.INVALID_PARAMS, "writeId must not be empty")
        entry = session.entries.get(p.process_id)
        if entry is None:
            status = "unknownProcess"
        elif entry.proc is None:
            status = "starting"
        elif (not entry.tty and not entry.pipe_stdin) or entry.stdin_closed:
            status = "stdinClosed"
        elif entry.terminated:
            raise _Fail(rpc.INTERNAL_ERROR, "failed to write to process stdin")
        elif p.write_id is not None and not entry.remember_write(p.write_id):
            status = "accepted"  # a retry of a write we already did
        elif entry.proc.state.has_exited:
            status = "accepted"  # as codex: discarded once the process has exited
        else:
            result = await entry.proc.write(p.chunk)
            if entry.terminated:
                raise _Fail(rpc.INTERNAL_ERROR, "failed to write to process stdin")
            status = "accepted" if entry.proc.state.has_exited else result.value
        return m.unstructure(m.WriteResult(status=status))  # type: ignore[arg-type]

    async def _signal(self, state: _ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.SignalParams)
        entry = session.entries.get(p.process_id)
        if entry is not None and entry.proc is not None:
            await entry.proc.interrupt()
        await trio.lowlevel.checkpoint()
        return {}

    async def _terminate(self, state: _ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.TerminateParams)
        await trio.lowlevel.checkpoint()
        entry = session.entries.get(p.process_id)
        if entry is None:
            return m.unstructure(m.TerminateResult(running=False))
        if entry.proc is None:
            entry.start_cancelled = True
            return m.unstructure(m.TerminateResult(running=True))
        if entry.proc.state.has_exited:
            return m.unstructure(m.TerminateResult(running=False))
        entry.terminated = True
        self.nursery.start_soon(entry.proc.terminate)
        return m.unstructure(m.TerminateResult(running=True))

    async def _resize(self, state: _ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.ResizeParams)
        entry = self._entry(session, p.process_id)
        if entry.proc is None:
            raise _Fail(rpc.INVALID_REQUEST, f"process id {p.process_id} is starting")
        try:
            await entry.proc.resize(p.rows, p.cols)
        except InvalidRequestError as exc:
            raise _Fail(rpc.INVALID_PARAMS, str(exc)) from None
        return {}

    async def _close_stdin(self, state: _ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.CloseStdinParams)
        entry = self._entry(session, p.process_id)
        if entry.proc is None:
            raise _Fail(rpc.INVALID_REQUEST, f"process id {p.process_id} is starting")
        try:
            await entry.proc.close_stdin()
        except InvalidRequestError as exc:
            raise _Fail(rpc.INVALID_PARAMS, str(exc)) from None
        entry.stdin_closed = True
        return {}

    # -- notifications and lifetimes ---------------------------------------------------

    async def _forward(self, state: _ConnState, entry: Entry, after_seq: int) -> None:
        """Push one process's events to one connection, in seq order.

        As an active events() reader this holds the child back when the client
        reads slowly (backpressure), and lets go when the connection ends.
        """
        assert entry.proc is not None
        pid = entry.process_id
        stream = entry.proc.events(after_seq=after_seq)
        try:
            async for event in stream:
                if isinstance(event, OutputEvent):
                    params = m.OutputParams(pid, event.seq, event.stream, event.data)
                    await state.send(rpc.Notification(m.OUTPUT, m.unstructure(params)))
                elif isinstance(event, ExitedEvent):
                    params_e = m.ExitedParams(pid, event.seq, event.exit_code)
                    await state.send(rpc.Notification(m.EXITED, m.unstructure(params_e)))
                elif isinstance(event, ClosedEvent):
                    params_c = m.ClosedParams(pid, event.seq)
                    await state.send(rpc.Notification(m.CLOSED, m.unstructure(params_c)))
                elif isinstance(event, FailedEvent):
                    # The wire has no failure notification: end the stream visibly
                    # (process/read reports the message in `failure`).
                    seq = entry.proc.last_seq
                    if entry.proc.state.exit_code is None:
                        seq += 1
                        params_e = m.ExitedParams(pid, seq, -1)
                        await state.send(rpc.Notification(m.EXITED, m.unstructure(params_e)))
                    params_c = m.ClosedParams(pid, seq + 1)
                    await state.send(rpc.Notification(m.CLOSED, m.unstructure(params_c)))
        except _Gone:
            pass
        finally:
            stream.close()

    async def _expire_closed(self, session: Session, entry: Entry) -> None:
        assert entry.proc is not None
        await entry.proc.wait()
        await trio.sleep(self.retain_closed)
        if session.entries.get(entry.process_id) is entry:
            del session.entries[entry.process_id]

    async def _expire_detached(self, session: Session, detach: int) -> None:
        await trio.sleep(self.detach_timeout)
        if (
            session.attached is None
            and session.detaches == detach  # not resumed (and detached again) meanwhile
            and self.store.sessions.get(session.session_id) is session
        ):
            await self._terminate_all([session])

    async def _terminate_all(self, sessions: list[Session]) -> None:
        async with trio.open_nursery() as nursery:
            for session in sessions:
                self.store.sessions.pop(session.session_id, None)
                for proc in session.live_processes():
                    nursery.start_soon(proc.terminate)
