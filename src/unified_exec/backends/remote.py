"""RemoteExecBackend: processes behind an exec-server (ours, or the real codex one).

The client is strict in what it sends (what codex 0.169.0 requires: a file URI cwd,
the full env, a fresh writeId per write) and registers a process's route *before*
``process/start``, since notifications can beat the start response. Each process
reorders its events by seq and fetches missing seqs with ``process/read``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import trio
import trio_websocket

from .._errors import (
    InvalidRequestError,
    LaunchError,
    RemoteProtocolError,
    RpcError,
    TransportLostError,
    UnifiedExecError,
)
from .._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent, ProcessEvent, WriteStatus
from .._groups import unwrap_single
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._protocol._reorder import SeqReorderer
from .._request import ExecRequest, check_tty_size
from ._rpc import RpcClient, Transport

__all__ = ["REMOTE_DEFAULT_ENV", "RemoteExecBackend"]

log = logging.getLogger("unified_exec.remote")

#: What a process gets when ``ExecRequest.env`` is None: the protocol needs the
#: child's whole environment, and the client cannot know the server's, so it sends
#: this (plus ``HOME`` from the server's environmentInfo when it tells).
REMOTE_DEFAULT_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_DEFAULT_SIZE = (24, 80)  # what an exec-server's PTY starts with
_GAP_GRACE = 0.25  # how long a seq may be missing before we fetch it
_CLIENT_BUFFER_BYTES = 16 * 1024 * 1024  # per process, while its reader lags
_STATUS = {s.value: s for s in WriteStatus}
_MAX_FRAME = 64 * 1024 * 1024


def _file_uri(path: str) -> str:
    return "file://" + quote(path)


def _uri_path(uri: str) -> str | None:
    parts = urlsplit(uri)
    return unquote(parts.path) if parts.scheme == "file" else None


class _RemoteProcess:
    """The ProcessHandle of a process on an exec-server."""

    def __init__(self, backend: RemoteExecBackend, process_id: str) -> None:
        self._backend = backend
        self._process_id = process_id
        self._order = SeqReorderer()
        self._ready: deque[ProcessEvent] = deque()
        self._ready_bytes = 0
        self._dropping = False  # output is being dropped until the next refetch
        self._changed = trio.lowlevel.ParkingLot()
        self._ended = False
        self._events_taken = False

    @property
    def process_id(self) -> str:
        return self._process_id

    # -- fed by the connection -------------------------------------------------------

    def deliver(self, method: str, params: Any) -> None:
        if self._ended:
            return
        if method == m.OUTPUT and (self._dropping or self._ready_bytes >= _CLIENT_BUFFER_BYTES):
            # The reader lags and the connection must keep flowing for the other
            # processes: drop output here (all of it until the refetch, or it would
            # pile up behind the gap); it is fetched again with process/read when
            # the reader catches up, or reported lost if the server evicted it.
            self._dropping = True
            return
        try:
            if method == m.OUTPUT:
                o = m.structure(params, m.OutputParams)
                event: OutputEvent | ExitedEvent | ClosedEvent = OutputEvent(
                    o.seq, o.stream, o.chunk
                )
            elif method == m.EXITED:
                e = m.structure(params, m.ExitedParams)
                event = ExitedEvent(e.seq, e.exit_code)
            else:
                c = m.structure(params, m.ClosedParams)
                event = ClosedEvent(c.seq)
        except m.ParamsError as exc:
            log.warning("bad %s notification for %s: %s", method, self._process_id, exc)
            return
        self._release(self._order.push(event))
        self._changed.unpark_all()  # even if held back: a new gap starts its grace

    def _release(self, events: list[OutputEvent | ExitedEvent | ClosedEvent]) -> None:
        if events:
            self._ready.extend(events)
            self._ready_bytes += sum(len(e.data) for e in events if isinstance(e, OutputEvent))
            self._changed.unpark_all()

    def fail(self, message: str) -> None:
        if not self._ended and not self._order.done:
            self._ready.append(FailedEvent(message))
            self._ended = True
            self._changed.unpark_all()

    # -- ProcessHandle -----------------------------------------------------------------

    def events(self) -> AsyncIterator[ProcessEvent]:
        if self._events_taken:
            raise RuntimeError("events() of a process handle can be taken only once")
        self._events_taken = True
        return self._event_stream()

    async def _event_stream(self) -> AsyncIterator[ProcessEvent]:
        try:
            while True:
                while not self._ready:
                    if self._dropping:  # we dropped output: fetch it now
                        await self._fill_gap()
                    elif self._order.gap is not None:
                        with trio.move_on_after(_GAP_GRACE):
                            await self._changed.park()
                        if not self._ready and self._order.gap is not None:
                            await self._fill_gap()
                    else:
                        await self._changed.park()
                event = self._ready.popleft()
                if isinstance(event, OutputEvent):
                    self._ready_bytes -= len(event.data)
                yield event
                if isinstance(event, ClosedEvent | FailedEvent):
                    return
        finally:
            self._backend._routes.pop(self._process_id, None)

    async def _fill_gap(self) -> None:
        """Fetch seqs that did not arrive (e.g. while a session was detached)."""
        before = self._order.next_seq
        self._dropping = False  # notifications from here on are kept again
        try:
            result = await self._backend._call(
                m.PROCESS_READ, m.ReadParams(self._process_id, after_seq=before - 1)
            )
            read = m.structure(result, m.ReadResult)
        except (UnifiedExecError, m.ParamsError) as exc:
            self.fail(f"could not fetch missing output of {self._process_id}: {exc}")
            return
        for chunk in read.chunks:
            self._release(self._order.push(OutputEvent(chunk.seq, chunk.stream, chunk.chunk)))
        gap = self._order.gap
        if gap is not None and read.exit_code is not None and gap[0] == gap[1]:
            # The one missing seq with the process exited: that seq was the exit.
            self._release(self._order.push(ExitedEvent(gap[0], read.exit_code)))
        if self._order.gap is not None and self._order.next_seq == before:
            # Evicted by the server's retention: move on rather than wait forever.
            held_from = self._order.gap[1] + 1
            log.warning("seqs %d..%d of %s are gone", before, held_from - 1, self._process_id)
            self._release(self._order.skip_to(held_from))

    async def write(self, data: bytes) -> WriteStatus:
        params = m.WriteParams(self._process_id, data, write_id=uuid.uuid4().hex)
        try:
            result = await self._backend._call(m.PROCESS_WRITE, params)
        except RpcError as exc:
            if exc.code == rpc.INTERNAL_ERROR:  # codex: "failed to write to process stdin"
                return WriteStatus.STDIN_CLOSED
            raise
        status = result.get("status") if isinstance(result, dict) else None
        if status not in _STATUS:
            raise RemoteProtocolError(f"process/write answered {result!r}")
        return _STATUS[status]

    async def terminate(self) -> None:
        await self._backend._call(m.PROCESS_TERMINATE, m.TerminateParams(self._process_id))

    async def interrupt(self) -> None:
        await self._backend._call(m.PROCESS_SIGNAL, m.SignalParams(self._process_id, "interrupt"))

    async def close_stdin(self) -> None:
        if m.PROCESS_CLOSE_STDIN not in self._backend.extensions:
            raise InvalidRequestError(
                "this exec-server cannot close stdin (codex 0.169.0 has no such method)"
            )
        try:
            await self._backend._call(m.PROCESS_CLOSE_STDIN, m.CloseStdinParams(self._process_id))
        except RpcError as exc:
            if exc.code == rpc.INVALID_PARAMS:
                raise InvalidRequestError(exc.message) from None
            raise

    async def resize(self, rows: int, cols: int) -> None:
        check_tty_size(rows, cols)
        if m.PROCESS_RESIZE not in self._backend.extensions:
            raise InvalidRequestError("this exec-server cannot resize a terminal")
        try:
            await self._backend._call(
                m.PROCESS_RESIZE, m.ResizeParams(self._process_id, rows, cols)
            )
        except RpcError as exc:
            if exc.code == rpc.INVALID_PARAMS:
                raise InvalidRequestError(exc.message) from None
            raise


class RemoteExecBackend:
    """Runs processes on an exec-server. Create it with ``connect`` or ``connect_stdio``."""

    def __init__(self, client_name: str = "unified_exec", request_timeout: float = 30.0) -> None:
        """Private: use connect() or connect_stdio()."""
        self._client_name = client_name
        self._request_timeout = request_timeout
        self._routes: dict[str, _RemoteProcess] = {}
        self._client: RpcClient | None = None
        self._nursery: trio.Nursery | None = None
        self.session_id: str | None = None
        self.environment_info: dict[str, Any] = {}
        self.extensions: frozenset[str] = frozenset()

    # -- construction ------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        client_name: str = "unified_exec",
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
    ) -> AsyncIterator[RemoteExecBackend]:
        """Connect to ``ws://HOST:PORT``; ``token`` is sent as a bearer token."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise InvalidRequestError(f"expected a ws:// URL, not {url!r}")
        headers = [(b"Authorization", b"Bearer " + token.encode())] if token else None
        connected = False
        try:
            with unwrap_single():
                async with trio_websocket.open_websocket_url(
                    url,
                    extra_headers=headers,
                    max_message_size=_MAX_FRAME,
                    connect_timeout=connect_timeout,
                    disconnect_timeout=5,
                ) as ws:
                    connected = True
                    async with cls._running(
                        _WsTransport(ws), client_name, request_timeout
                    ) as backend:
                        yield backend
        except trio_websocket.DisconnectionTimeout:
            log.debug("exec-server %s did not finish the closing handshake", url)
        except (OSError, trio_websocket.HandshakeError) as exc:
            if connected:
                raise
            raise TransportLostError(f"cannot connect to exec-server {url}: {exc!r}") from exc

    @classmethod
    @asynccontextmanager
    async def connect_stdio(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        client_name: str = "unified_exec",
        request_timeout: float = 30.0,
    ) -> AsyncIterator[RemoteExecBackend]:
        """Spawn an exec-server command that speaks on its stdin/stdout and use it."""
        argv = list(argv)
        if not argv:
            raise InvalidRequestError("argv must not be empty")
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"cannot start exec-server {argv[0]}: {exc}", path=argv[0]) from exc
        transport = _StdioTransport(proc)
        try:
            with unwrap_single():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(transport.drain_stderr)
                    async with cls._running(transport, client_name, request_timeout) as backend:
                        yield backend
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await transport.shutdown()

    @classmethod
    @asynccontextmanager
    async def _running(
        cls, transport: Transport, client_name: str, request_timeout: float
    ) -> AsyncIterator[RemoteExecBackend]:
        backend = cls(client_name, request_timeout)
        client = RpcClient(
            transport,
            on_notification=backend._on_notification,
            on_lost=backend._on_lost,
            request_timeout=request_timeout,
        )
        backend._client = client
        async with trio.open_nursery() as nursery:
            backend._nursery = nursery
            nursery.start_soon(client.run)
            try:
                await backend._handshake()
                yield backend
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await backend.aclose()
                nursery.cancel_scope.cancel()

    async def _handshake(self) -> None:
        result = await self._call(m.INITIALIZE, m.InitializeParams(self._client_name))
        init = m.structure(result, m.InitializeResult)
        assert self._client is not None
        await self._client.notify(m.INITIALIZED, {})
        self.session_id = init.session_id
        self.environment_info = init.environment_info or {}
        self.extensions = frozenset(init.extensions or ())

    # -- plumbing --------------------------------------------------------------------

    async def _call(self, method: str, params: Any, *, timeout: float | None = None) -> Any:
        if self._client is None:
            raise TransportLostError("not connected")
        wire = m.unstructure(params) if not isinstance(params, dict) else params
        return await self._client.request(method, wire, timeout=timeout)

    def _on_notification(self, message: rpc.Notification) -> None:
        if message.method not in (m.OUTPUT, m.EXITED, m.CLOSED):
            log.debug("ignoring notification %s", message.method)
            return
        pid = message.params.get("processId") if isinstance(message.params, dict) else None
        handle = self._routes.get(pid) if isinstance(pid, str) else None
        if handle is not None:
            handle.deliver(message.method, message.params)

    def _on_lost(self, reason: str) -> None:
        for handle in list(self._routes.values()):
            handle.fail(reason)

    # -- ExecBackend ---------------------------------------------------------------------

    def _start_params(self, request: ExecRequest, process_id: str) -> m.StartParams:
        if request.cwd is not None:
            if not os.path.isabs(request.cwd):
                raise InvalidRequestError(f"a remote cwd must be absolute, not {request.cwd!r}")
            cwd_uri = _file_uri(request.cwd)
        else:
            cwd_uri = str(self.environment_info.get("cwd") or "file:///")
        if request.env is not None:
            env = dict(request.env)
        else:
            env = dict(REMOTE_DEFAULT_ENV)
            home = _uri_path(str(self.environment_info.get("userHomeDir", "")))
            if home:
                env["HOME"] = home
        tty_size = None
        if request.tty and request.size != _DEFAULT_SIZE:
            if m.START_TTY_SIZE not in self.extensions:
                raise InvalidRequestError(
                    f"this exec-server starts terminals at {_DEFAULT_SIZE[0]}x{_DEFAULT_SIZE[1]}"
                    " only (it does not announce process/start.ttySize)"
                )
            tty_size = list(request.size)
        return m.StartParams(
            process_id=process_id,
            argv=list(request.argv),
            cwd=cwd_uri,
            env=env,
            tty=request.tty,
            pipe_stdin=request.pipe_stdin,
            arg0=request.arg0,
            tty_size=tty_size,
        )

    async def start(self, request: ExecRequest) -> _RemoteProcess:
        if not isinstance(request, ExecRequest):
            raise InvalidRequestError(f"expected an ExecRequest, got {type(request).__name__}")
        if self._client is None or self._client.lost is not None:
            raise TransportLostError(
                self._client.lost if self._client else "this backend is not connected"
            )
        process_id = request.process_id or f"ue-{uuid.uuid4().hex[:16]}"
        if process_id in self._routes:
            raise InvalidRequestError(f"process id {process_id} is already in use")
        params = self._start_params(request, process_id)
        handle = _RemoteProcess(self, process_id)
        self._routes[process_id] = handle  # before the request: output may beat the answer
        try:
            await self._call(m.PROCESS_START, params)
        except RpcError as exc:
            self._routes.pop(process_id, None)
            if exc.code == rpc.INTERNAL_ERROR:
                raise LaunchError(
                    f"cannot start {request.argv[0]} on the exec-server: {exc.message}",
                    path=request.argv[0],
                ) from None
            raise InvalidRequestError(f"exec-server refused the start: {exc.message}") from None
        except BaseException:
            # Timed out or cancelled: the server may have started it all the same.
            self._routes.pop(process_id, None)
            if self._nursery is not None:
                self._nursery.start_soon(self._quiet_terminate, handle)
            raise
        return handle

    async def aclose(self) -> None:
        """Terminate what this client still runs and close the connection."""
        client = self._client
        if client is None or client.lost is not None:
            return
        async with trio.open_nursery() as nursery:
            for handle in list(self._routes.values()):
                nursery.start_soon(self._quiet_terminate, handle)

    async def _quiet_terminate(self, handle: _RemoteProcess) -> None:
        try:
            with trio.move_on_after(5):
                await handle.terminate()
        except UnifiedExecError as exc:
            log.debug("terminate of %s failed: %s", handle.process_id, exc)


