"""What the blocking and asyncio front doors share: a backend made by a factory and
a manager over it, opened and closed as one block inside a trio run.

Both front doors run the tool layer on trio somewhere the caller's code is not
(a thread of its own, or a guest run), so neither may let teardown raise into a
place nobody is waiting: closing the backend is logged on failure, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from .backends._base import ExecBackend
from .tools._manager import UnifiedExecManager, open_manager

__all__ = ["BackendFactory", "open_backend_and_manager"]

log = logging.getLogger("unified_exec")

#: Builds the backend inside the trio run: returns a backend, or an async context
#: manager yielding one (for example ``lambda: RemoteExecBackend.connect(url)``).
BackendFactory = Callable[[], Any]


@asynccontextmanager
async def open_backend_and_manager(
    factory: BackendFactory, options: dict[str, Any]
) -> AsyncIterator[UnifiedExecManager]:
    """Make the backend, open a manager over it; on exit, close both (manager first)."""
    made = factory()
    if isinstance(made, AbstractAsyncContextManager):
        async with _closing_quietly(made) as backend, open_manager(backend, **options) as manager:
            yield manager
        return
    backend = made
    try:
        async with open_manager(backend, **options) as manager:
            yield manager
    finally:
        with trio.CancelScope(shield=True):
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing the backend failed")


@asynccontextmanager
async def _closing_quietly(cm: AbstractAsyncContextManager[Any]) -> AsyncIterator[ExecBackend]:
    """Enter ``cm``; an exception from its exit is logged (the body's propagates)."""
    backend = await cm.__aenter__()
    try:
        yield backend
    except BaseException as exc:
        if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        try:
            await cm.__aexit__(None, None, None)
        except Exception:
            log.exception("closing the backend failed")
