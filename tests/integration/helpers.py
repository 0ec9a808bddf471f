"""Small helpers for tests that run real processes."""

from __future__ import annotations

import os

import unified_exec as ue

from .._support import alive

__all__ = ["alive", "collect", "session_commands", "session_members", "sh"]


def sh(script: str, **kw: object) -> ue.ExecRequest:
    return ue.ExecRequest(argv=["sh", "-c", script], **kw)  # type: ignore[arg-type]


async def collect(proc: ue.UnifiedExecProcess) -> tuple[dict[str, bytes], list[object]]:
    """Consume events(); return bytes per stream and the event list (data elided)."""
    out: dict[str, bytearray] = {}
    events: list[object] = []
    async for ev in proc.events():
        if isinstance(ev, ue.OutputEvent):
            out.setdefault(ev.stream, bytearray()).extend(ev.data)
        events.append(ev)
    return {k: bytes(v) for k, v in out.items()}, events


def session_members(sid: int) -> set[int]:
    """Live processes whose session id is sid."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[3]) == sid:
            found.add(int(name))
    return found


def session_commands(sid: int) -> list[str]:
    """Command names (comm) of the live processes in session sid."""
    names = []
    for pid in session_members(sid):
        try:
            with open(f"/proc/{pid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            continue
    return names
