"""Which UnifiedExecManager an MCP request's sessions live in, and when they end.

An MCP client must not see (or write to) another client's sessions, and closing an
MCP connection must end every process it started. So each stateful connection (a
streamable-HTTP session, which has an ``Mcp-Session-Id``) gets its own manager,
opened on its first tool call and closed from the connection's ``exit_stack`` —
the SDK's documented place for per-connection teardown — when the session ends
(client DELETE, idle timeout, server stop). Requests without a session id (stdio,
one client per process; or stateless 2026-era HTTP) share one manager that lives as
long as the server run: stdin EOF ends the stdio run, and with it every session.

Every manager runs in a task of the hub's own nursery, so its nursery is entered
and left by one task whatever request first needed it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext

from .._errors import InvalidRequestError
from ..backends._base import ExecBackend
from ..tools import UnifiedExecManager, open_manager

__all__ = ["Hub", "McpOptions", "open_hub"]

log = logging.getLogger("unified_exec.mcp")

_STATE_KEY = "unified_exec.manager"


@attrs.frozen
class McpOptions:
    """How the MCP front door bounds its tools.

    ``max_wait``: no tool call waits longer for output than this many seconds
    (MCP clients drop a call after about 60 s); at least 5 s, as Codex's empty
    ``write_stdin`` poll waits at least that long. ``max_output_tokens``: the cap on
    every call's ``max_output_tokens`` (Claude Code drops results over 25,000).
    ``progress_interval``: seconds between progress notifications while a call
    waits (sent only when the client passed a progress token).
    """

    max_wait: float = 30.0
    max_output_tokens: int = 10_000
    progress_interval: float = 1.0
    manager_options: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not 5.0 <= self.max_wait <= 300.0:
            raise InvalidRequestError("--max-wait must be between 5 and 300 seconds")
        if self.max_output_tokens < 1:
            raise InvalidRequestError("--max-output-tokens must be at least 1")
        if not self.progress_interval > 0:
            raise InvalidRequestError("the progress interval must be positive")

    @property
    def max_wait_ms(self) -> int:
        return int(self.max_wait * 1000)


class _Owned:
    """One connection's manager, kept alive by a task of the hub's nursery."""

    def __init__(self) -> None:
        self.manager: UnifiedExecManager | None = None
        self.ready = trio.Event()
        self.release = trio.Event()
        self.done = trio.Event()
        self.error: BaseException | None = None


class Hub:
    """The lifespan state of our MCP server: the backend and the managers."""

    def __init__(
        self,
        backend: ExecBackend,
        options: McpOptions,
        nursery: trio.Nursery,
        shared: UnifiedExecManager,
    ) -> None:
        self.backend = backend
        self.options = options
        self._nursery = nursery
        self.shared = shared
        self._owned: list[_Owned] = []
        self._closing = False

    def _manager_kwargs(self) -> dict[str, Any]:
        return manager_kwargs(self.options)

    async def manager_for(self, ctx: ServerRequestContext[Any, Any]) -> UnifiedExecManager:
        conn = connection_of(ctx)
        if conn is None or conn.session_id is None:
            return self.shared
        owned = conn.state.get(_STATE_KEY)
        if not isinstance(owned, _Owned):
            if self._closing:
                raise InvalidRequestError("the MCP server is shutting down")
            owned = _Owned()
            conn.state[_STATE_KEY] = owned
            self._owned.append(owned)
            conn.exit_stack.push_async_callback(self._release, owned)
            self._nursery.start_soon(self._keep, owned)
        await owned.ready.wait()
        if owned.manager is None:
            raise InvalidRequestError(f"cannot open a manager for this session: {owned.error!r}")
        return owned.manager

    async def _keep(self, owned: _Owned) -> None:
        try:
            async with open_manager(self.backend, **self._manager_kwargs()) as manager:
                owned.manager = manager
                owned.ready.set()
                await owned.release.wait()
                owned.manager = None  # no new calls reach it while it terminates
        except Exception as exc:  # its own failure domain: one session, not the server
            log.warning("an MCP session's manager failed: %r", exc)
            owned.error = exc
        finally:
            owned.ready.set()
            owned.done.set()
            if owned in self._owned:
                self._owned.remove(owned)

    async def _release(self, owned: _Owned) -> None:
        """The connection ended: terminate its sessions (the exit stack bounds this)."""
        owned.release.set()
        await owned.done.wait()

    async def aclose(self) -> None:
        self._closing = True
        owned = list(self._owned)
        for one in owned:
            one.release.set()
        for one in owned:
            await one.done.wait()


def manager_kwargs(options: McpOptions) -> dict[str, Any]:
    """Manager options that keep every call within the MCP ceilings."""
    kwargs: dict[str, Any] = {
        "output_token_limit": options.max_output_tokens,
        "max_write_stdin_yield_time_ms": options.max_wait_ms,
    }
    kwargs.update(options.manager_options)
    return kwargs


def connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection | None:
    """The request's ``Connection``.

    The lowlevel handler context carries it only inside its ``ServerSession``
    (mcp 2.3.0: ``ServerSession._connection``; the public ``Context.connection``
    exists for MCPServer tools only). Probed, not assumed: a later SDK that moves
    it makes every request share the server-wide manager, which still ends all
    sessions when the server stops.
    """
    conn = getattr(ctx.session, "_connection", None)
    return conn if isinstance(conn, Connection) else None


@asynccontextmanager
async def open_hub(
    backend_factory: Callable[[], AbstractAsyncContextManager[ExecBackend]],
    options: McpOptions,
) -> AsyncIterator[Hub]:
    """Open the backend and the shared manager; leaving ends every session."""
    async with backend_factory() as backend, trio.open_nursery() as nursery:
        async with open_manager(backend, **manager_kwargs(options)) as shared:
            hub = Hub(backend, options, nursery, shared)
            try:
                yield hub
            finally:
                with trio.CancelScope(shield=True):
                    await hub.aclose()
        nursery.cancel_scope.cancel()
