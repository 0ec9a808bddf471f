"""EventQueue's room: a throttled producer is woken once half the queue is free.

Woken at the first free byte, the supervisor would read one chunk per wake-up while
a reader drains the queue one chunk at a time: a scheduler pass per chunk on each
side. These drive the queue directly (it is sans-trio until something parks).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unified_exec._events import OutputEvent
from unified_exec.backends._queue import EventQueue


def _throttled(capacity: int, sizes: list[int]) -> tuple[EventQueue, list[int]]:
    queue = EventQueue(capacity)
    for size in sizes:
        queue.put_output("stdout", b"x" * size)
    woken: list[int] = []
    queue.on_room = lambda: woken.append(queue._bytes)
    queue.waiting_for_room = True  # what the supervisor sets while the queue is full
    return queue, woken


def test_room_opens_at_half_not_at_the_first_byte() -> None:
    queue, woken = _throttled(100, [10] * 10)
    assert queue.full
    for _ in range(4):
        queue._popleft()
    assert woken == []  # 60 of 100 bytes still queued: not free enough yet
    assert not queue.full  # (though the producer could put again: it is not woken)
    queue._popleft()
    assert woken == [50]


@given(
    capacity=st.integers(1, 400),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=30),
)
def test_the_producer_is_woken_exactly_when_half_is_free(capacity: int, sizes: list[int]) -> None:
    queue, woken = _throttled(capacity, sizes)
    while queue._items:
        before = len(woken)
        event = queue._popleft()
        assert isinstance(event, OutputEvent)
        if queue._bytes <= capacity // 2:
            assert len(woken) == before + 1  # woken (every time, while it waits)
        else:
            assert len(woken) == before


def test_a_pausing_consumer_hands_over_whatever_room_there_is() -> None:
    """Half-queue batching is for a consumer that keeps taking: one that stops (its
    own reader is behind) must not keep a producer throttled on room that is free."""
    queue, woken = _throttled(100, [10] * 10)
    events = queue.events()
    events.pausing()
    assert woken == []  # full: nothing to hand over
    queue._popleft()
    assert woken == []
    events.pausing()
    assert woken == [90]
    queue.waiting_for_room = False  # the producer took the room (and is not waiting)
    events.pausing()
    assert woken == [90]
