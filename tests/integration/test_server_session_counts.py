"""Session.live_count(): starting and running entries only, exact after any change."""

from __future__ import annotations

from typing import Any

from unified_exec.server._session import Entry, Session


class _Proc:
    def __init__(self) -> None:
        self.closed = False


def _entry(pid: str, proc: Any = None) -> Entry:
    entry = Entry(process_id=pid)
    entry.proc = proc
    return entry


def test_live_count_follows_starts_closes_pops_and_replacements() -> None:
    session = Session(session_id="s")
    procs = [_Proc() for _ in range(5)]
    for i, proc in enumerate(procs):
        session.entries[f"p{i}"] = _entry(f"p{i}", proc)
    session.entries["starting"] = _entry("starting")
    assert session.live_count() == 6
    procs[0].closed = True
    procs[1].closed = True
    assert session.live_count() == 4  # closed but retained: not live
    session.entries.pop("starting")  # a start that failed
    assert session.live_count() == 3
    del session.entries["p0"]  # expired
    session.entries["p2"] = _entry("p2", _Proc())  # same id, a new entry
    assert session.live_count() == 3
    again = session.entries.pop("p3")
    session.entries["p3"] = again  # put back
    assert session.live_count() == 3
    for proc in procs:
        proc.closed = True
    assert session.live_count() == 1  # the new p2
    expected = sum(1 for e in session.entries.values() if e.live)
    assert session.live_count() == expected
