"""EventLog: one process's ordered event history, retention and read cursors.

Pure (no I/O, no trio): UnifiedExecProcess drives it, and the property tests drive it
directly. It enforces the event invariants, so a misbehaving backend is caught here
rather than surfacing as a confused reader.
"""

from __future__ import annotations

import bisect
import itertools

import attrs

from ._errors import RemoteProtocolError
from ._events import ClosedEvent, ExitedEvent, FailedEvent, LostEvent, OutputEvent, ProcessEvent
from ._state import ProcessState

__all__ = ["EventLog", "LogSlice"]


@attrs.frozen
class LogSlice:
    chunks: tuple[OutputEvent, ...]
    next_seq: int
    evicted: range


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
        while self.retained_bytes > self.retention_bytes and len(self._out) - self._head > 1:
            old = self._out[self._head]
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

    def drop_cursor(self, token: int) -> None:
        self._cursors.pop(token, None)

    # -- reading -----------------------------------------------------------------

    def has_news(self, after_seq: int) -> bool:
        """Is there anything a reader at ``after_seq`` has not been told?"""
        return self.last_seq > after_seq or self.failure is not None

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
        evicted = (
            range(after_seq + 1, self.evicted_through + 1)
            if after_seq < self.evicted_through
            else range(0)
        )
        return LogSlice(chunks=chunks, next_seq=next_seq, evicted=evicted)

    def next_event(
        self, cursor: int
    ) -> OutputEvent | ExitedEvent | ClosedEvent | FailedEvent | LostEvent | None:
        """The event a sequential reader that has seen up to ``cursor`` gets next."""
        candidates: list[OutputEvent | ExitedEvent | ClosedEvent] = []
        i = bisect.bisect_right(self._seqs, cursor, lo=self._head)
        if i < len(self._out):
            candidates.append(self._out[i])
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
        return self.failure
