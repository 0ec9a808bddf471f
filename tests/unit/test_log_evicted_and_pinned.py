"""EventLog: what ``evicted`` names (#30), the end told to a cursor past it (#6), and
the pin that keeps an active reader's unseen output while terminating (#31)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unified_exec import ClosedEvent, ExitedEvent, LostEvent, OutputEvent
from unified_exec._log import PIN_CAP_BYTES, EventLog, EvictedSeqs


def test_evicted_leaves_out_the_exit_between_lost_chunks() -> None:
    log = EventLog(retention_bytes=4)
    log.append(OutputEvent(1, "stdout", b"aaaa"))
    log.append(ExitedEvent(2, 0))
    log.append(OutputEvent(3, "stdout", b"bbbb"))  # a grandchild writing after the exit
    log.append(OutputEvent(4, "stdout", b"cccc"))
    res = log.read(0)
    assert list(res.evicted) == [1, 3]
    assert 2 not in res.evicted and 3 in res.evicted
    assert len(res.evicted) == 2 and res.evicted.start == 1  # type: ignore[attr-defined]
    assert res.evicted == [1, 3]
    # A cursor past the exit sees a plain range.
    assert log.read(2).evicted == range(3, 4)


@given(
    st.integers(0, 50),
    st.integers(0, 30),
    st.lists(st.integers(-5, 90), max_size=4),
    st.integers(-40, 40),
)
def test_evicted_seqs_is_the_span_minus_its_holes(
    start: int, length: int, holes: list[int], index: int
) -> None:
    span = range(start, start + length)
    seqs = EvictedSeqs(span, holes)
    model = [s for s in span if s not in holes]
    assert list(seqs) == model
    assert len(seqs) == len(model)
    assert bool(seqs) == bool(model)
    assert seqs == model
    for s in range(start - 2, start + length + 2):
        assert (s in seqs) == (s in model)
    if -len(model) <= index < len(model):
        assert seqs[index] == model[index]
    else:
        try:
            seqs[index]
        except IndexError:
            pass
        else:
            raise AssertionError("no IndexError")


def _closed_log() -> EventLog:
    log = EventLog(retention_bytes=1024)
    log.append(OutputEvent(1, "stdout", b"hi"))
    log.append(ExitedEvent(2, 0))
    log.append(ClosedEvent(3))
    return log


def test_a_cursor_at_or_after_closed_is_told_the_end() -> None:
    log = _closed_log()
    for cursor in (3, 4, 99):
        assert log.has_news(cursor)
        assert log.next_event(cursor) == ClosedEvent(3)


def test_pinned_log_keeps_what_an_active_reader_has_not_seen() -> None:
    log = EventLog(retention_bytes=4)
    token = log.add_cursor(0)
    log.pin_unseen = True
    for seq in range(1, 6):
        log.append(OutputEvent(seq, "stdout", b"xxxx"))
    assert log.next_event(0) == OutputEvent(1, "stdout", b"xxxx")  # nothing lost
    assert log.retained_bytes == 20
    log.move_cursor(token, 3)  # seen: now retention may drop them
    assert log.retained_bytes <= 8
    assert log.next_event(3) == OutputEvent(4, "stdout", b"xxxx")
    log.drop_cursor(token)
    assert log.retained_bytes == 4


def test_pin_is_capped() -> None:
    log = EventLog(retention_bytes=0)
    log.add_cursor(0)
    log.pin_unseen = True
    chunk = b"x" * (1 << 20)
    n = PIN_CAP_BYTES // len(chunk) + 3
    for seq in range(1, n + 1):
        log.append(OutputEvent(seq, "stdout", chunk))
    assert log.retained_bytes <= PIN_CAP_BYTES
    first = log.next_event(0)
    assert isinstance(first, LostEvent) and first.first_seq == 1
