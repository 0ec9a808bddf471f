"""Sessions and process entries of our exec-server, independent of the transport.

A session owns processes; a connection attaches to one session at a time. On a
websocket close the session is detached, not ended: its processes keep running
(output retained, not pushed) until a client resumes it or ``detach_timeout``
passes. Closed entries stay readable for ``retain_closed`` seconds.
"""

from __future__ import annotations

import collections
import logging
import uuid
from typing import Literal

import attrs

from .._process import UnifiedExecProcess

__all__ = ["Entry", "Session", "SessionStore"]

log = logging.getLogger("unified_exec.server")

_WRITE_IDS_KEPT = 4096


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
    write_ids: collections.OrderedDict[str, None] = attrs.field(factory=collections.OrderedDict)

    def remember_write(self, write_id: str) -> bool:
        """False if this write id was seen (the bytes must not be written twice)."""
        if write_id in self.write_ids:
            return False
        self.write_ids[write_id] = None
        if len(self.write_ids) > _WRITE_IDS_KEPT:
            self.write_ids.popitem(last=False)
        return True


@attrs.define(eq=False)
class Session:
    session_id: str
    entries: dict[str, Entry] = attrs.field(factory=dict)
    attached: object | None = None  # the connection, when one is attached
    detaches: int = 0  # counts detaches, so a stale expiry timer can tell it is stale

    def live_processes(self) -> list[UnifiedExecProcess]:
        return [e.proc for e in self.entries.values() if e.proc is not None and not e.proc.closed]


class SessionStore:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    def new(self) -> Session:
        session = Session(session_id=str(uuid.uuid4()))
        self.sessions[session.session_id] = session
        return session
