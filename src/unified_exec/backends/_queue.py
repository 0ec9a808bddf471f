"""The hand-off between a backend's reader tasks and the one consumer of its events.

Seqs are assigned here, at the moment an event is queued, so the queue order *is*
the seq order. Output is bounded by bytes: readers wait for room before they read
from the child again, which is how a slow consumer throttles the child. Exit,
close and failure are never held back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

import trio

from .._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent, ProcessEvent, Stream

__all__ = ["EventQueue"]


class EventQueue:
    def __init__(self, capacity_bytes: int) -> None:
        self._capacity = capacity_bytes
        self._items: deque[ProcessEvent] = deque()
        self._bytes = 0
        self._next_seq = 1
        self._ended = False
        self.changed = trio.lowlevel.ParkingLot()
        self.waiting_for_room = 0
        self.unbounded = False  # set when terminating: the end must never wait for room

    @property
    def full(self) -> bool:
        return not self.unbounded and self._bytes >= self._capacity

    async def wait_room(self) -> None:
        if not self.full:
            return
        self.waiting_for_room += 1
        self.changed.unpark_all()
        try:
            while self.full:
                await self.changed.park()
        finally:
            self.waiting_for_room -= 1

    def _put(self, event: ProcessEvent) -> None:
        if self._ended:
            return
        self._items.append(event)
        self._ended = isinstance(event, ClosedEvent | FailedEvent)
        self.changed.unpark_all()

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def put_output(self, stream: Stream, data: bytes) -> None:
        self._bytes += len(data)
        self._put(OutputEvent(seq=self._take_seq(), stream=stream, data=data))

    def put_exit(self, exit_code: int) -> None:
        self._put(ExitedEvent(seq=self._take_seq(), exit_code=exit_code))

    def put_closed(self) -> None:
        self._put(ClosedEvent(seq=self._take_seq()))

    def put_failed(self, message: str) -> None:
        self._put(FailedEvent(message=message))

    def notify(self) -> None:
        self.changed.unpark_all()

    async def events(self) -> AsyncIterator[ProcessEvent]:
        while True:
            while not self._items:
                await self.changed.park()
            event = self._items.popleft()
            if isinstance(event, OutputEvent):
                self._bytes -= len(event.data)
                self.changed.unpark_all()
            yield event
            if isinstance(event, ClosedEvent | FailedEvent):
                return
