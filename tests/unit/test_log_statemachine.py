"""Model-based tests of EventLog, the per-process event history.

A hypothesis state machine plays backend (appends, some of them illegal) and readers
(``read`` callers, ``next_event`` streams, bare cursors) against one EventLog, and checks
every answer against a plain model: the events accepted so far. The invariants are the
ones in design.md: seq order, one terminal event, the ProcessState rules, and "every byte
reaches a reader exactly once, or the reader is told its seq was lost".
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from unified_exec import (
    ClosedEvent,
    ExitedEvent,
    FailedEvent,
    LostEvent,
    OutputEvent,
    RemoteProtocolError,
)
from unified_exec._log import EventLog, LogSlice

SeqEvent = OutputEvent | ExitedEvent | ClosedEvent

STREAMS = st.sampled_from(["stdout", "stderr", "pty"])
# Backends count 1, 2, 3, ...; gaps check that nothing relies on that.
GAPS = st.one_of(st.just(1), st.integers(2, 4))
MAX_BYTES = st.one_of(st.none(), st.integers(0, 16), st.integers(17, 700))


def expected_retained(outputs: list[OutputEvent], retention: int) -> list[OutputEvent]:
    """The longest run of newest chunks that fits in ``retention``, never less than one.

    Derived from the whole history rather than step by step, so it checks the
    incremental eviction in EventLog instead of copying it.
    """
    kept: list[OutputEvent] = []
    total = 0
    for event in reversed(outputs):
        if total + len(event.data) > retention:
            break
        total += len(event.data)
        kept.append(event)
    if not kept and outputs:
        kept.append(outputs[-1])
    kept.reverse()
    return kept


@attrs.define
class FollowReader:
    """A ``read`` caller that always resumes at ``next_seq - 1``, like ReadResult says."""

    start: int
    after: int
    received: list[int] = attrs.Factory(list)
    reported: set[int] = attrs.Factory(set)


@attrs.define
class StreamReader:
    """A ``next_event`` consumer holding an active cursor, like EventStream."""

    start: int
    cursor: int
    token: int
    seen: list[int] = attrs.Factory(list)
    lost: set[int] = attrs.Factory(set)
    done: bool = False


class EventLogMachine(RuleBasedStateMachine):
    """Drives one EventLog and a model of it in lock step."""

    # -- setup -------------------------------------------------------------------

    @initialize(retention=st.integers(0, 300), end_after=st.integers(0, 40))
    def setup(self, retention: int, end_after: int) -> None:
        self.retention = retention
        # Accepting close/failure ends the run's interesting part, so hold them off
        # for a drawn number of accepted events (illegal closes are still tried).
        self.end_after = end_after
        self.log = EventLog(retention)
        self.by_seq: dict[int, SeqEvent] = {}
        self.outputs: list[OutputEvent] = []
        self.exit: ExitedEvent | None = None
        self.closed: ClosedEvent | None = None
        self.failure: str | None = None
        self.last_seq = 0
        self.accepted = 0
        self.cursors: dict[int, int] = {}  # every active cursor: token -> seq
        self.issued: set[int] = set()
        self.free_tokens: list[int] = []  # cursors owned by the cursor rules
        self.followers = [FollowReader(0, 0), FollowReader(0, 0)]
        self.readers = [self._new_reader(0), self._new_reader(0)]

    # -- model helpers -----------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.closed is not None or self.failure is not None

    def _retained(self) -> list[OutputEvent]:
        return expected_retained(self.outputs, self.retention)

    def _add_cursor(self, seq: int) -> int:
        token = self.log.add_cursor(seq)
        assert token not in self.issued, "cursor tokens must never be reused"
        self.issued.add(token)
        self.cursors[token] = seq
        return token

    def _drop_cursor(self, token: int) -> None:
        self.log.drop_cursor(token)
        del self.cursors[token]

    def _new_reader(self, start: int) -> StreamReader:
        return StreamReader(start=start, cursor=start, token=self._add_cursor(start))

    def _snapshot(self) -> tuple[object, ...]:
        log = self.log
        return (
            log.state,
            log.last_seq,
            log.exited,
            log.closed,
            log.failure,
            log.evicted_through,
            log.retained_bytes,
            log.read(0),
        )

    def _expect_rejected(self, event: SeqEvent | FailedEvent) -> None:
        """An illegal event raises RemoteProtocolError and changes nothing."""
        before = self._snapshot()
        with pytest.raises(RemoteProtocolError):
            self.log.append(event)
        assert self._snapshot() == before

    def _accept(self, event: SeqEvent | FailedEvent) -> None:
        self.log.append(event)
        self.accepted += 1
        if isinstance(event, FailedEvent):
            self.failure = event.message
            return
        self.by_seq[event.seq] = event
        self.last_seq = event.seq
        if isinstance(event, OutputEvent):
            self.outputs.append(event)
        elif isinstance(event, ExitedEvent):
            self.exit = event
        else:
            self.closed = event

    def _model_would_evict(self, nbytes: int) -> bool:
        if not self.cursors:
            return False
        slowest = min(self.cursors.values())
        retained = self._retained()
        fake = OutputEvent(self.last_seq + 1, "stdout", bytes(nbytes))
        kept = {e.seq for e in expected_retained([*retained, fake], self.retention)}
        return any(e.seq > slowest for e in retained if e.seq not in kept)

    def _append_output(self, stream: str, data: bytes, gap: int) -> None:
        event = OutputEvent(self.last_seq + gap, stream, data)  # type: ignore[arg-type]
        if self.terminal:
            self._expect_rejected(event)
            return
        predicted = self.log.would_evict_unseen(len(data))
        assert predicted == self._model_would_evict(len(data))
        before = {e.seq for e in self.log.read(0).chunks}
        self._accept(event)
        dropped = before - {e.seq for e in self.log.read(0).chunks}
        slowest = min(self.cursors.values(), default=None)
        actual = slowest is not None and any(seq > slowest for seq in dropped)
        assert predicted == actual, f"would_evict_unseen said {predicted}, dropped {dropped}"

    # -- backend side --------------------------------------------------------------

    @rule(stream=STREAMS, data=st.binary(max_size=12), gap=GAPS)
    def append_small_output(self, stream: str, data: bytes, gap: int) -> None:
        self._append_output(stream, data, gap)

    @rule(stream=STREAMS, data=st.binary(min_size=40, max_size=600), gap=GAPS)
    def append_big_output(self, stream: str, data: bytes, gap: int) -> None:
        self._append_output(stream, data, gap)

    @rule(stream=STREAMS, n=st.integers(2, 100), size=st.integers(0, 5))
    def append_burst(self, stream: str, n: int, size: int) -> None:
        """Many small chunks: enough evictions to make EventLog compact its list."""
        for i in range(n):
            self._append_output(stream, bytes([i % 256]) * size, 1)
            if self.terminal:
                return

    @rule(code=st.integers(-1, 300), gap=GAPS)
    def append_exit(self, code: int, gap: int) -> None:
        event = ExitedEvent(self.last_seq + gap, code)
        if self.terminal or self.exit is not None:
            self._expect_rejected(event)
        else:
            self._accept(event)

    @rule(gap=GAPS)
    def append_close(self, gap: int) -> None:
        event = ClosedEvent(self.last_seq + gap)
        if self.terminal or self.exit is None:
            self._expect_rejected(event)
        elif self.accepted >= self.end_after:
            self._accept(event)

    @precondition(lambda self: self.accepted >= self.end_after)
    @rule(message=st.text(max_size=8))
    def append_failure(self, message: str) -> None:
        event = FailedEvent(message)
        if self.terminal:
            self._expect_rejected(event)
        else:
            self._accept(event)

    @rule(kind=st.sampled_from(["output", "exit", "closed"]), back=st.integers(0, 3))
    def append_stale_seq(self, kind: str, back: int) -> None:
        """A seq that does not move forward is a peer bug, whatever the event."""
        seq = self.last_seq - back
        event: SeqEvent
        if kind == "output":
            event = OutputEvent(seq, "stdout", b"x")
        elif kind == "exit":
            event = ExitedEvent(seq, 0)
        else:
            event = ClosedEvent(seq)
        self._expect_rejected(event)

    # -- bare cursors ----------------------------------------------------------------

    @rule(data=st.data())
    def add_cursor(self, data: st.DataObject) -> None:
        seq = data.draw(st.integers(0, self.last_seq), label="seq")
        self.free_tokens.append(self._add_cursor(seq))

    @precondition(lambda self: self.free_tokens)
    @rule(data=st.data())
    def move_cursor(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.free_tokens), label="token")
        old = self.cursors[token]
        seq = data.draw(st.integers(old, max(old, self.last_seq)), label="seq")
        self.log.move_cursor(token, seq)
        self.cursors[token] = seq

    @precondition(lambda self: self.free_tokens)
    @rule(data=st.data())
    def drop_cursor(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.free_tokens), label="token")
        self.free_tokens.remove(token)
        self._drop_cursor(token)
        self.log.drop_cursor(token)  # dropping twice is harmless

    @rule(nbytes=st.one_of(st.integers(0, 20), st.integers(21, 700)))
    def check_would_evict(self, nbytes: int) -> None:
        assert self.log.would_evict_unseen(nbytes) == self._model_would_evict(nbytes)

    # -- read() callers --------------------------------------------------------------

    def _check_slice(self, after: int, max_bytes: int | None, piece: LogSlice) -> None:
        retained = self._retained()
        retained_seqs = {e.seq for e in retained}
        available = [e for e in retained if e.seq > after]
        chunks = list(piece.chunks)
        # Whole chunks, oldest first, no holes, exactly as appended.
        assert chunks == available[: len(chunks)]
        if available:
            assert chunks, "read returned nothing although output was available"
        size = sum(len(c.data) for c in chunks)
        if max_bytes is None:
            assert chunks == available
        else:
            assert size <= max_bytes or len(chunks) == 1
            if len(chunks) < len(available):
                # It stopped because the next chunk would not fit, not for no reason.
                assert size >= max_bytes or size + len(available[len(chunks)].data) > max_bytes
        # Resuming at next_seq - 1 repeats nothing and skips nothing retained.
        if chunks:
            assert piece.next_seq > chunks[-1].seq
        assert all(e.seq >= piece.next_seq for e in available[len(chunks) :])
        assert piece.next_seq <= self.last_seq + 1
        # Evicted: contiguous from the cursor, and every lost output seq is in it.
        if piece.evicted:
            assert piece.evicted.step == 1
            assert piece.evicted.start == after + 1
            assert piece.evicted.stop <= piece.next_seq
        for e in self.outputs:
            if e.seq in piece.evicted:
                assert e.seq not in retained_seqs, f"seq {e.seq} reported evicted but retained"
            elif e.seq > after:
                assert e.seq in retained_seqs, f"seq {e.seq} silently skipped"
        if not self.log.has_news(after):
            assert not chunks
            assert not piece.evicted

    @rule(data=st.data(), max_bytes=MAX_BYTES)
    def read_at_random_cursor(self, data: st.DataObject, max_bytes: int | None) -> None:
        after = data.draw(st.integers(0, self.last_seq + 2), label="after")
        self._check_slice(after, max_bytes, self.log.read(after, max_bytes))

    @rule(idx=st.integers(0, 1), max_bytes=MAX_BYTES)
    def read_follow(self, idx: int, max_bytes: int | None) -> None:
        reader = self.followers[idx]
        piece = self.log.read(reader.after, max_bytes)
        self._check_slice(reader.after, max_bytes, piece)
        for chunk in piece.chunks:
            assert not reader.received or chunk.seq > reader.received[-1]
            assert chunk.seq not in reader.reported
            reader.received.append(chunk.seq)
        reader.reported.update(e.seq for e in self.outputs if e.seq in piece.evicted)
        assert piece.next_seq - 1 >= reader.after, "the cursor must never move back"
        reader.after = piece.next_seq - 1
        received = set(reader.received)
        assert not received & reader.reported, "a seq was both delivered and evicted"
        expected = {e.seq for e in self.outputs if reader.start < e.seq <= reader.after}
        assert received | reader.reported == expected

    @rule(idx=st.integers(0, 1), data=st.data())
    def restart_follower(self, idx: int, data: st.DataObject) -> None:
        start = data.draw(st.integers(0, self.last_seq), label="start")
        self.followers[idx] = FollowReader(start, start)

    # -- next_event() streams ----------------------------------------------------------

    def _check_coverage(self, reader: StreamReader) -> None:
        seen = set(reader.seen)
        assert reader.seen == sorted(seen), "events out of order or repeated"
        assert not seen & reader.lost
        upto = None if reader.done else reader.cursor
        expected = {s for s in self.by_seq if s > reader.start and (upto is None or s <= upto)}
        assert seen | reader.lost == expected

    @rule(idx=st.integers(0, 1), steps=st.integers(1, 12))
    def step_reader(self, idx: int, steps: int) -> None:
        reader = self.readers[idx]
        for _ in range(steps):
            if reader.done:
                return
            event = self.log.next_event(reader.cursor)
            assert self.log.has_news(reader.cursor) == (event is not None)
            later = sorted(s for s in self.by_seq if s > reader.cursor)
            if event is None:
                assert not later, f"seqs {later} are pending but next_event said nothing"
                assert self.failure is None
                return
            if isinstance(event, LostEvent):
                assert event.first_seq == reader.cursor + 1 <= event.last_seq
                retained_seqs = {e.seq for e in self._retained()}
                inside = [s for s in later if s <= event.last_seq]
                for s in inside:
                    assert isinstance(self.by_seq[s], OutputEvent), f"{event} covers {s}"
                    assert s not in retained_seqs, f"{event} covers retained seq {s}"
                # Seqs a backend skipped are unavailable too, so they count as lost
                # (see test_skipped_seqs_are_reported_as_lost); the range always
                # stops right before the next event a reader can have.
                available = sorted(
                    retained_seqs
                    | {e.seq for e in self.by_seq.values() if not isinstance(e, OutputEvent)}
                )
                nxt = [x for x in available if x > reader.cursor]
                assert event.last_seq == (nxt[0] - 1 if nxt else self.log.last_seq)
                reader.lost.update(inside)
                reader.cursor = event.last_seq
            elif isinstance(event, FailedEvent):
                assert event == FailedEvent(self.failure)  # type: ignore[arg-type]
                assert not later, "failure reported before pending events"
                reader.done = True
            elif isinstance(event, ClosedEvent) and event.seq <= reader.cursor:
                # A cursor at or after the closed seq is told the end again at once
                # rather than waiting for an event that can never come (review #6).
                assert not later and event == self.closed
                reader.done = True
            else:
                assert later, f"{event} is not in the model"
                assert event.seq == later[0], f"{event} skipped seqs {later[:3]}"
                assert event == self.by_seq[event.seq]
                reader.seen.append(event.seq)
                reader.cursor = event.seq
                reader.done = isinstance(event, ClosedEvent)
            if reader.done:
                self._drop_cursor(reader.token)
            else:
                self.log.move_cursor(reader.token, reader.cursor)
                self.cursors[reader.token] = reader.cursor
            self._check_coverage(reader)

    @rule(idx=st.integers(0, 1), data=st.data())
    def restart_reader(self, idx: int, data: st.DataObject) -> None:
        old = self.readers[idx]
        if not old.done:
            self._drop_cursor(old.token)
        start = data.draw(st.integers(0, self.last_seq), label="start")
        self.readers[idx] = self._new_reader(start)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def state_follows_events(self) -> None:
        """has_exited iff exit or failure; exit_code only from exit; first failure only."""
        state = self.log.state
        assert state.has_exited == (self.exit is not None or self.failure is not None)
        assert state.exit_code == (None if self.exit is None else self.exit.exit_code)
        assert state.failure_message == self.failure
        assert self.log.exited == self.exit
        assert self.log.closed == self.closed
        assert self.log.failure == (None if self.failure is None else FailedEvent(self.failure))
        assert self.log.terminal == self.terminal
        assert self.log.last_seq == self.last_seq

    @invariant()
    def closed_is_last(self) -> None:
        if self.closed is not None:
            assert self.exit is not None
            assert self.exit.seq < self.closed.seq == self.last_seq == max(self.by_seq)

    @invariant()
    def retention_keeps_newest(self) -> None:
        """Newest chunks within retention_bytes; the newest chunk is always kept."""
        retained = list(self.log.read(0).chunks)
        assert retained == self._retained()
        size = sum(len(e.data) for e in retained)
        assert self.log.retained_bytes == size
        assert size <= self.retention or len(retained) == 1
        if self.outputs:
            assert retained[-1] == self.outputs[-1]
        evicted = self.outputs[: len(self.outputs) - len(retained)]
        assert self.log.evicted_through == (evicted[-1].seq if evicted else 0)

    @invariant()
    def would_evict_matches_model(self) -> None:
        """Probe sizes whose eviction ends exactly on a chunk boundary (off-by-one land)."""
        base = self.retention - self.log.retained_bytes
        probes = {base + 1}
        total = 0
        for event in self._retained()[:8]:
            total += len(event.data)
            probes.update((base + total, base + total + 1))
        for nbytes in sorted(p for p in probes if p >= 0):
            expected = self._model_would_evict(nbytes)
            assert self.log.would_evict_unseen(nbytes) == expected, nbytes


EventLogMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEventLog = EventLogMachine.TestCase


def test_skipped_seqs_are_reported_as_lost() -> None:
    """A seq the backend skipped is as unavailable as an evicted one, and a reader is
    told so (a remote server may have evicted it before the client could fetch it)."""
    log = EventLog(0)
    log.append(ExitedEvent(2, 0))  # seq 1 never reached us
    log.append(OutputEvent(3, "stdout", b"x"))
    log.append(OutputEvent(4, "stdout", b"y"))  # evicts seq 3
    assert log.next_event(0) == LostEvent(1, 1)
    assert log.next_event(1) == ExitedEvent(2, 0)
    assert log.next_event(2) == LostEvent(3, 3)
    assert log.next_event(3) == OutputEvent(4, "stdout", b"y")
