"""The hand-off between a backend's reader tasks and the one consumer of its events.

Seqs are assigned here, at the moment an event is queued, so the queue order *is*
the seq order. Output is bounded by bytes: readers wait for room before they read
from the child again, which is how a slow consumer throttles the child. Exit,
close and failure are never held back.

A consumer may connect a *sink* (``EventIterator.connect``): while it waits with
nothing in hand and nothing is queued, a new event is offered to the sink first,
right in the reader's task. A sink that takes it saves a task switch per event
(the round trip, a throughput chunk); one that refuses (its own reader is behind)
leaves it queued, as without a sink. Either way the order is the seq order: an
event goes to the sink only when every earlier one has been delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from .._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent, ProcessEvent, Stream

__all__ = ["EventIterator", "EventQueue", "Sink"]

Sink = Callable[[ProcessEvent], bool]
"""Takes an event (True) or leaves it to be queued (False); must not raise."""


class EventQueue:
    def __init__(self, capacity_bytes: int) -> None:
        self._capacity = capacity_bytes
        self._items: deque[ProcessEvent] = deque()
        self._bytes = 0
        self._next_seq = 1
        self._ended = False  # the terminal event was put (queued or taken by the sink)
        self.changed = trio.lowlevel.ParkingLot()
        self.waiting_for_room = 0
        self.unbounded = False  # set when terminating: the end must never wait for room
        self._sink: Sink | None = None
        self._consumer_idle = False  # the consumer is parked with nothing in hand

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
        self._ended = isinstance(event, ClosedEvent | FailedEvent)
        sink = self._sink
        if sink is not None and self._consumer_idle and not self._items and sink(event):
            if self._ended:
                self.changed.unpark_all()  # the consumer learns that the stream is over
            return
        self._items.append(event)
        if isinstance(event, OutputEvent):
            self._bytes += len(event.data)
        self.changed.unpark_all()

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def put_output(self, stream: Stream, data: bytes) -> None:
        self._put(OutputEvent(seq=self._take_seq(), stream=stream, data=data))

    def put_exit(self, exit_code: int) -> None:
        self._put(ExitedEvent(seq=self._take_seq(), exit_code=exit_code))

    def put_closed(self) -> None:
        self._put(ClosedEvent(seq=self._take_seq()))

    def put_failed(self, message: str) -> None:
        self._put(FailedEvent(message=message))

    def notify(self) -> None:
        self.changed.unpark_all()

    def events(self) -> EventIterator:
        return EventIterator(self)


class EventIterator:
    """The consumer's side: every event once, in seq order, ending after Closed/Failed."""

    __slots__ = ("_done", "_queue")

    def __init__(self, queue: EventQueue) -> None:
        self._queue = queue
        self._done = False

    def connect(self, sink: Sink) -> None:
        """Offer new events to ``sink`` while this iterator waits with nothing queued."""
        self._queue._sink = sink

    def __aiter__(self) -> EventIterator:
        return self

    async def __anext__(self) -> ProcessEvent:
        q = self._queue
        if self._done:
            raise StopAsyncIteration
        if not q._items:
            q._consumer_idle = True
            try:
                while not q._items:
                    if q._ended:  # the sink took the terminal event
                        self._finish()
                        raise StopAsyncIteration
                    await q.changed.park()
            finally:
                q._consumer_idle = False
        event = q._items.popleft()
        if isinstance(event, OutputEvent):
            q._bytes -= len(event.data)
            q.changed.unpark_all()
        elif isinstance(event, ClosedEvent | FailedEvent):
            self._finish()
        return event

    def _finish(self) -> None:
        self._done = True
        self._queue._sink = None

    async def aclose(self) -> None:
        self._finish()
        await trio.lowlevel.checkpoint()