class _WsTransport:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        # codex's websocket server leaves Nagle on; with our delayed ACKs every
        # exchange of small frames would stall ~40 ms. Acking at once after each
        # message avoids that (perf-baselines.md, finding 2). Best effort: the
        # socket is only reachable through trio-websocket's private stream.
        stream = getattr(ws, "_stream", None)
        self._sock = getattr(stream, "socket", None)

    async def send(self, text: str) -> None:
        await self._ws.send_message(text)

    async def receive(self) -> str | bytes | None:
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed:
            return None
        if self._sock is not None and _TCP_QUICKACK is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                self._sock = None
        return message

    async def aclose(self) -> None:
        await self._ws.aclose()


class _StdioTransport:
    def __init__(self, proc: trio.Process) -> None:
        self._proc = proc
        self._decoder = rpc.NdjsonDecoder(_MAX_FRAME)
        self._ready: deque[bytes] = deque()
        self.stderr_tail: deque[str] = deque(maxlen=20)

    async def send(self, text: str) -> None:
        assert self._proc.stdin is not None
        await self._proc.stdin.send_all(text.encode() + b"\n")

    async def receive(self) -> str | bytes | None:
        assert self._proc.stdout is not None
        while not self._ready:
            data = await self._proc.stdout.receive_some(65536)
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
            for item in self._decoder.feed(bytes(data)):
                if isinstance(item, rpc.MessageError):
                    log.warning("exec-server stdout: %s", item)
                else:
                    self._ready.append(item)
        return self._ready.popleft()

    async def drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        buf = b""
        while True:
            data = await self._proc.stderr.receive_some(65536)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                self.stderr_tail.append(text)
                log.debug("exec-server stderr: %s", text)

    async def aclose(self) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """EOF on the server's stdin (it then exits and kills its children), then reap."""
        if self._proc.stdin is not None:
            try:
                await self._proc.stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        with trio.move_on_after(5):
            await self._proc.wait()
        if self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                self._proc.kill()
            await self._proc.wait()
