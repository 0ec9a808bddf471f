"""Per-process events and write statuses, shared by every backend."""

from __future__ import annotations

import enum
from typing import Literal, TypeAlias

import attrs

__all__ = [
    "ClosedEvent",
    "ExitedEvent",
    "FailedEvent",
    "LostEvent",
    "OutputEvent",
    "ProcessEvent",
    "Stream",
    "WriteStatus",
]

Stream: TypeAlias = Literal["stdout", "stderr", "pty"]
STREAMS: frozenset[str] = frozenset({"stdout", "stderr", "pty"})


class WriteStatus(enum.Enum):
    """Outcome of a write; the values are the exec-server wire strings."""

    ACCEPTED = "accepted"
    UNKNOWN_PROCESS = "unknownProcess"
    STDIN_CLOSED = "stdinClosed"
    STARTING = "starting"


@attrs.frozen
class OutputEvent:
    """Bytes the child wrote on one stream, as one read returned them."""

    seq: int
    stream: Stream
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes {d[:32]!r}>")


@attrs.frozen
class ExitedEvent:
    """The child exited; 128+N when signal N killed it. More output may follow."""

    seq: int
    exit_code: int


@attrs.frozen
class ClosedEvent:
    """Terminal: the child exited and every output stream reached EOF."""

    seq: int


@attrs.frozen
class FailedEvent:
    """Terminal: the process or the link to it broke; nothing more will arrive."""

    message: str


@attrs.frozen
class LostEvent:
    """Seqs ``first_seq..last_seq`` were evicted by retention before this reader saw them.

    Only readers see it; backends never emit it. It exists so that a gap is always
    reported rather than skipped in silence.
    """

    first_seq: int
    last_seq: int


ProcessEvent: TypeAlias = OutputEvent | ExitedEvent | ClosedEvent | FailedEvent
