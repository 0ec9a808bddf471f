"""The session store of the tool layer: one live process per session id.

Kept apart from the manager so the two policies Codex defines — which id a new
session gets and which old session is pruned when the store is full — read as data
structures, not as branches inside the request handlers.
"""

from __future__ import annotations

import logging
import random
import secrets
from typing import Final

import trio

from .._events import LostEvent, OutputEvent
from .._process import UnifiedExecProcess
from ._output import EndReason, ExecCommandOutput
from ._text import HeadTailBuffer, approx_token_count, formatted_truncate_text, omission_marker

__all__ = ["OUTPUT_MAX_BYTES", "PROTECTED_RECENT", "Session", "SessionIds", "session_to_prune"]

log = logging.getLogger("unified_exec")

OUTPUT_MAX_BYTES: Final = 1024 * 1024
PROTECTED_RECENT: Final = 8
POST_EXIT_CLOSE_WAIT_CAP: Final = 0.05


def session_to_prune(
    meta: list[tuple[int, float, bool]], *, protected: int = PROTECTED_RECENT
) -> int | None:
    """Codex's policy over (id, last_used, exited): the ``protected`` most recently
    used are safe; of the rest, the least recently used exited one, else the least
    recently used.

    Codex protects 8 of at most 64. A store smaller than that must still be able to
    prune, so the manager passes ``min(8, max_sessions - 1)``.
    """
    by_recency = sorted(meta, key=lambda m: m[1], reverse=True)
    candidates = sorted(by_recency[max(protected, 0) :], key=lambda m: m[1])
    for session_id, _, exited in candidates:
        if exited:
            return session_id
    return candidates[0][0] if candidates else None


class SessionIds:
    """Hands out session ids: random in 1000..99999 (Codex), or 1000, 1001, ...

    An id is reserved from allocation until release, so two concurrent starts can
    never share one, and a failed start gives its id back.
    """

    def __init__(self, *, deterministic: bool) -> None:
        self.deterministic = deterministic
        self._reserved: set[int] = set()
        self._random = random.Random()

    def allocate(self) -> int:
        if self.deterministic:
            session_id = max(self._reserved | {999}) + 1
        else:
            session_id = self._random.randrange(1_000, 100_000)
            while session_id in self._reserved:
                session_id = self._random.randrange(1_000, 100_000)
        self._reserved.add(session_id)
        return session_id

    def release(self, session_id: int) -> None:
        self._reserved.discard(session_id)


class Session:
    """One process and the head/tail buffer its output is collected into."""

    def __init__(
        self, session_id: int, proc: UnifiedExecProcess, *, tty: bool, pipe_stdin: bool
    ) -> None:
        self.id = session_id
        self.proc = proc
        self.tty = tty
        self.pipe_stdin = pipe_stdin
        self.buffer = HeadTailBuffer(OUTPUT_MAX_BYTES)
        self.last_used = trio.current_time()
        self.output_seen = 0
        self.last_output_at = 0.0
        self.fed_all = False  # every event, up to closed, is in the buffer
        # Output seqs that retention evicted before this session read them: reported in
        # the next call's warnings, never dropped in silence.
        self.lost: list[tuple[int, int]] = []
        self.changed = trio.lowlevel.ParkingLot()

    async def feed(self) -> None:
        """Move output into the head/tail buffer as it comes: never blocks the child.

        A background task, so it is its own failure domain: whatever the process's
        event stream raises ends this session's feed (as if closed), never the manager.
        """
        try:
            async for event in self.proc.events():
                if isinstance(event, OutputEvent):
                    self.buffer.push(event.data)
                    self.output_seen += len(event.data)
                    self.last_output_at = trio.current_time()
                elif isinstance(event, LostEvent):
                    self.lost.append((event.first_seq, event.last_seq))
                self.changed.unpark_all()
        except Exception:
            log.exception("reading session %s failed", self.id)
        finally:
            self.fed_all = True
            self.changed.unpark_all()

    async def collect(self, deadline: float, quiet_ms: int | None, seen_before: int) -> EndReason:
        """Wait until the process closes, the deadline, or (opt-in) quiet output.

        Quiet means: output arrived since ``seen_before`` and then none for quiet_ms.
        After the exit, output that is still arriving (an exec-server may announce
        the exit before the last output reaches us) is waited for; a straggler that
        holds the output open but writes nothing ends the wait 50 ms after the exit,
        as in Codex.
        """
        exit_deadline: float | None = None
        exit_seen_at: float | None = None
        while True:
            now = trio.current_time()
            if self.fed_all:  # closed, and its last output is in the buffer
                return "exit"
            if self.proc.state.has_exited:
                if exit_seen_at is None:
                    exit_seen_at = now
                quiet_since = max(exit_seen_at, self.last_output_at)
                exit_deadline = min(deadline, quiet_since + POST_EXIT_CLOSE_WAIT_CAP)
            wake = deadline if exit_deadline is None else exit_deadline
            if quiet_ms is not None and self.output_seen > seen_before:
                quiet_at = self.last_output_at + quiet_ms / 1000
                if now >= quiet_at:
                    return "quiet"
                wake = min(wake, quiet_at)
            if now >= wake:
                return "exit" if exit_deadline is not None else "deadline"
            with trio.move_on_at(wake):
                await self.changed.park()

    def drain(
        self, start: float, tokens: int, ended_by: EndReason, warnings: list[str]
    ) -> ExecCommandOutput:
        """Everything collected since the last call, as one call's result."""
        head, omitted, tail = self.buffer.drain()
        if self.lost:
            spans = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in self.lost)
            warnings = [*warnings, f"some output was lost before it could be read (seqs {spans})"]
            self.lost = []
        raw = head + tail
        shown = head + omission_marker(omitted) + tail if omitted else raw
        text = shown.decode("utf-8", errors="replace")
        state = self.proc.state
        return ExecCommandOutput(
            chunk_id=secrets.token_hex(3),
            wall_time=trio.current_time() - start,
            exit_code=state.exit_code if state.has_exited else None,
            session_id=None if state.has_exited else self.id,
            original_token_count=approx_token_count(len(raw)),
            output=formatted_truncate_text(text, tokens),
            raw_output=raw,
            omitted_bytes=omitted,
            ended_by=ended_by,
            warnings=tuple(warnings),
        )
