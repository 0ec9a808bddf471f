"""The warden process: kills what a dead owner started.

Run by path as ``python -I -S _warden_main.py`` (stdlib only, no package import:
it starts in a few milliseconds and cannot be broken by the owner's environment).
fd 0 is the read end of a pipe whose only writer is the owner. The owner sends
one line per event (each far below PIPE_BUF, so writes never interleave):

    L <id> <link>...            before a spawn: the child's output pipes / pty
    P <id> <pid>                after the spawn: the session leader
    U <id>                      after the owner reaped it and closed its side

fd 1 is a SOCK_SEQPACKET socket on which the owner passes, for a PTY child, a
copy of its master (message ``M <id>``, the fd as SCM_RIGHTS). Holding it keeps
the pty's number taken until the child is unregistered or killed: without it, the
owner's death frees ``/dev/pts/N`` as soon as the child dies, the next pty opened
on the machine gets that name, and a holder scan would kill a stranger.

EOF means the owner is gone, however it died (SIGKILL included, where nothing of
the owner's own cleanup runs). Then every still-registered child dies: its
session, its descendants, and whoever still holds one of its streams (a setsid
escapee), then the warden exits. The first thing it does is fork and let the
parent exit, so it is nobody's child (the owner reaps the parent at once).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import time

_ROUNDS = 20
_ROUND_PAUSE = 0.05
# Read at most this often: registrations wait in the pipe meanwhile, so a burst of
# spawns costs the owner no wake-up of ours per write (and EOF is seen that late).
_BATCH_PAUSE = 0.02


class _Entry:
    __slots__ = ("links", "master", "pid", "start")

    def __init__(self, links: set[str]) -> None:
        self.links = links
        self.pid = 0
        self.start = 0
        self.master = -1  # our copy of a PTY child's master, or -1


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


class _Masters:
    """The PTY masters the owner passes on fd 1, matched to their registrations."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.early: dict[int, int] = {}  # id -> fd, for an L line not read yet
        self.highest = 0  # the highest id an L line has registered

    def drain(self, entries: dict[str, _Entry]) -> None:
        while self.sock is not None:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.sock, 64, 1)
            except BlockingIOError:
                return
            except OSError:
                msg, fds = b"", []
            if not msg:
                self.sock = None  # the owner is gone (or this channel never was)
                for fd in fds:
                    _close(fd)
                return
            parts = msg.split()
            if len(parts) != 2 or parts[0] != b"M" or not parts[1].isdigit() or len(fds) != 1:
                for fd in fds:
                    _close(fd)
                continue
            key = parts[1].decode()
            entry = entries.get(key)
            if entry is not None:
                _close(entry.master)
                entry.master = fds[0]
            elif int(key) > self.highest:
                self.early[int(key)] = fds[0]
            else:  # unregistered already
                _close(fds[0])

    def registered(self, key: str, entry: _Entry) -> None:
        self.highest = max(self.highest, int(key))
        fd = self.early.pop(int(key), -1)
        if fd >= 0:
            entry.master = fd


def _stat(pid: str) -> tuple[int, int, int, int, bytes] | None:
    """(ppid, pgid, sid, starttime, state) of one process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0]


def _victims(entries: dict[str, _Entry], me: int) -> set[int]:
    """Every live process that belongs to a registered child."""
    table: dict[int, tuple[int, int, int, int, bytes]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st is not None and st[4] != b"Z":
                table[int(name)] = st
    roots: dict[int, int] = {}  # leader pid -> its start time, pid reuse ruled out
    for entry in entries.values():
        if entry.pid:
            now = table.get(entry.pid)
            if now is None or now[3] == entry.start:
                roots[entry.pid] = entry.start
    found: set[int] = set()
    children: dict[int, list[int]] = {}
    for pid, (ppid, pgid, sid, start, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
        for key in (sid, pgid):
            if key in roots and start >= roots[key]:
                found.add(pid)
    todo = list(roots) + list(found)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    links = set().union(*(e.links for e in entries.values())) if entries else set()
    if links:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import _procfs  # type: ignore[import-not-found]  # the sibling module, stdlib only

        found |= _procfs.holders(links)
    found.discard(me)
    return found


def _kill_everything(entries: dict[str, _Entry]) -> None:
    me = os.getpid()
    for _ in range(_ROUNDS):  # again, for whatever forked while we were scanning
        victims = _victims(entries, me)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(_ROUND_PAUSE)


def _apply(line: str, entries: dict[str, _Entry], masters: _Masters | None = None) -> None:
    parts = line.split()
    if len(parts) >= 2 and parts[0] == "L" and parts[1].isdigit():
        old = entries.pop(parts[1], None)
        if old is not None:
            _close(old.master)
        entries[parts[1]] = entry = _Entry(set(parts[2:]))
        if masters is not None:
            masters.registered(parts[1], entry)
    elif len(parts) == 3 and parts[0] == "P" and parts[1] in entries:
        # Its start time, read now, tells it from a later process with its pid. The
        # owner holds the zombie until after its last kill and unregisters it right
        # after the reap, so the pid is still the child's, or the U line follows.
        st = _stat(parts[2])
        if st is not None:
            entries[parts[1]].pid = int(parts[2])
            entries[parts[1]].start = st[3]
    elif len(parts) == 2 and parts[0] == "U":
        gone = entries.pop(parts[1], None)
        if gone is not None:
            _close(gone.master)


def main() -> None:
    if os.fork() != 0:
        os._exit(0)  # the owner reaps this one; the warden itself is nobody's child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:  # one fd per live PTY child: as many as we may have
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass
    try:
        sock: socket.socket | None = socket.socket(fileno=1)
        if sock is not None and sock.type != socket.SOCK_SEQPACKET:
            sock.detach()
            sock = None
    except OSError:  # fd 1 is /dev/null: an owner that passes no masters
        sock = None
    if sock is not None:
        sock.setblocking(False)
    masters = _Masters(sock)
    entries: dict[str, _Entry] = {}
    pending = b""
    while True:
        try:
            data = os.read(0, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries this
            continue
        except OSError:
            data = b""
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                _apply(line.decode("ascii", "replace"), entries, masters)
            except ValueError:
                continue
        masters.drain(entries)
        time.sleep(_BATCH_PAUSE)
    masters.drain(entries)  # what the owner passed before it died
    _kill_everything(entries)


if __name__ == "__main__":
    main()
