"""A blocking front door: the agent tools for synchronous code.

``Manager`` runs a trio event loop in its own daemon thread and forwards each call
to it, so it can be used from any thread (calls are safe to make concurrently).
``close()`` — or leaving ``with``, or interpreter exit — terminates every session.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import trio

from ._errors import InvalidRequestError
from .backends._base import ExecBackend
from .backends.local import LocalPtyBackend
from .tools._manager import UnifiedExecManager
from .tools._output import ExecCommandOutput

__all__ = ["Manager"]

T = TypeVar("T")


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
        self._factory = backend_factory or LocalPtyBackend
        self._options = manager_options
        self._token: trio.lowlevel.TrioToken | None = None
        self._manager: UnifiedExecManager | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="unified_exec.sync", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        self._finalizer = weakref.finalize(self, Manager._shutdown, self._token, self._stop,
                                           self._thread)  # fmt: skip
        atexit.register(self._finalizer)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the constructor if it never started
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()

    async def _main(self) -> None:
        made = self._factory()
        if hasattr(made, "__aenter__"):
            async with made as backend:
                await self._serve(backend)
        else:  # a bare backend
            try:
                await self._serve(made)
            finally:
                with trio.CancelScope(shield=True):
                    await made.aclose()

    async def _serve(self, backend: ExecBackend) -> None:
        async with UnifiedExecManager(backend, **self._options) as manager:
            self._manager = manager
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._closed or self._token is None:
            raise InvalidRequestError("this Manager is closed")
        if threading.current_thread() is self._thread:
            raise InvalidRequestError("Manager methods block; do not call them from its own loop")

        async def call() -> Any:
            return await fn(*args, **kwargs)

        try:
            return trio.from_thread.run(call, trio_token=self._token)
        except trio.RunFinishedError:
            raise InvalidRequestError("this Manager is closed") from None

    # -- the tools --------------------------------------------------------------------

    def exec_command(self, cmd: str, **kwargs: Any) -> ExecCommandOutput:
        assert self._manager is not None
        result: ExecCommandOutput = self._call(self._manager.exec_command, cmd, **kwargs)
        return result

    def write_stdin(self, session_id: int, chars: str = "", **kwargs: Any) -> ExecCommandOutput:
        assert self._manager is not None
        result: ExecCommandOutput = self._call(
            self._manager.write_stdin, session_id, chars, **kwargs
        )
        return result

    def handle_tool_call(self, name: str, arguments: str | Mapping[str, Any]) -> str:
        assert self._manager is not None
        result: str = self._call(self._manager.handle_tool_call, name, arguments)
        return result

    def tool_specs(self) -> list[dict[str, Any]]:
        assert self._manager is not None
        return self._manager.tool_specs()

    def terminate_all(self) -> None:
        assert self._manager is not None
        self._call(self._manager.terminate_all)

    @property
    def session_ids(self) -> list[int]:
        assert self._manager is not None
        ids: list[int] = self._call(self._session_ids)
        return ids

    async def _session_ids(self) -> list[int]:
        assert self._manager is not None
        await trio.lowlevel.checkpoint()
        return self._manager.session_ids

    # -- lifetime -----------------------------------------------------------------------

    @staticmethod
    def _shutdown(
        token: trio.lowlevel.TrioToken | None, stop: trio.Event | None, thread: threading.Thread
    ) -> None:
        if token is not None and stop is not None:
            try:
                trio.from_thread.run_sync(stop.set, trio_token=token)
            except trio.RunFinishedError:
                pass
        if thread is not threading.current_thread():
            thread.join(timeout=30)

    def close(self) -> None:
        """Terminate every session and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()
        atexit.unregister(self._finalizer)

    def __enter__(self) -> Manager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
