"""Waiting for a read's answer cheaply: a cancellation check instead of a pass when
the answer is there, and a timed park without a cancel scope when it is not.

``UnifiedExecProcess.read`` is the one user. A scheduler pass costs about as much as
the read itself here, and a ``move_on_after`` scope another ~8 µs; a 32-byte round
trip is made of little else.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, Final

import trio

__all__ = ["ReadTimer", "checkpoint", "park_until", "ready_checkpoint"]

# A read whose answer is already there returns without a scheduler pass (a pass
# costs ~20 µs here, as much as the read); every this-many such reads one does
# take a pass, so a loop that only reads cannot starve the other tasks.
_PASS_EVERY = 16
_unscheduled = 0  # reads since the last pass, in any run (only a fairness count)


async def ready_checkpoint() -> bool:
    """The checkpoint of a read that has its answer: cancellation, rarely a pass.

    True when it took a pass: other tasks ran, so the answer may have changed.
    """
    global _unscheduled
    _unscheduled += 1
    if _unscheduled >= _PASS_EVERY:
        await checkpoint()
        return True
    await trio.lowlevel.checkpoint_if_cancelled()
    return False


async def checkpoint() -> None:
    """A full pass (and the fairness count starts again)."""
    global _unscheduled
    _unscheduled = 0
    await trio.lowlevel.checkpoint()


async def park_until(lot: trio.lowlevel.ParkingLot, done: Callable[[], bool], wait: float) -> None:
    """Park on ``lot`` until ``done()`` or ``wait`` seconds pass.

    No cancel scope of its own (move_on_after costs ~8 µs to open and close, and
    its deadline makes each pass dearer): the run's ReadTimer wakes the lot when the
    deadline passes. Parking is the checkpoint: a cancelled caller is cancelled.
    """
    global _unscheduled
    _unscheduled = 0
    if math.isinf(wait):
        while not done():
            await lot.park()
        return
    deadline = trio.current_time() + wait
    timer = ReadTimer.current()
    entry = timer.add(deadline, lot)
    try:
        while True:
            await lot.park()
            if done() or trio.current_time() >= deadline:
                return
    finally:
        timer.discard(entry)


class ReadTimer:
    """Wakes the readers whose wait ran out: one system task per trio run, asleep
    until the earliest deadline (moved only when an earlier one comes)."""

    __slots__ = ("_heap", "_live", "_order", "_scope")
    _VAR: Final = trio.lowlevel.RunVar["ReadTimer"]("unified_exec read timer")

    def __init__(self) -> None:
        # [deadline, order, lot]: the lot is None once its reader has gone.
        self._heap: list[list[Any]] = []
        self._live = 0
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None

    @classmethod
    def current(cls) -> ReadTimer:
        try:
            return cls._VAR.get()
        except LookupError:
            timer = cls()
            cls._VAR.set(timer)
            trio.lowlevel.spawn_system_task(timer._run, name="unified_exec read timer")
            return timer

    def add(self, deadline: float, lot: trio.lowlevel.ParkingLot) -> list[Any]:
        entry = [deadline, next(self._order), lot]
        heapq.heappush(self._heap, entry)
        self._live += 1
        if self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline
        return entry

    def discard(self, entry: list[Any]) -> None:
        if entry[2] is not None:
            entry[2] = None
            self._live -= 1
            heap = self._heap
            if len(heap) > 64 and len(heap) > 2 * self._live:  # drop the gone ones
                self._heap = [e for e in heap if e[2] is not None]
                heapq.heapify(self._heap)

    async def _run(self) -> None:
        while True:
            heap = self._heap
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            heap = self._heap
            while heap and (heap[0][0] <= now or heap[0][2] is None):
                entry = heapq.heappop(heap)
                lot = entry[2]
                if lot is not None:
                    entry[2] = None
                    self._live -= 1
                    lot.unpark_all()
