"""EventLog: one process's ordered event history, retention and read cursors.

Pure (no I/O, no trio): UnifiedExecProcess drives it, and the property tests drive it
directly. It enforces the event invariants, so a misbehaving backend is caught here
rather than surfacing as a confused reader.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from typing import overload

import attrs

from ._errors import RemoteProtocolError
from ._events import ClosedEvent, ExitedEvent, FailedEvent, LostEvent, OutputEvent, ProcessEvent
from ._state import ProcessState

__all__ = ["EventLog", "EvictedSeqs", "LogSlice"]

# While pinned (see EventLog.pin_unseen) retention may grow past its limit by at most
# this much to keep an active reader's unseen output; beyond it, it is lost, and
# reported as lost, as usual.
PIN_CAP_BYTES = 64 * 1024 * 1024


class EvictedSeqs(Sequence[int]):
    """The seqs of a range that were output and lost: ``span`` minus ``holes``.

    The exit event can sit between two evicted chunks of a grandchild's late
    output; it was not lost, so it is not named. ``start``/``stop`` are those of
    the span (and ``step`` is 1), as for a range.
    """

    __slots__ = ("_holes", "_span")

    def __init__(self, span: range, holes: Sequence[int]) -> None:
        self._span = span
        self._holes = tuple(sorted(h for h in set(holes) if h in span))

    @property
    def start(self) -> int:
        return self._span.start

    @property
    def stop(self) -> int:
        return self._span.stop

    @property
    def step(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self._span) - len(self._holes)

    def __contains__(self, seq: object) -> bool:
        return seq in self._span and seq not in self._holes

    def __iter__(self) -> Iterator[int]:
        holes = set(self._holes)
        return (s for s in self._span if s not in holes)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...
    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("EvictedSeqs index out of range")
        seq = self._span.start + index
        for hole in self._holes:  # sorted: each hole at or before seq shifts it on
            if hole <= seq:
                seq += 1
        return seq

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._span, self._holes))

    def __repr__(self) -> str:
        return f"EvictedSeqs({self._span!r}, holes={self._holes!r})"


@attrs.frozen
class LogSlice:
    chunks: tuple[OutputEvent, ...]
    next_seq: int
    evicted: range | EvictedSeqs


@attrs.define
class EventLog:
    """Retains the newest ``retention_bytes`` of output (whole chunks, at least one)."""

    retention_bytes: int
    state: ProcessState = attrs.field(factory=ProcessState, init=False)
    last_seq: int = attrs.field(default=0, init=False)
    exited: ExitedEvent | None = attrs.field(default=None, init=False)
    closed: ClosedEvent | None = attrs.field(default=None, init=False)
    failure: FailedEvent | None = attrs.field(default=None, init=False)
    # Highest output seq that retention dropped; every output seq <= it is gone.
    evicted_through: int = attrs.field(default=0, init=False)
    retained_bytes: int = attrs.field(default=0, init=False)
    _out: list[OutputEvent] = attrs.field(factory=list, init=False)
    _seqs: list[int] = attrs.field(factory=list, init=False)
    _head: int = attrs.field(default=0, init=False)
    _cursors: dict[int, int] = attrs.field(factory=dict, init=False)
    _tokens: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    # Set once the process is being terminated: the producer is no longer held back
    # for readers, so instead retention keeps what an active reader has not seen
    # (up to PIN_CAP_BYTES over the limit; the rest of a terminated child is small).
    pin_unseen: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.retention_bytes < 0:
            raise ValueError("retention_bytes must be >= 0")

    # -- writing ---------------------------------------------------------------

    @property
    def terminal(self) -> bool:
        """No event will ever follow: closed, or failed."""
        return self.closed is not None or self.failure is not None

    def append(self, event: ProcessEvent) -> None:
        """Record the next event; raise RemoteProtocolError if it breaks the rules."""
        if self.terminal:
            raise RemoteProtocolError(f"event after the stream ended: {event!r}")
        if isinstance(event, FailedEvent):
            self.failure = event
            self.state = self.state.failed(event.message)
            return
        if event.seq <= self.last_seq:
            raise RemoteProtocolError(
                f"seq {event.seq} is not after seq {self.last_seq}: {event!r}"
            )
        if isinstance(event, OutputEvent):
            self._push(event)
        elif isinstance(event, ExitedEvent):
            if self.exited is not None:
                raise RemoteProtocolError(f"a second exit: {event!r}")
            self.exited = event
            self.state = self.state.exited(event.exit_code)
        else:
            if self.exited is None:
                raise RemoteProtocolError(f"closed before exited: {event!r}")
            self.closed = event
        self.last_seq = event.seq

    def _push(self, event: OutputEvent) -> None:
        self._out.append(event)
        self._seqs.append(event.seq)
        self.retained_bytes += len(event.data)
        self._trim()

    def _trim(self) -> None:
        pinned_after = None
        if self.pin_unseen and self._cursors:
            pinned_after = min(self._cursors.values())
        while self.retained_bytes > self.retention_bytes and len(self._out) - self._head > 1:
            old = self._out[self._head]
            if (
                pinned_after is not None
                and old.seq > pinned_after
                and self.retained_bytes <= self.retention_bytes + PIN_CAP_BYTES
            ):
                break
            self.retained_bytes -= len(old.data)
            self.evicted_through = old.seq
            self._head += 1
        if self._head > 64 and self._head * 2 > len(self._out):
            del self._out[: self._head]
            del self._seqs[: self._head]
            self._head = 0

    def would_evict_unseen(self, nbytes: int) -> bool:
        """Would appending ``nbytes`` of output drop a chunk an active reader has not seen?"""
        if not self._cursors:
            return False
        slowest = min(self._cursors.values())
        excess = self.retained_bytes + nbytes - self.retention_bytes
        if excess <= 0:
            return False
        for i in range(self._head, len(self._out)):
            old = self._out[i]
            if old.seq > slowest:
                return True
            excess -= len(old.data)
            if excess <= 0:
                return False
        return False  # only the new chunk itself would be over the limit

    # -- active readers (the ones whose lag holds the producer back) -----------

    def add_cursor(self, seq: int) -> int:
        token = next(self._tokens)
        self._cursors[token] = seq
        return token

    def move_cursor(self, token: int, seq: int) -> None:
        self._cursors[token] = seq
        if self.pin_unseen:
            self._trim()

    def drop_cursor(self, token: int) -> None:
        self._cursors.pop(token, None)
        if self.pin_unseen:
            self._trim()

    # -- reading -----------------------------------------------------------------

    def has_news(self, after_seq: int) -> bool:
        """Is there anything a reader at ``after_seq`` has not been told?

        Once the log is terminal, yes whatever the cursor: nothing can ever come, so
        a waiting reader must be answered at once (codex answers a read after closed
        at once, even ``afterSeq: 99``).
        """
        return self.last_seq > after_seq or self.terminal

    def read(self, after_seq: int, max_bytes: int | None = None) -> LogSlice:
        """Retained output after ``after_seq``; ``max_bytes`` caps it (at least one chunk)."""
        start = bisect.bisect_right(self._seqs, after_seq, lo=self._head)
        end = len(self._out)
        if max_bytes is not None:
            total = 0
            stop = start
            while stop < end:
                size = len(self._out[stop].data)
                if stop > start and total + size > max_bytes:
                    break
                total += size
                stop += 1
                if total >= max_bytes:
                    break
            truncated = stop < end
            end = stop
        else:
            truncated = False
        chunks = tuple(self._out[start:end])
        next_seq = chunks[-1].seq + 1 if truncated else self.last_seq + 1
        evicted: range | EvictedSeqs = range(0)
        if after_seq < self.evicted_through:
            evicted = range(after_seq + 1, self.evicted_through + 1)
            if self.exited is not None and self.exited.seq in evicted:
                evicted = EvictedSeqs(evicted, (self.exited.seq,))
        return LogSlice(chunks=chunks, next_seq=next_seq, evicted=evicted)

    def next_event(
        self, cursor: int
    ) -> OutputEvent | ExitedEvent | ClosedEvent | FailedEvent | LostEvent | None:
        """The event a sequential reader that has seen up to ``cursor`` gets next."""
        i = bisect.bisect_right(self._seqs, cursor, lo=self._head)
        out = self._out
        if i < len(out):
            first = out[i]
            if first.seq == cursor + 1:  # the common case: the very next seq is output
                return first
            candidates: list[OutputEvent | ExitedEvent | ClosedEvent] = [first]
        else:
            candidates = []
        if self.exited is not None and self.exited.seq > cursor:
            candidates.append(self.exited)
        if self.closed is not None and self.closed.seq > cursor:
            candidates.append(self.closed)
        nxt = min(candidates, key=lambda e: e.seq) if candidates else None
        # Every seq before the next available event is gone: evicted by retention,
        # or skipped by the backend (a remote server evicted it before we fetched it).
        hi = nxt.seq - 1 if nxt is not None else self.last_seq
        if hi > cursor:
            return LostEvent(first_seq=cursor + 1, last_seq=hi)
        if nxt is not None:
            return nxt
        if self.failure is not None:
            return self.failure
        # A cursor at or after the closed seq has seen everything: it gets the end
        # again rather than waiting for an event that will never come.
        return self.closed
