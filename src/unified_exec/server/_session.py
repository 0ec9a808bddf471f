"""Sessions and process entries of our exec-server, independent of the transport.

A session owns processes; a connection attaches to one session at a time. On a
websocket close the session is detached, not ended: its processes keep running
(output retained, not pushed) until a client resumes it or ``detach_timeout``
passes. Closed entries stay readable for ``retain_closed`` seconds.

A session id is a capability: whoever presents it in ``initialize{resumeSessionId}``
gets the session, so it is drawn from the OS's CSPRNG (uuid4) and sent only to the
connection that created the session.
"""

from __future__ import annotations

import collections
import logging
import uuid
from typing import Literal

import attrs
import trio

from .._process import UnifiedExecProcess

__all__ = ["Entry", "Session", "SessionStore", "WriteRecord"]

log = logging.getLogger("unified_exec.server")

_WRITE_IDS_KEPT = 4096


@attrs.define(eq=False)
class WriteRecord:
    """What became of one writeId, so that a replay gets the same answer.

    ``status`` is the wire status, or ``error`` the (code, message) it was refused with;
    ``done`` is set once either is known (a replay that arrives while the first write
    is still in progress waits for it rather than writing the bytes a second time).
    """

    done: trio.Event = attrs.field(factory=trio.Event)
    status: Literal["accepted", "unknownProcess", "stdinClosed", "starting"] | None = None
    error: tuple[int, str] | None = None


@attrs.define(eq=False)
class Entry:
    """One process id in a session: starting, then a live or finished process."""

    process_id: str
    phase: Literal["starting", "running"] = "starting"
    proc: UnifiedExecProcess | None = None
    tty: bool = False
    pipe_stdin: bool = False
    terminated: bool = False  # by process/terminate (writes then fail, as in codex)
    start_cancelled: bool = False
    stdin_closed: bool = False  # by our process/closeStdin extension
    # How its end is being waited for, to forget it retain_closed s later (_server).
    expiry: Literal["watching", "expiring"] | None = None
    write_ids: collections.OrderedDict[str, WriteRecord] = attrs.field(
        factory=collections.OrderedDict
    )
    max_write_ids: int = _WRITE_IDS_KEPT

    def remember_write(self, write_id: str) -> tuple[WriteRecord, bool]:
        """The record for ``write_id``, and whether it is new (then the caller writes
        and fills it in). The oldest writeIds are forgotten past ``max_write_ids``."""
        record = self.write_ids.get(write_id)
        if record is not None:
            return record, False
        record = self.write_ids[write_id] = WriteRecord()
        while len(self.write_ids) > self.max_write_ids:
            self.write_ids.popitem(last=False)
        return record, True

    def forget_write(self, write_id: str, record: WriteRecord) -> None:
        """The write with this id never happened (cancelled): a replay may do it."""
        if self.write_ids.get(write_id) is record:
            del self.write_ids[write_id]
        record.done.set()

    @property
    def live(self) -> bool:
        """Starting or running: counts against the process limits."""
        return self.proc is None or not self.proc.closed


class _Entries(dict[str, Entry]):
    """A session's entries, which also remember every entry stored as possibly live.

    ``live_count()`` then looks at those alone, not at the closed entries retained
    for ``retain_closed`` (thousands, on a busy server: a scan of them all on every
    ``process/start`` was a fifth of the server's time starting 100 processes).
    """

    def __init__(self) -> None:
        super().__init__()
        self.maybe_live: set[Entry] = set()

    def __setitem__(self, key: str, entry: Entry) -> None:
        super().__setitem__(key, entry)
        self.maybe_live.add(entry)


@attrs.define(eq=False)
class Session:
    session_id: str
    entries: dict[str, Entry] = attrs.field(factory=_Entries)
    attached: object | None = None  # the connection, when one is attached
    detaches: int = 0  # counts detaches, so a stale expiry timer can tell it is stale

    def live_processes(self) -> list[UnifiedExecProcess]:
        return [e.proc for e in self.entries.values() if e.proc is not None and not e.proc.closed]

    def live_count(self) -> int:
        """Entries of this session that are starting or running."""
        entries = self.entries
        if not isinstance(entries, _Entries):  # replaced by a plain dict: scan it
            return sum(1 for e in entries.values() if e.live)
        maybe = entries.maybe_live
        gone = [e for e in maybe if not e.live or entries.get(e.process_id) is not e]
        maybe.difference_update(gone)
        return len(maybe)


class SessionStore:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    def live_count(self) -> int:
        return sum(s.live_count() for s in self.sessions.values())

    def new(self) -> Session:
        session = Session(session_id=str(uuid.uuid4()))
        self.sessions[session.session_id] = session
        return session
