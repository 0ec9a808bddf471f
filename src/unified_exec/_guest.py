"""Trio as a guest of the running asyncio loop (``trio.lowlevel.start_guest_run``).

Why a guest run: trio's scheduler then runs on the asyncio loop's own thread, in
callbacks the loop schedules, so a call costs a trio task — not a thread — and an
asyncio cancellation can reach the trio call as a cancel scope. Trio's I/O wait
moves to one helper thread of its own (reused, whatever the number of calls).

Trio allows one run per thread, so every ``aio.Manager`` on a loop shares one
``GuestHost``: started by the first, stopped when the last one closes.

Calls cross between the two worlds only through thread-safe doors: into trio with
``TrioToken.run_sync_soon`` (it wakes trio's I/O wait), out of trio by completing
an asyncio future, which trio code may do directly since it runs on the loop's
thread.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._errors import InvalidRequestError

if TYPE_CHECKING:
    import outcome

__all__ = ["GuestHost"]

log = logging.getLogger("unified_exec")

_HOSTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GuestHost] = (
    weakref.WeakKeyDictionary()
)


class GuestHost:
    """One trio guest run on one asyncio loop, with a nursery that calls run in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._users = 0
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop = trio.Event()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()

    # -- sharing one run per loop ------------------------------------------------------

    @classmethod
    async def acquire(cls) -> GuestHost:
        """This loop's host, started if need be; pair with ``release()``."""
        loop = asyncio.get_running_loop()
        while True:
            host = _HOSTS.get(loop)
            if host is None:
                host = cls(loop)
                host._start()
                _HOSTS[loop] = host
            if host._stopping:  # the last user is leaving: wait, then start anew
                await asyncio.shield(host._done)
                continue
            host._users += 1
            try:
                await asyncio.shield(host._ready)
            except BaseException:
                await host.release()
                raise
            return host

    async def release(self) -> None:
        """Drop one use; the last one stops the run and waits until it has ended."""
        self._users -= 1
        if self._users == 0 and not self._stopping:
            self._stopping = True
            try:
                self.call_soon(self._stop.set)
            except InvalidRequestError:
                pass  # the run ended already (a Ctrl-C took it down)
        if self._stopping:
            await asyncio.shield(self._done)

    def _start(self) -> None:
        try:
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=self.loop.call_soon,
                done_callback=self._finished,
                host_uses_signal_set_wakeup_fd=True,
            )
        except RuntimeError as exc:  # a trio run already owns this thread
            raise InvalidRequestError(
                f"cannot run trio as a guest of this asyncio loop: {exc}"
            ) from None

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set_result(None)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _finished(self, result: outcome.Outcome[None]) -> None:
        self._nursery = None
        self._token = None
        if _HOSTS.get(self.loop) is self:
            del _HOSTS[self.loop]
        try:
            result.unwrap()
        except BaseException as exc:
            if _has_keyboard_interrupt(exc):
                # trio took the Ctrl-C (its handler delivers it to the run's main
                # task); it has torn the run down, now the host must see it too.
                self.loop.call_soon(_raise_keyboard_interrupt)
            else:
                log.exception("the trio guest run ended with an error")
        if not self._ready.done():
            self._ready.set_exception(InvalidRequestError("the trio guest run ended at start"))
        if not self._done.done():
            self._done.set_result(None)

    # -- doors into trio -----------------------------------------------------------------

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` inside the trio run soon (from asyncio code or any thread)."""
        token = self._token
        if token is None:
            raise InvalidRequestError("the trio guest run has ended")
        try:
            token.run_sync_soon(fn)
        except trio.RunFinishedError:
            raise InvalidRequestError("the trio guest run has ended") from None

    def spawn(self, async_fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start a background task in the run's nursery; it must handle its own errors."""

        def start() -> None:
            if self._nursery is not None:
                self._nursery.start_soon(async_fn, *args)

        self.call_soon(start)

    async def call(self, async_fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``async_fn()`` as a trio task of this run and return its result.

        Cancelling the awaiting asyncio task cancels the trio task (its own cancel
        scope) and waits until it has unwound, so when the CancelledError reaches
        the caller the call's own cleanup is done.
        """
        call = _Call(self.loop)

        def spawn() -> None:
            if self._nursery is None:
                call.result.set_exception(InvalidRequestError("the trio guest run has ended"))
                call.finished.set_result(None)
                return
            self._nursery.start_soon(call.run, async_fn)

        self.call_soon(spawn)
        try:
            return await asyncio.shield(call.result)
        except asyncio.CancelledError:
            try:
                self.call_soon(call.cancel)
            except InvalidRequestError:
                pass  # the run is over: nothing is left to cancel
            else:
                await asyncio.shield(call.finished)
                if not call.result.cancelled():
                    call.result.exception()  # seen: nobody is left to take it
            raise


def _has_keyboard_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt  # asyncio lets it out of run_until_complete / run


class _Call:
    """One call's two futures: its outcome, and "its trio task has ended"."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.result: asyncio.Future[Any] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self._scope = trio.CancelScope()

    def cancel(self) -> None:  # in the trio run
        self._scope.cancel()

    async def run(self, async_fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            with self._scope:
                try:
                    value = await async_fn()
                except trio.Cancelled:
                    if not self._scope.cancel_called:  # the host stops under the call
                        self.result.set_exception(
                            InvalidRequestError("the Manager closed during the call")
                        )
                    raise
                except BaseException as exc:
                    self.result.set_exception(exc)
                else:
                    self.result.set_result(value)
        finally:
            if not self.result.done():
                self.result.cancel()
            self.finished.set_result(None)
