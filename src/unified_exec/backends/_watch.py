"""One fd for a child's supervisor to wait on: an epoll of its pidfd and its output.

Trio waits for one fd per task. A task per stream and one for the exit cost a
scheduler pass each (~20 µs here) on every wake-up; one epoll that holds them all
lets a single task wait for "output or exit" and read in the same step. What it
waits for is chosen at each wait: output only while there is room in the queue
(that is the backpressure), the exit until it has been seen. Level-triggered, so
nothing ready is ever missed between two waits; a stream at EOF is dropped from
the set (it would stay readable for ever).
"""

from __future__ import annotations

import math
import select

import trio

__all__ = ["ChildWatch"]


class ChildWatch:
    __slots__ = ("_ep", "_scope", "_watched")

    def __init__(self) -> None:
        self._ep: select.epoll | None = select.epoll()  # close-on-exec
        self._watched: list[int] = []
        self._scope: trio.CancelScope | None = None

    def _watch(self, fds: list[int]) -> select.epoll:
        ep = self._ep
        if ep is None:
            raise trio.ClosedResourceError("the child's watch is closed")
        if fds != self._watched:
            for fd in self._watched:
                if fd not in fds:
                    ep.unregister(fd)
            for fd in fds:
                if fd not in self._watched:
                    ep.register(fd, select.EPOLLIN)
            self._watched = fds
        return ep

    async def wait(
        self, fds: list[int], *, deadline: float = math.inf, wakeable: bool = False
    ) -> list[int]:
        """Wait until one of ``fds`` is readable; return the ready ones.

        With a deadline, or ``wakeable`` (``wake()`` ends the wait), it may return
        none: the caller looks again at what it should wait for. With no fds it
        waits only for those (an empty epoll is never readable).
        """
        ep = self._watch(fds)
        if deadline == math.inf and not wakeable:
            await trio.lowlevel.wait_readable(ep.fileno())
        else:
            with trio.CancelScope(deadline=deadline) as scope:
                self._scope = scope
                try:
                    await trio.lowlevel.wait_readable(ep.fileno())
                finally:
                    self._scope = None
            if scope.cancelled_caught:
                return []
        return [fd for fd, _ in ep.poll(0)]

    async def wait_alone(self, fd: int) -> list[int]:
        """Wait for ``fd`` only, or for ``wake()``; the epoll's set is left as it is.

        While the queue is full the output fds must not wake us, but the exit must:
        waiting on the pidfd alone this way, rather than dropping the output fds from
        the epoll and adding them back when room opens, saves four epoll_ctl calls
        per throttle cycle (a 256 MiB stream throttles thousands of times).
        """
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                await trio.lowlevel.wait_readable(fd)
            finally:
                self._scope = None
        return [] if scope.cancelled_caught else [fd]

    def wake(self) -> None:
        """End a ``wakeable`` wait now (something it does not watch has changed)."""
        if self._scope is not None:
            self._scope.cancel()

    def close(self) -> None:
        """Synchronous, for teardown."""
        if self._ep is not None:
            trio.lowlevel.notify_closing(self._ep.fileno())
            self._ep.close()
            self._ep = None
