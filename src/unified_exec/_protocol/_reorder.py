"""Client-side ordering of one process's events by seq.

The codex server sends stdout, stderr and exit from separate tasks, so arrival order
is not seq order: ``exited`` can precede earlier output, and ``closed`` can precede
``exited``. This buffer releases events strictly in seq order and says which seqs
are still missing so the I/O layer can fetch them with ``process/read``.
"""

from __future__ import annotations

from .._events import ClosedEvent, ExitedEvent, OutputEvent

__all__ = ["SeqEvent", "SeqReorderer"]

SeqEvent = OutputEvent | ExitedEvent | ClosedEvent


class SeqReorderer:
    def __init__(self) -> None:
        self.next_seq = 1  # the next seq to release
        self._held: dict[int, SeqEvent] = {}
        self.done = False  # closed was released
        self.exit_known = False  # an exit was pushed (held or released): never infer one
        self.exit_released = False

    def push(self, event: SeqEvent) -> list[SeqEvent]:
        """Add one event (duplicates and stale seqs are ignored); return what is now in order.

        A second exit (at another seq) is dropped too: a process exits once.
        """
        if self.done or event.seq < self.next_seq or event.seq in self._held:
            return []
        if isinstance(event, ExitedEvent):
            if self.exit_known:
                return []
            self.exit_known = True
        self._held[event.seq] = event
        return self._release()

    def holds(self, seq: int) -> bool:
        """Is the event at ``seq`` held back (received, waiting for an earlier one)?"""
        return seq in self._held

    def _release(self) -> list[SeqEvent]:
        out: list[SeqEvent] = []
        while self.next_seq in self._held:
            event = self._held.pop(self.next_seq)
            out.append(event)
            self.next_seq += 1
            if isinstance(event, ExitedEvent):
                self.exit_released = True
            if isinstance(event, ClosedEvent):
                self.done = True
                self._held.clear()
                break
        return out

    def skip_to(self, seq: int) -> list[SeqEvent]:
        """Give up on every seq below ``seq`` (the server no longer has them)."""
        if seq > self.next_seq:
            if seq - self.next_seq > len(self._held):  # a long run: step over what is held
                doomed = [s for s in self._held if s < seq]
            else:
                doomed = [s for s in range(self.next_seq, seq) if s in self._held]
            for s in doomed:
                if isinstance(self._held.pop(s), ExitedEvent):
                    self.exit_known = False
            self.next_seq = seq
        return self._release()

    @property
    def gap(self) -> tuple[int, int] | None:
        """The first run of missing seqs before a held event, if any."""
        if not self._held:
            return None
        return (self.next_seq, min(self._held) - 1)

    @property
    def held(self) -> int:
        return len(self._held)
