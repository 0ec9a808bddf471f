"""Finding the processes a process group kill does not reach, through /proc.

A descendant can leave the group (setsid) and keep our output pipe or pty open;
killpg misses it and it would hold the stream open forever. Two ways to find it:
walk the parent links while the leader still lives, or look for whoever holds
our stream's write side. Job control on a PTY puts commands in process groups of
their own, still inside the child's session: those are found by session id.

Standard library only: the warden process (``_warden_main.py``) imports this file
by path, without the package. Every scan reads all of /proc, so callers on the trio
thread run it through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import os
import signal

__all__ = ["descendants", "family", "holders", "kill_all"]


def _ppids() -> dict[int, int]:
    return {pid: ppid for pid, (ppid, _sid) in _table().items()}


def _table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, sid) of every process, zombies included (a zombie is a child
    nobody reaped yet; signalling it is harmless)."""
    out: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and ')' : the fields after the last ')' are safe.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3:
            out[int(name)] = (int(fields[1]), int(fields[3]))
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` in the parent tree."""
    children: dict[int, list[int]] = {}
    for child, parent in _ppids().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def family(pid: int) -> set[int]:
    """Every live process below ``pid`` or in the session ``pid`` leads (but not pid)."""
    table = _table()
    children: dict[int, list[int]] = {}
    found: set[int] = set()
    for child, (parent, sid) in table.items():
        children.setdefault(parent, []).append(child)
        if sid == pid and child != pid:
            found.add(child)
    todo = [pid, *found]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def holders(targets: set[str]) -> set[int]:
    """Processes (other than us) with an open fd whose link is one of ``targets``.

    Targets look like ``/dev/pts/3`` or ``pipe:[12345]``.
    """
    me = os.getpid()
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
                if link in targets and (
                    not link.startswith("pipe:") or _can_write(f"/proc/{name}/fdinfo/{fd}")
                ):
                    found.add(int(name))
                    break
            except OSError:
                continue
    return found


def _can_write(fdinfo: str) -> bool:
    """Both ends of a pipe show the same link; only a writer keeps our stream open
    (a forked copy of this interpreter holding a read end must be left alone)."""
    with open(fdinfo) as f:
        for line in f:
            if line.startswith("flags:"):
                return (int(line.split()[1], 8) & os.O_ACCMODE) != os.O_RDONLY
    return True


def kill_all(pids: set[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
