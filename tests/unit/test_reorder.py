"""SeqReorderer: events of one process arrive in any order, leave in seq order.

protocol-codex-0.169.md section 4: one seq counter per process shared by output,
exited and closed, starting at 1; closed has the largest seq; arrival order is not
seq order (exited before earlier output, closed before exited, ...).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unified_exec import ClosedEvent, ExitedEvent, OutputEvent
from unified_exec._protocol._reorder import SeqReorderer

SeqEvent = OutputEvent | ExitedEvent | ClosedEvent


@st.composite
def event_lists(draw: st.DrawFn) -> list[SeqEvent]:
    """A valid history: seqs 1..n, outputs, one exited anywhere, closed last."""
    n_out = draw(st.integers(0, 12))
    exited_at = draw(st.integers(0, n_out))
    events: list[SeqEvent] = []
    for i in range(n_out + 1):
        if i == exited_at:
            events.append(ExitedEvent(seq=len(events) + 1, exit_code=draw(st.integers(0, 255))))
        if i < n_out:
            stream = draw(st.sampled_from(["stdout", "stderr", "pty"]))
            events.append(OutputEvent(len(events) + 1, stream, draw(st.binary(max_size=8))))
    events.append(ClosedEvent(seq=len(events) + 1))
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[SeqEvent]) -> list[SeqEvent]:
    """The events in a random order, some of them delivered again later (or earlier)."""
    order = list(draw(st.permutations(events)))
    dups = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    for dup in dups:
        order.insert(draw(st.integers(0, len(order))), dup)
    return order


def _check_gap(r: SeqReorderer, held_seqs: set[int]) -> None:
    assert r.held == len(held_seqs)
    assert (r.gap is None) == (r.held == 0)
    if held_seqs:
        assert r.gap == (r.next_seq, min(held_seqs) - 1)
        lo, hi = r.gap
        assert lo <= hi  # a held event right at next_seq would have been released


@given(data=st.data())
def test_random_arrival_releases_each_event_once_in_seq_order(data: st.DataObject) -> None:
    events = data.draw(event_lists())
    order = data.draw(deliveries(events))
    r = SeqReorderer()
    released: list[SeqEvent] = []
    pushed: set[int] = set()
    for event in order:
        out = r.push(event)
        if released and isinstance(released[-1], ClosedEvent):
            assert out == []  # nothing after closed
        released.extend(out)
        pushed.add(event.seq)
        released_seqs = {e.seq for e in released}
        assert r.next_seq == len(released) + 1
        _check_gap(r, set() if r.done else pushed - released_seqs)
    assert released == events  # every event exactly once, in seq order
    assert isinstance(released[-1], ClosedEvent)
    assert r.done
    assert r.gap is None and r.held == 0
    # late duplicates after the end change nothing
    for event in events:
        assert r.push(event) == []


@given(data=st.data())
def test_closed_first_holds_until_the_rest_arrive(data: st.DataObject) -> None:
    events = data.draw(event_lists())
    rest = data.draw(st.permutations(events[:-1]))
    r = SeqReorderer()
    released = r.push(events[-1])
    if len(events) > 1:
        assert released == []
        assert r.gap == (1, len(events) - 1)
    for event in rest:
        released += r.push(event)
        assert not r.done or released[-1] == events[-1]
    assert released == events
    assert r.done


@given(data=st.data())
def test_skip_to_gives_up_missing_seqs(data: st.DataObject) -> None:
    """Some seqs never arrive (the server evicted them). Whenever there is a gap the
    caller may skip it; whatever skipping discards is gone, everything else is released
    once, in seq order, ending with closed."""
    events = data.draw(event_lists())
    closed = events[-1]
    missing = data.draw(st.sets(st.sampled_from([e.seq for e in events[:-1]])))
    arriving = [e for e in events if e.seq not in missing]
    order = data.draw(deliveries(arriving))
    r = SeqReorderer()
    released: list[SeqEvent] = []
    skipped: set[int] = set()

    def skip_gap() -> None:
        assert r.gap is not None
        lo, hi = r.gap
        held_before = r.held
        out = r.skip_to(hi + 1)
        skipped.update(range(lo, hi + 1))
        assert out, "skipping a gap releases at least the held event after it"
        assert out[0].seq == hi + 1
        assert r.held == held_before - len(out)
        released.extend(out)

    for event in order:
        released.extend(r.push(event))
        if r.gap is not None and data.draw(st.booleans()):
            skip_gap()  # may give up on seqs that were only late, not lost
    while r.gap is not None:
        skip_gap()

    expected = [e for e in arriving if e.seq not in skipped]
    assert released == expected
    assert released[-1] == closed
    assert r.done and r.gap is None and r.held == 0
    assert skipped.isdisjoint(e.seq for e in released)
    # late arrivals of skipped seqs are ignored
    for event in events:
        assert r.push(event) == []


def test_skip_to_examples() -> None:
    r = SeqReorderer()
    out4 = OutputEvent(4, "stdout", b"d")
    exited = ExitedEvent(5, 0)
    closed = ClosedEvent(6)
    assert r.push(closed) == []
    assert r.push(out4) == []
    assert r.gap == (1, 3)
    assert r.skip_to(1) == []  # not ahead of next_seq: nothing changes
    assert r.gap == (1, 3)
    assert r.skip_to(3) == []  # 1 and 2 given up, 3 still missing
    assert r.next_seq == 3
    assert r.gap == (3, 3)
    assert r.push(OutputEvent(2, "stdout", b"late")) == []  # stale
    assert r.skip_to(4) == [out4]
    assert r.gap == (5, 5)
    assert r.push(exited) == [exited, closed]
    assert r.done and r.gap is None
    assert r.skip_to(100) == []


def test_in_order_delivery_is_released_at_once() -> None:
    r = SeqReorderer()
    events = [OutputEvent(1, "pty", b"a"), ExitedEvent(2, 1), ClosedEvent(3)]
    for event in events:
        assert r.push(event) == [event]
        assert r.gap is None
    assert r.done
