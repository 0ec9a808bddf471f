"""A blocking front door: the agent tools for synchronous code.

``Manager`` runs a trio event loop in its own daemon thread and forwards each call
to it, so it can be used from any thread (calls are safe to make concurrently).
``close()`` — or leaving ``with``, or interpreter exit — terminates every session.

Lifetimes, and why they are built this way:

- The loop thread runs a ``_Loop``, which holds no reference to its ``Manager``:
  a Manager that is dropped without ``close()`` is collected, and its finalizer
  stops the loop (and so terminates its children).
- Finalizers and exit hooks only call ``TrioToken.run_sync_soon`` (safe from any
  thread, the GC included, and non-blocking); trio objects are touched in the loop
  thread only.
- A forked child inherits the Manager but not its thread: every hook is a no-op in
  another pid, and a call there raises instead of waiting for a loop that is not
  there.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

import trio

from ._errors import InvalidRequestError
from ._frontdoor import BackendFactory, open_backend_and_manager
from ._state import ProcessState
from .backends.local import LocalPtyBackend
from .tools._manager import UnifiedExecManager
from .tools._output import ExecCommandOutput

__all__ = ["Manager"]

log = logging.getLogger("unified_exec")

#: How long close() and interpreter exit wait for the loop thread to finish.
CLOSE_TIMEOUT: Final = 60.0


class _Loop:
    """The trio run of one Manager, in a thread of its own."""

    def __init__(self, factory: BackendFactory, options: dict[str, Any]) -> None:
        self.pid = os.getpid()
        self._factory = factory
        self._options = options
        self.token: trio.lowlevel.TrioToken | None = None
        self.manager: UnifiedExecManager | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="unified_exec.sync", daemon=True)

    def start(self) -> None:
        """Start the thread and wait until the manager is open (or failed to open)."""
        self.thread.start()
        self._ready.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            if self._ready.is_set():
                log.exception("the unified_exec.sync loop ended with an error")
            else:  # reported to the constructor
                self.error = exc
        finally:
            self.token = None
            self._ready.set()

    async def _main(self) -> None:
        async with open_backend_and_manager(self._factory, self._options) as manager:
            self.manager = manager
            self._stop = trio.Event()
            self.token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    @property
    def in_owner(self) -> bool:
        """False in a forked child: the thread and the trio run stayed in the parent."""
        return os.getpid() == self.pid

    def request_stop(self) -> None:
        """Ask the loop to close the manager; returns at once, safe from any thread."""
        token = self.token
        if token is None or not self.in_owner:
            return
        try:
            token.run_sync_soon(self._set_stop)
        except trio.RunFinishedError:
            pass

    def _set_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def join(self, timeout: float) -> None:
        if not self.in_owner or self.thread is threading.current_thread():
            return
        if self.thread.is_alive():
            self.thread.join(timeout)
            if self.thread.is_alive():
                log.warning("the unified_exec.sync loop did not stop within %s s", timeout)


#: Loops whose thread may still run; weak, so a finished loop is not kept.
_LIVE: weakref.WeakSet[_Loop] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    loops = [loop for loop in list(_LIVE) if loop.in_owner]
    for loop in loops:
        loop.request_stop()
    for loop in loops:
        loop.join(CLOSE_TIMEOUT)


atexit.register(_stop_all_at_exit)


class Manager:
    """Blocking twin of UnifiedExecManager (same methods, same arguments).

    ``backend_factory`` builds the backend inside the manager's event loop; its
    result may be a backend or an async context manager yielding one (for example
    ``lambda: RemoteExecBackend.connect(url)``). The default is a LocalPtyBackend.
    """

    def __init__(
        self,
        backend_factory: Callable[[], Any] | None = None,
        **manager_options: Any,
    ) -> None:
        self._closed = False
        loop = _Loop(backend_factory or LocalPtyBackend, manager_options)
        loop.start()
        self._loop = loop
        _LIVE.add(loop)
        # Dropped without close(): stop the loop (non-blocking; the GC may run this
        # in any thread). At interpreter exit _stop_all_at_exit waits for it instead.
        self._finalizer = weakref.finalize(self, loop.request_stop)
        self._finalizer.atexit = False

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = self._loop
        if not loop.in_owner:
            raise InvalidRequestError(
                f"this Manager belongs to process {loop.pid}; a forked child cannot use it"
            )
        token = loop.token
        if self._closed or token is None:
            raise InvalidRequestError("this Manager is closed")
        if threading.current_thread() is loop.thread:
            raise InvalidRequestError("Manager methods block; do not call them from its own loop")

        async def call() -> Any:
            return await fn(*args, **kwargs)

        try:
            return trio.from_thread.run(call, trio_token=token)
        except (trio.RunFinishedError, trio.Cancelled):
            raise InvalidRequestError("this Manager is closed") from None

    def _mgr(self) -> UnifiedExecManager:
        if self._loop.manager is None:  # pragma: no cover - start() raised instead
            raise InvalidRequestError("this Manager is closed")
        return self._loop.manager

    # -- the tools --------------------------------------------------------------------

    def exec_command(self, cmd: str, **kwargs: Any) -> ExecCommandOutput:
        result: ExecCommandOutput = self._call(self._mgr().exec_command, cmd, **kwargs)
        return result

    def write_stdin(self, session_id: int, chars: str = "", **kwargs: Any) -> ExecCommandOutput:
        result: ExecCommandOutput = self._call(self._mgr().write_stdin, session_id, chars, **kwargs)
        return result

    def handle_tool_call(self, name: str, arguments: str | Mapping[str, Any]) -> str:
        result: str = self._call(self._mgr().handle_tool_call, name, arguments)
        return result

    def tool_specs(self) -> list[dict[str, Any]]:
        return self._mgr().tool_specs()

    def terminate_all(self) -> dict[int, ProcessState]:
        """Kill every session; each one's state afterwards (never raises for one)."""
        states: dict[int, ProcessState] = self._call(self._mgr().terminate_all)
        return states

    @property
    def session_ids(self) -> list[int]:
        ids: list[int] = self._call(self._session_ids)
        return ids

    async def _session_ids(self) -> list[int]:
        await trio.lowlevel.checkpoint()
        return self._mgr().session_ids

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Terminate every session and stop the loop thread (idempotent).

        Teardown failures (a backend that cannot terminate or close) are logged on
        the ``unified_exec`` logger, never raised. In a forked child it does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._loop.request_stop()
        self._loop.join(CLOSE_TIMEOUT)

    def __enter__(self) -> Manager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
