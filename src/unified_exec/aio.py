"""An asyncio front door: the agent tools, awaitable inside a running asyncio loop.

The tools run on trio as a guest of the asyncio loop (see ``_guest``): no thread
is held per call, the loop is never blocked, and cancelling the awaiting asyncio
task cancels the trio call (a cancelled ``exec_command`` terminates the session it
started, since nobody learned its id). Every ``aio.Manager`` of one loop shares
one trio guest run; leave ``async with`` (or ``await aclose()``) before the loop
ends, as with any asyncio resource.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import trio

from ._errors import InvalidRequestError
from ._frontdoor import open_backend_and_manager
from ._guest import GuestHost
from ._state import ProcessState
from .backends.local import LocalPtyBackend
from .tools._manager import UnifiedExecManager
from .tools._output import ExecCommandOutput

__all__ = ["Manager"]

log = logging.getLogger("unified_exec")


class Manager:
    """Awaitable twin of UnifiedExecManager: ``async with aio.Manager() as mgr:``.

    ``backend_factory`` is called inside the trio run; it may return a backend or an
    async context manager yielding one (default: a LocalPtyBackend).
    """

    def __init__(self, backend_factory: Callable[[], Any] | None = None, **options: Any) -> None:
        self._factory = backend_factory or LocalPtyBackend
        self._options = options
        self._host: GuestHost | None = None
        self._manager: UnifiedExecManager | None = None
        self._stop = trio.Event()
        self._scope = trio.CancelScope()
        self._closed: asyncio.Future[None] | None = None

    # -- lifetime -----------------------------------------------------------------------

    async def __aenter__(self) -> Manager:
        if self._host is not None or self._closed is not None:
            raise InvalidRequestError("an aio.Manager can be opened once")
        host = await GuestHost.acquire()
        ready: asyncio.Future[None] = host.loop.create_future()
        self._closed = host.loop.create_future()
        self._host = host
        try:
            host.spawn(self._serve, ready)
            await asyncio.shield(ready)
        except BaseException:
            # Cancelled or failed while opening: undo whatever was opened, then let it out.
            if not ready.done() or ready.exception() is None:
                try:
                    host.call_soon(self._scope.cancel)
                except InvalidRequestError:
                    pass  # the guest run is over, and everything in it
            await self._finish()
            raise
        return self

    async def _serve(self, ready: asyncio.Future[None]) -> None:
        """The manager's whole life, as one trio task of the guest run."""
        assert self._closed is not None
        try:
            with self._scope:
                async with open_backend_and_manager(self._factory, self._options) as manager:
                    self._manager = manager
                    ready.set_result(None)
                    await self._stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("closing the aio.Manager failed")
        finally:
            self._manager = None
            if not ready.done():
                ready.set_exception(InvalidRequestError("opening the aio.Manager was cancelled"))
            self._closed.set_result(None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Terminate every session and close the backend (idempotent)."""
        host = self._host
        if host is None or self._closed is None:
            return
        if not self._closed.done():
            try:
                host.call_soon(self._stop.set)
            except InvalidRequestError:
                pass  # the guest run is over, and everything in it
        await self._finish()

    async def _finish(self) -> None:
        host, self._host = self._host, None
        if host is None:
            return
        try:
            if self._closed is not None:
                await asyncio.shield(self._closed)
        finally:
            await host.release()

    # -- the tools --------------------------------------------------------------------

    def _mgr(self) -> UnifiedExecManager:
        if self._manager is None or self._host is None:
            raise InvalidRequestError("use aio.Manager as an async context manager")
        return self._manager

    async def _call(self, call: Callable[[UnifiedExecManager], Awaitable[Any]]) -> Any:
        manager = self._mgr()
        assert self._host is not None
        return await self._host.call(lambda: call(manager))

    async def exec_command(self, cmd: str, **kwargs: Any) -> ExecCommandOutput:
        result: ExecCommandOutput = await self._call(lambda m: m.exec_command(cmd, **kwargs))
        return result

    async def write_stdin(
        self, session_id: int, chars: str = "", **kwargs: Any
    ) -> ExecCommandOutput:
        result: ExecCommandOutput = await self._call(
            lambda m: m.write_stdin(session_id, chars, **kwargs)
        )
        return result

    async def handle_tool_call(self, name: str, arguments: str | Mapping[str, Any]) -> str:
        result: str = await self._call(lambda m: m.handle_tool_call(name, arguments))
        return result

    def tool_specs(self) -> list[dict[str, Any]]:
        return self._mgr().tool_specs()

    @property
    def session_ids(self) -> list[int]:
        """The open sessions (trio runs on this thread, so this reads them directly)."""
        return self._mgr().session_ids

    async def terminate_all(self) -> dict[int, ProcessState]:
        result: dict[int, ProcessState] = await self._call(lambda m: m.terminate_all())
        return result
