"""The hand-off between a local child's supervisor and the one consumer of its events.

Seqs are assigned here, at the moment an event is put, so the put order *is* the
seq order. Output is bounded by bytes: the supervisor reads from the child only
while there is room (``full`` is false), which is how a slow consumer throttles the
child. Exit, close and failure are never held back.

A consumer may connect a *sink* (``EventIterator.connect``): whenever nothing is
queued and the consumer holds no event, a new event is offered to the sink first,
right in the producer's task. A consumer that only ever uses the sink needs no
task of its own. One that refuses an event (its own reader is behind) leaves it
queued and must then iterate to take it; until it has caught up, new events queue
behind it. Either way the order is the seq order: an event goes to the sink only
when every earlier one has been delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from .._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent, ProcessEvent, Stream
from ._base import Sink

__all__ = ["EventIterator", "EventQueue", "Sink"]


class EventQueue:
    __slots__ = (
        "_bytes",
        "_capacity",
        "_consumer_idle",
        "_ended",
        "_items",
        "_next_seq",
        "_ready",
        "_room",
        "_sink",
        "on_room",
        "unbounded",
        "waiting_for_room",
    )

    def __init__(self, capacity_bytes: int) -> None:
        self._capacity = capacity_bytes
        # Made on first use, as are the lots: a consumer that only uses the sink
        # never queues (an idle session is ~1 KiB smaller).
        self._items: deque[ProcessEvent] | None = None
        self._bytes = 0
        self._next_seq = 1
        self._ended = False  # the terminal event was put (queued or taken by the sink)
        self._ready: trio.lowlevel.ParkingLot | None = None  # the consumer waits here
        self._room: trio.lowlevel.ParkingLot | None = None  # wait_room() waits here
        self.waiting_for_room = False  # the producer is throttled (set by it)
        # Called when room opens while waiting_for_room: the producer's wake-up
        # when it waits for room and for something else at once.
        self.on_room: Callable[[], None] | None = None
        self.unbounded = False  # set when terminating: the end must never wait for room
        self._sink: Sink | None = None
        self._consumer_idle = False  # the consumer holds no event (parked, or none yet)

    @property
    def full(self) -> bool:
        return not self.unbounded and self._bytes >= self._capacity

    async def wait_room(self) -> None:
        """Until there is room: for a producer with nothing else to wait for."""
        if not self.full:
            await trio.lowlevel.checkpoint()
            return
        if self._room is None:
            self._room = trio.lowlevel.ParkingLot()
        self.waiting_for_room = True
        try:
            while self.full:
                await self._room.park()
        finally:
            self.waiting_for_room = False

    def _room_opened(self) -> None:
        if self._room is not None:
            self._room.unpark_all()
        if self.on_room is not None:
            self.on_room()

    def _wake_consumer(self) -> None:
        if self._ready is not None:
            self._ready.unpark_all()

    def _put(self, event: ProcessEvent) -> None:
        if self._ended:
            return
        self._ended = isinstance(event, ClosedEvent | FailedEvent)
        sink = self._sink
        items = self._items
        if sink is not None and self._consumer_idle and not items and sink(event):
            if self._ended:
                self._sink = None  # nothing follows; and the consumer is not kept alive
                self._wake_consumer()  # a parked consumer learns that the stream is over
            return
        if items is None:
            items = self._items = deque()
        items.append(event)
        if type(event) is OutputEvent:
            self._bytes += len(event.data)
        self._wake_consumer()

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _popleft(self) -> ProcessEvent:
        assert self._items is not None
        event = self._items.popleft()
        if type(event) is OutputEvent:
            self._bytes -= len(event.data)
            # A throttled producer is woken once half the queue is free, not at the
            # first byte of room: it then reads a batch per wake-up, not a chunk.
            if self.waiting_for_room and self._bytes <= self._capacity // 2:
                self._room_opened()
        return event

    def put_output(self, stream: Stream, data: bytes) -> None:
        self._put(OutputEvent(seq=self._take_seq(), stream=stream, data=data))

    def put_exit(self, exit_code: int) -> None:
        self._put(ExitedEvent(seq=self._take_seq(), exit_code=exit_code))

    def put_closed(self) -> None:
        self._put(ClosedEvent(seq=self._take_seq()))

    def put_failed(self, message: str) -> None:
        self._put(FailedEvent(message=message))

    def make_unbounded(self) -> None:
        """Nothing can write any more: the end must never wait for room again."""
        self.unbounded = True
        if self.waiting_for_room:
            self._room_opened()

    def events(self) -> EventIterator:
        return EventIterator(self)


class EventIterator:
    """The consumer's side: every event once, in seq order, ending after Closed/Failed.

    It is a ``unified_exec.backends._base.DirectEvents``: see ``connect``.
    """

    __slots__ = ("_done", "_queue")

    def __init__(self, queue: EventQueue) -> None:
        self._queue = queue
        self._done = False

    def connect(self, sink: Sink) -> None:
        """Offer events to ``sink`` in the producer's task from now on, whenever
        nothing is queued and the consumer holds no event. What was queued before
        goes to the sink now, in order, until it refuses one; what it refused, and
        what queues behind it, is the iterator's to take."""
        q = self._queue
        q._sink = sink
        while q._items:
            if not sink(q._items[0]):
                return
            if isinstance(q._popleft(), ClosedEvent | FailedEvent):
                self._finish()
                return
        q._consumer_idle = True

    def pausing(self) -> None:
        """The consumer stops taking events for a while (its reader is behind): a
        throttled producer gets whatever room there is now, without waiting for half
        the queue to be free, so a paused reader holds the child back no sooner than
        a full queue does."""
        q = self._queue
        if q.waiting_for_room and not q.full:
            q._room_opened()

    def __aiter__(self) -> EventIterator:
        return self

    async def __anext__(self) -> ProcessEvent:
        q = self._queue
        if self._done:
            raise StopAsyncIteration
        if not q._items:
            q._consumer_idle = True
            if q._ready is None:
                q._ready = trio.lowlevel.ParkingLot()
            try:
                while not q._items:
                    if q._ended:  # the sink took the terminal event
                        self._finish()
                        raise StopAsyncIteration
                    await q._ready.park()
            finally:
                q._consumer_idle = False
        q._consumer_idle = False  # it holds this event until it asks for the next
        event = q._popleft()
        if isinstance(event, ClosedEvent | FailedEvent):
            self._finish()
        return event

    def _finish(self) -> None:
        self._done = True
        self._queue._sink = None

    async def aclose(self) -> None:
        self._finish()
        await trio.lowlevel.checkpoint()
