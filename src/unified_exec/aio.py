"""An asyncio front door: the agent tools, awaitable inside a running asyncio loop.

The tools run on trio in a thread of their own (see ``unified_exec.sync``); each
call waits for it in a worker thread, so the asyncio loop is never blocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from .sync import Manager as _SyncManager
from .tools._output import ExecCommandOutput

__all__ = ["Manager"]


class Manager:
    """Awaitable twin of UnifiedExecManager: ``async with aio.Manager() as mgr:``."""

    def __init__(self, backend_factory: Callable[[], Any] | None = None, **options: Any) -> None:
        self._factory = backend_factory
        self._options = options
        self._sync: _SyncManager | None = None

    async def __aenter__(self) -> Manager:
        self._sync = await asyncio.to_thread(_SyncManager, self._factory, **self._options)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._sync is not None:
            await asyncio.to_thread(self._sync.close)

    def _manager(self) -> _SyncManager:
        if self._sync is None:
            raise RuntimeError("use aio.Manager as an async context manager")
        return self._sync

    async def exec_command(self, cmd: str, **kwargs: Any) -> ExecCommandOutput:
        return await asyncio.to_thread(self._manager().exec_command, cmd, **kwargs)

    async def write_stdin(
        self, session_id: int, chars: str = "", **kwargs: Any
    ) -> ExecCommandOutput:
        return await asyncio.to_thread(self._manager().write_stdin, session_id, chars, **kwargs)

    async def handle_tool_call(self, name: str, arguments: str | Mapping[str, Any]) -> str:
        return await asyncio.to_thread(self._manager().handle_tool_call, name, arguments)

    def tool_specs(self) -> list[dict[str, Any]]:
        return self._manager().tool_specs()

    async def terminate_all(self) -> None:
        await asyncio.to_thread(self._manager().terminate_all)
