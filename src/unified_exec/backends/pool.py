"""PoolBackend: one ExecBackend over many exec-servers (pods behind a headless Service).

Why: an eval or RL run outgrows one machine, and Kubernetes already does placement
of pods; the client only has to spread *processes* over the servers it is given.
So there is no scheduler here, only three rules:

- placement: the live server with the fewest live processes (optionally capped);
- a process stays on the server that started it for life (``server_for``), so a
  resume goes back to the same server;
- health: every ``health_interval`` s each member is asked ``environment/status``
  (codex's own health call) and, where the server serves it, ``GET /readyz`` (ours
  answers 503 while draining), each within ``health_timeout`` s. A server that does
  not answer, or answers not-ready, is marked unhealthy and takes no new work, but
  keeps its connection: once it answers again it is healthy again at once. Its
  processes fail with ``TransportLostError`` only if its link is lost (the member's
  keepalive and reconnect budget, ``POOL_LINK``: about 4 s of silence); a lost member
  is reconnected, with a fresh session, when ``/readyz`` answers again.

Each member is one ``RemoteExecBackend`` (public API only), kept by a supervisor
task that checks health and reconnects. Discovery (a static list, or DNS A records
of a headless Service) lives in ``_pool_discovery``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .._errors import (
    ExecTimeoutError,
    InvalidRequestError,
    RemoteProtocolError,
    RpcError,
    TransportLostError,
    UnifiedExecError,
)
from .._events import ClosedEvent, FailedEvent, ProcessEvent, WriteStatus
from .._groups import unwrap_single
from .._protocol import _jsonrpc as rpc
from .._request import ExecRequest
from .._validate import check_duration
from ._base import ProcessHandle, capabilities_of
from ._description import BackendDescription, Capability
from ._pool_discovery import DnsDiscovery, probe_readyz
from ._remote_description import describe_pool
from ._remote_link import LinkSettings
from ._remote_process import RemoteProcess
from .remote import RemoteExecBackend

__all__ = ["DnsDiscovery", "PoolBackend", "ServerState"]

log = logging.getLogger("unified_exec.pool")

#: A member's link: pings every second, gives up resuming after 2 s, so the
#: processes of a dead server fail within a few seconds rather than 30.
POOL_LINK = LinkSettings(ping_interval=1.0, ping_misses=2, reconnect_budget=2.0)


@attrs.frozen
class ServerState:
    """One server as the pool sees it (a snapshot)."""

    url: str
    healthy: bool
    live: int
    started: int
    draining: bool
    last_error: str | None
    connected: bool = False  # a session is open (a server can be connected, not healthy)
    status: str | None = None  # the last ``environment/status`` answer, if any


class _Member:
    def __init__(self, url: str) -> None:
        self.url = url
        self.backend: RemoteExecBackend | None = None
        self.healthy = False
        self.live = 0
        self.started = 0
        self.draining = False
        self.last_error: str | None = None
        self.status: str | None = None
        self.down = trio.Event()  # set to make the supervisor drop the connection
        self.cancel = trio.CancelScope()

    def state(self) -> ServerState:
        return ServerState(
            self.url, self.healthy, self.live, self.started, self.draining, self.last_error,
            connected=self.backend is not None, status=self.status,
        )  # fmt: skip


class _PoolHandle:
    """A member's handle, counted: the member's load drops when its events end."""

    def __init__(self, inner: RemoteProcess, member: _Member) -> None:
        self._inner = inner
        self._member = member
        self._done = False
        self.capabilities = capabilities_of(inner)

    def _release(self) -> None:
        if not self._done:
            self._done = True
            self._member.live -= 1

    @property
    def process_id(self) -> str:
        return self._inner.process_id

    async def events(self) -> AsyncIterator[ProcessEvent]:
        try:
            async for event in self._inner.events():
                if isinstance(event, ClosedEvent | FailedEvent):
                    self._release()
                yield event
        finally:
            self._release()

    async def write(self, data: bytes) -> WriteStatus:
        return await self._inner.write(data)

    async def terminate(self) -> None:
        await self._inner.terminate()

    async def interrupt(self) -> None:
        await self._inner.interrupt()

    async def resize(self, rows: int, cols: int) -> None:
        await self._inner.resize(rows, cols)

    async def close_stdin(self) -> None:
        if Capability.CLOSE_STDIN not in self.capabilities:
            raise InvalidRequestError(
                f"this process cannot close its stdin (its server {self._member.url} "
                "does not announce process/closeStdin)"
            )
        await self._inner.close_stdin()


class PoolBackend:
    """Processes spread over many exec-servers. Create it with ``connect``."""

    def __init__(
        self,
        *,
        token: str | None,
        max_per_server: int | None,
        health_interval: float,
        health_timeout: float,
        connect_timeout: float,
        link: LinkSettings,
    ) -> None:
        """Private: use connect()."""
        self._token = token
        self._cap = max_per_server
        self._health_interval = check_duration("health_interval", health_interval) or 0.0
        self._health_timeout = check_duration("health_timeout", health_timeout) or 0.0
        self._connect_timeout = connect_timeout
        self._link = link
        self._members: dict[str, _Member] = {}
        self._where: dict[str, str] = {}  # process id -> server url
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._changed = trio.Event()

    # -- construction ------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        servers: Sequence[str] | DnsDiscovery,
        *,
        token: str | None = None,
        max_per_server: int | None = None,
        health_interval: float = 1.0,
        health_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        link: LinkSettings = POOL_LINK,
        wait_for: int = 1,
    ) -> AsyncIterator[PoolBackend]:
        """Keep a connection to every server in ``servers`` and yield the pool.

        ``servers`` is a list of ``ws://`` URLs, or a ``DnsDiscovery`` (a headless
        Service's name, re-resolved periodically: new pods are admitted, vanished
        ones drained). Waits until ``wait_for`` servers are healthy (at most
        ``connect_timeout`` s); the rest join when they answer. Health is checked
        every ``health_interval`` s, each check within ``health_timeout`` s (see the
        module docstring).
        """
        if max_per_server is not None and max_per_server < 1:
            raise InvalidRequestError("max_per_server must be >= 1")
        if isinstance(servers, str):
            raise InvalidRequestError("servers must be a list of URLs or a DnsDiscovery")
        pool = cls(
            token=token,
            max_per_server=max_per_server,
            health_interval=health_interval,
            health_timeout=health_timeout,
            connect_timeout=connect_timeout,
            link=link,
        )
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                pool._nursery = nursery
                if isinstance(servers, DnsDiscovery):
                    nursery.start_soon(servers.run, pool._reconcile)
                else:
                    pool._reconcile(list(servers))
                with trio.move_on_after(connect_timeout):
                    while sum(mm.healthy for mm in pool._members.values()) < wait_for:
                        await pool._changed.wait()
                try:
                    yield pool
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(15):
                        await pool.aclose()
                    nursery.cancel_scope.cancel()

    # -- membership --------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _reconcile(self, urls: Sequence[str]) -> None:
        """Admit servers new in ``urls``; drain the ones that are gone."""
        wanted = set(urls)
        for url in urls:
            member = self._members.get(url)
            if member is None and not self._closed and self._nursery is not None:
                member = self._members[url] = _Member(url)
                self._nursery.start_soon(self._supervise, member)
            elif member is not None and member.draining:
                member.draining = False  # came back before it was drained
        for url, member in list(self._members.items()):
            if url not in wanted:
                member.draining = True
        self._notify()

    async def _supervise(self, member: _Member) -> None:
        """Keep ``member`` connected while it is healthy; reconnect when it returns."""
        with member.cancel:
            while not (member.draining and member.live == 0):
                try:
                    async with RemoteExecBackend.connect(
                        member.url,
                        token=self._token,
                        connect_timeout=self._connect_timeout,
                        link=self._link,
                    ) as backend:
                        member.backend = backend
                        member.down = trio.Event()
                        self._notify()
                        await self._watch(member, backend)
                except UnifiedExecError as exc:
                    member.last_error = str(exc)
                finally:
                    member.healthy = False
                    member.backend = None
                    member.status = None
                    self._notify()
                await trio.sleep(self._health_interval)
                while not member.draining and not await probe_readyz(member.url):
                    await trio.sleep(self._health_interval)
        self._members.pop(member.url, None)
        self._notify()

    async def _watch(self, member: _Member, backend: RemoteExecBackend) -> None:
        """Check ``member``'s health every interval, marking it healthy or not; return
        when its link is lost (or it is drained empty), to reconnect."""
        while not member.down.is_set():
            if member.draining and member.live == 0:
                return
            try:
                why = await self._check(member, backend)
            except TransportLostError as exc:
                member.last_error = str(exc)
                return
            if member.healthy != (why is None):
                log.info("%s is %s", member.url, "healthy" if why is None else f"unhealthy: {why}")
                member.healthy = why is None
                self._notify()
            member.last_error = why
            with trio.move_on_after(self._health_interval):
                await member.down.wait()

    async def _check(self, member: _Member, backend: RemoteExecBackend) -> str | None:
        """None if ``member`` answers ``environment/status`` "ready" (and ``/readyz``
        does not say 503); else why not. TransportLostError: its link is gone."""
        timeout = self._health_timeout
        try:
            answer = await backend.status(timeout=timeout)
        except ExecTimeoutError:
            member.status = None
            return f"no answer to environment/status within {timeout:g} s"
        except RpcError as exc:
            member.status = None
            if exc.code != rpc.METHOD_NOT_FOUND:  # a server without it: /readyz alone
                return f"environment/status failed: {exc}"
        except RemoteProtocolError as exc:
            member.status = None
            return str(exc)
        else:
            member.status = answer.status
            if not answer.ready:
                return f"environment/status says {answer.status!r}"
        if not await probe_readyz(member.url, timeout=timeout):
            return "not ready (GET /readyz)"
        return None

    # -- introspection -------------------------------------------------------------------

    @property
    def description(self) -> BackendDescription:
        """Location POOL; cwd, home, shell, platform and base env where every member
        agrees (else None / the baseline: also while one is not connected, since a
        process may land on it); capabilities all connected members share."""
        members = list(self._members.values())
        return describe_pool(
            [mm.backend.description for mm in members if mm.backend is not None],
            complete=all(mm.backend is not None for mm in members),
        )

    @property
    def servers(self) -> list[ServerState]:
        """Each known server's health and load."""
        return [mm.state() for mm in self._members.values()]

    def server_for(self, process_id: str) -> str:
        """The URL of the server that runs (or ran) ``process_id``."""
        try:
            return self._where[process_id]
        except KeyError:
            raise InvalidRequestError(f"no process {process_id} in this pool") from None

    # -- ExecBackend -----------------------------------------------------------------------

    def _pick(self, tried: set[str]) -> _Member | None:
        ready = [
            mm
            for mm in self._members.values()
            if mm.healthy and not mm.draining and mm.backend is not None and mm.url not in tried
            and (self._cap is None or mm.live < self._cap)
        ]  # fmt: skip
        return min(ready, key=lambda mm: (mm.live, mm.started)) if ready else None

    async def start(self, request: ExecRequest) -> ProcessHandle:
        if not isinstance(request, ExecRequest):
            raise InvalidRequestError(f"expected an ExecRequest, got {type(request).__name__}")
        if self._closed:
            raise InvalidRequestError("this backend is closed")
        if request.process_id is None:
            request = attrs.evolve(request, process_id=f"ue-{uuid.uuid4().hex[:16]}")
        process_id = request.process_id
        assert process_id is not None
        if process_id in self._where:
            raise InvalidRequestError(f"process id {process_id} is already in use")
        tried: set[str] = set()
        last: TransportLostError | None = None
        while True:
            member = self._pick(tried)
            if member is None:
                if last is not None:
                    raise last
                raise TransportLostError("no live exec-server in the pool has room")
            backend = member.backend
            assert backend is not None
            member.live += 1  # reserved before the await: concurrent starts spread
            try:
                inner = await backend.start(request)
            except TransportLostError as exc:
                member.live -= 1
                member.down.set()
                tried.add(member.url)
                last = exc
                continue
            except BaseException:
                member.live -= 1
                raise
            member.started += 1
            self._where[process_id] = member.url
            return _PoolHandle(inner, member)

    async def aclose(self) -> None:
        """Terminate every process the pool runs and close every connection."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(12):
            async with trio.open_nursery() as nursery:
                for member in list(self._members.values()):
                    if member.backend is not None:
                        nursery.start_soon(member.backend.aclose)
        for member in list(self._members.values()):
            member.cancel.cancel()

    def __repr__(self) -> str:
        parts: list[Any] = [f"{s.url}:{s.live}{'' if s.healthy else '!'}" for s in self.servers]
        return f"<PoolBackend {' '.join(parts)}>"
