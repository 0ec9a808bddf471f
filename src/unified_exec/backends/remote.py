"""RemoteExecBackend: processes behind an exec-server (ours, or the real codex one).

The client is strict in what it sends (what codex 0.169.0 requires: a file URI cwd,
the full env, a writeId per write) and registers a process's route *before*
``process/start``, since notifications can beat the start response. The pieces:

- ``_remote_transports``: the websocket and stdio links;
- ``_remote_link``: one session across links (keepalive pings, reconnect, resume);
- ``_remote_process``: a process handle (seq order, gap fill, writes in frames).
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from .._errors import (
    ExecTimeoutError,
    InvalidRequestError,
    LaunchError,
    RemoteProtocolError,
    RpcError,
    TransportLostError,
    UnifiedExecError,
)
from .._groups import unwrap_single
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._protocol._limits import DEFAULT_LIMITS, Limits
from .._request import ExecRequest
from .._uri import file_uri
from .._validate import check_duration
from ._description import BASELINE_ENV, BackendDescription
from ._remote_description import EnvironmentStatus, describe_remote
from ._remote_fs import RemoteFileMethods
from ._remote_fswatch import MISSING_CHANGED, MissingWatcher
from ._remote_link import Link, LinkSettings
from ._remote_process import RemoteProcess
from ._remote_transports import StdioTransport, WsTransport, open_websocket, parse_ws_url
from ._rpc import Transport

__all__ = ["REMOTE_DEFAULT_ENV", "LinkSettings", "RemoteExecBackend"]

log = logging.getLogger("unified_exec.remote")

#: What a process gets when ``ExecRequest.env`` is None: the protocol needs the
#: child's whole environment, and the client cannot know the server's, so it sends
#: this (plus ``HOME`` from the server's environmentInfo when it tells).
REMOTE_DEFAULT_ENV: Mapping[str, str] = BASELINE_ENV

_DEFAULT_SIZE = (24, 80)  # what an exec-server's PTY starts with

# Kept for code (and tests) that reach them from here; they live in their own modules.
_RemoteProcess = RemoteProcess
_StdioTransport = StdioTransport
_WsTransport = WsTransport


class RemoteExecBackend(RemoteFileMethods):
    """Runs processes on an exec-server. Create it with ``connect`` or ``connect_stdio``.

    Also the server's files: ``read_file``, ``write_file``, ``get_metadata``,
    ``read_directory``, ``create_directory``, ``remove``, ``copy``, ``canonicalize``
    (see ``_remote_fs``), and its health: ``status()``.
    """

    def __init__(
        self,
        client_name: str = "unified_exec",
        request_timeout: float = 30.0,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Private: use connect() or connect_stdio()."""
        self._client_name = client_name
        self._request_timeout = request_timeout
        self._limits = limits
        self._routes: dict[str, RemoteProcess] = {}
        self._link: Link | None = None
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._description: tuple[object, object, BackendDescription] | None = None
        self._fs_watcher = MissingWatcher()

    @property
    def session_id(self) -> str | None:
        return self._link.session_id if self._link else None

    @property
    def environment_info(self) -> dict[str, Any]:
        return self._link.environment_info if self._link else {}

    @property
    def description(self) -> BackendDescription:
        """Where this backend runs processes, from the server's ``initialize`` answer:
        its cwd, home, shell and platform, ``REMOTE_DEFAULT_ENV`` plus its HOME, and
        what handles can do there (interrupt; resize and close-stdin where announced)."""
        link = self._link
        info = link.environment_info if link else {}
        ext = link.extensions if link else frozenset()
        cached = self._description
        if cached is None or cached[0] is not info or cached[1] is not ext:
            cached = self._description = (info, ext, describe_remote(info, ext))
        return cached[2]

    @property
    def extensions(self) -> frozenset[str]:
        return self._link.extensions if self._link else frozenset()

    @property
    def resumes(self) -> int:
        """How many times this backend resumed its session after a dropped link."""
        return self._link.resumes if self._link else 0

    async def status(self, *, timeout: float | None = None) -> EnvironmentStatus:
        """Ask the server ``environment/status`` (what the codex client calls to
        check an executor's health). ``timeout`` (default: the request timeout) bounds
        the whole call, a wait for a link being resumed included: ExecTimeoutError."""
        link = self._fs_link()
        limit = self._request_timeout
        if timeout is not None:
            limit = check_duration("timeout", timeout) or 0.0
        started = trio.current_time()
        with trio.move_on_after(limit):
            result = await link.call("environment/status", None, timeout=limit)
            status = result.get("status") if isinstance(result, dict) else None
            if not isinstance(status, str):
                raise RemoteProtocolError(f"environment/status answered {result!r}")
            return EnvironmentStatus(status, trio.current_time() - started)
        raise ExecTimeoutError(f"exec-server did not answer environment/status within {limit:g} s")

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
        link: LinkSettings | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> AsyncIterator[RemoteExecBackend]:
        """Connect to ``ws://HOST:PORT`` (or ``wss://``); ``token`` is sent as a bearer token.

        The session survives a dropped link: see ``LinkSettings`` for the keepalive
        and the reconnect budget (defaults: a ping every 5 s, 3 missed pongs drop the
        link, 30 s to resume before every process fails with
        ``exec-server transport disconnected: ...``).
        """
        target = parse_ws_url(url, token)
        check_duration("connect_timeout", connect_timeout)

        def opener() -> AbstractAsyncContextManager[Transport]:
            return open_websocket(
                target, max_message_size=limits.max_message_bytes, connect_timeout=connect_timeout
            )

        async with cls._running_with(
            opener, client_name, request_timeout, limits=limits,
            settings=link or LinkSettings(), resumable=True,
        ) as backend:  # fmt: skip
            yield backend

    @classmethod
    @asynccontextmanager
    async def connect_stdio(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        client_name: str = "unified_exec",
        request_timeout: float = 30.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> AsyncIterator[RemoteExecBackend]:
        """Spawn an exec-server command that speaks on its stdin/stdout and use it.

        Not resumable: when the child exits, its processes are gone with it.
        """
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
        transport = StdioTransport(proc, limits.max_message_bytes)
        try:
            with unwrap_single():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(transport.drain_stderr)
                    async with cls._running(
                        transport, client_name, request_timeout, limits=limits
                    ) as backend:
                        yield backend
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await transport.shutdown()

    @classmethod
    @asynccontextmanager
    async def _running(
        cls,
        transport: Transport,
        client_name: str,
        request_timeout: float,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> AsyncIterator[RemoteExecBackend]:
        """A backend over one given link (stdio, or a test's): never resumed."""

        @asynccontextmanager
        async def given() -> AsyncIterator[Transport]:
            yield transport

        async with cls._running_with(
            given, client_name, request_timeout, limits=limits,
            settings=LinkSettings(reconnect_budget=0), resumable=False,
        ) as backend:  # fmt: skip
            yield backend

    @classmethod
    @asynccontextmanager
    async def _running_with(
        cls,
        opener: Callable[[], AbstractAsyncContextManager[Transport]],
        client_name: str,
        request_timeout: float,
        *,
        limits: Limits,
        settings: LinkSettings,
        resumable: bool,
    ) -> AsyncIterator[RemoteExecBackend]:
        check_duration("request_timeout", request_timeout)
        backend = cls(client_name, request_timeout, limits=limits)
        link = Link(
            opener,
            client_name=client_name,
            request_timeout=request_timeout,
            limits=limits,
            settings=settings,
            resumable=resumable,
            on_notification=backend._on_notification,
            on_resumed=backend._on_resumed,
            on_lost=backend._on_lost,
        )
        backend._link = link
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                backend._nursery = nursery
                nursery.start_soon(link.run)
                await link.ready.wait()
                if link.first_error is not None:
                    raise link.first_error
                try:
                    yield backend
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        await backend.aclose()
                    nursery.cancel_scope.cancel()

    # -- plumbing --------------------------------------------------------------------

    async def _call(self, method: str, params: Any, *, timeout: float | None = None) -> Any:
        if self._link is None:
            raise TransportLostError("not connected")
        return await self._link.call(method, params, timeout=timeout)

    def _fs_link(self) -> Link:
        if self._link is None:
            raise TransportLostError("this backend is not connected")
        if self._closed:
            raise InvalidRequestError("this backend is closed")
        return self._link

    def _spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        """A short task of a process handle (its events' helper), in our nursery."""
        if self._nursery is None:
            raise RuntimeError("this backend is not running")
        self._nursery.start_soon(job)

    def _on_notification(self, message: rpc.Notification) -> bool:
        """Route one notification; True if a reader now has an event to take."""
        if message.method == MISSING_CHANGED:
            self._fs_watcher.notified(message.params)
            return False
        if message.method not in (m.OUTPUT, m.EXITED, m.CLOSED):
            log.debug("ignoring notification %s", message.method)
            return False
        pid = message.params.get("processId") if isinstance(message.params, dict) else None
        handle = self._routes.get(pid) if isinstance(pid, str) else None
        return handle is not None and handle.deliver(message.method, message.params)

    async def _on_resumed(self) -> None:
        self._fs_watcher.resumed()
        async with trio.open_nursery() as nursery:
            for handle in list(self._routes.values()):
                nursery.start_soon(handle.resync)

    def _on_lost(self, reason: str) -> None:
        for handle in list(self._routes.values()):
            handle.fail(reason)

    # -- ExecBackend ---------------------------------------------------------------------

    def _start_params(self, request: ExecRequest, process_id: str) -> m.StartParams:
        if request.cwd is not None:
            if not os.path.isabs(request.cwd):
                raise InvalidRequestError(f"a remote cwd must be absolute, not {request.cwd!r}")
            cwd_uri = file_uri(request.cwd)
        else:
            cwd_uri = self._default_cwd_uri()
        env = dict(request.env if request.env is not None else self.description.default_env)
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

    def _default_cwd_uri(self) -> str:
        described = self.description.cwd
        if described is None:
            return "file:///"
        try:
            return file_uri(described)
        except UnicodeEncodeError:  # not UTF-8 on the server: send back what it sent
            return str(self.environment_info.get("cwd"))

    async def start(self, request: ExecRequest) -> RemoteProcess:
        if not isinstance(request, ExecRequest):
            raise InvalidRequestError(f"expected an ExecRequest, got {type(request).__name__}")
        if self._closed:
            raise InvalidRequestError("this backend is closed")
        link = self._link
        if link is None or link.lost is not None:
            raise TransportLostError(link.lost if link else "this backend is not connected")
        process_id = request.process_id or f"ue-{uuid.uuid4().hex[:16]}"
        if process_id in self._routes:
            raise InvalidRequestError(f"process id {process_id} is already in use")
        params = self._start_params(request, process_id)
        handle = RemoteProcess(link, self._routes, process_id, self._spawn)
        self._routes[process_id] = handle  # before the request: output may beat the answer
        resumes = link.resumes
        try:
            await link.call(m.PROCESS_START, params, retry=True)
        except RpcError as exc:
            if link.resumes != resumes and "already exists" in exc.message:
                return self._started(handle, resumed=True)  # ours, sent again after a resume
            self._routes.pop(process_id, None)
            if exc.code == rpc.INTERNAL_ERROR:
                raise LaunchError(
                    f"cannot start {request.argv[0]} on the exec-server: {exc.message}",
                    path=request.argv[0],
                ) from None
            raise InvalidRequestError(f"exec-server refused the start: {exc.message}") from None
        except InvalidRequestError:
            self._routes.pop(process_id, None)  # never sent (not UTF-8, too big)
            raise
        except BaseException:
            # Timed out or cancelled: the server may have started it all the same.
            self._routes.pop(process_id, None)
            if self._nursery is not None and link.lost is None:
                self._nursery.start_soon(self._quiet_terminate, handle)
            raise
        return self._started(handle, resumed=link.resumes != resumes)

    def _started(self, handle: RemoteProcess, *, resumed: bool) -> RemoteProcess:
        handle.started = True
        if resumed and self._nursery is not None:
            # The session resumed while the start was in flight: the resume's re-read
            # skipped this process, so read what it may have missed now.
            self._nursery.start_soon(handle.resync)
        return handle

    async def aclose(self) -> None:
        """Terminate what this client still runs and close the connection.

        Afterwards ``start()`` is refused, as for every backend.
        """
        if self._closed:
            return
        self._closed = True
        link = self._link
        if link is None:
            return
        if link.lost is None:
            with trio.move_on_after(10):
                async with trio.open_nursery() as nursery:
                    for handle in list(self._routes.values()):
                        nursery.start_soon(self._quiet_terminate, handle)
        await link.close()

    async def _quiet_terminate(self, handle: RemoteProcess) -> None:
        try:
            with trio.move_on_after(5):
                await handle.terminate()
        except UnifiedExecError as exc:
            log.debug("terminate of %s failed: %s", handle.process_id, exc)
