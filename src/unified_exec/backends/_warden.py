"""The owner's side of the warden: no child outlives this Python process.

``PR_SET_PDEATHSIG`` cannot be set through posix_spawn, and would not cover
grandchildren anyway (nor setsid escapees). So one small supervisor process per
owner (``_warden_main.py``) holds the read end of a pipe whose write end only this
process holds (O_CLOEXEC, closed in forked children, never given to a spawn). Each
child is registered with two short writes, before and after its spawn, and
unregistered once reaped. However the owner dies — SIGKILL included — the kernel
closes the write end; on that EOF the warden kills every registered child's
session, its descendants and the holders of its streams, then exits. For a PTY
child the warden also holds a copy of the master (passed on a socket): that keeps
the pty's name from going to someone else's pty after our death, while the warden
still looks for holders of that name.

Fail-open: if the warden cannot be started (no interpreter path, out of pids...),
spawns still work and a warning is logged once. Losing the warden only loses the
owner-death guarantee; every ordinary path (exit, terminate, cancellation, the end
of the trio run) is still covered by the supervisor.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import socket
import sys
import threading

from ._spawn import DupFd, OpenPath, spawn

__all__ = ["Warden", "warden"]

log = logging.getLogger("unified_exec.local")

_PIPE_BYTES = 1024 * 1024
_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_warden_main.py")


def start_time(pid: int) -> int:
    """The kernel's start time of ``pid`` (clock ticks since boot), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else 0


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # someone else's waitpid(-1) got it
        pass


class Warden:
    """Registrations with the warden process; every method is cheap and never raises."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # backends in several trio runs (threads) share it
        self._fd: int | None = None
        self._sock: socket.socket | None = None  # passes PTY masters to the warden
        self._masters: dict[int, int] = {}  # registration id -> our master fd
        self._failed = False
        self._ids = itertools.count(1)
        self._live: dict[int, list[str]] = {}  # what to replay to a restarted warden

    # -- public ----------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Started, or given up on: registering will not block on a launch."""
        return self._fd is not None or self._failed

    def ensure_started(self) -> None:
        """Start the warden now (it blocks for a few ms: call it off the trio thread)."""
        with self._lock:
            self._ensure()

    def before_spawn(self, links: set[str], master: int | None = None) -> int:
        """Register a child's streams before it exists; returns its registration id.

        ``master``: a PTY child's master fd, which the warden keeps a copy of while
        the child is registered (ours stays open until after ``forget``).
        """
        key = next(self._ids)
        self._record(key, f"L {key} {' '.join(sorted(links))}\n")
        if master is not None:
            with self._lock:
                self._masters[key] = master
                self._pass_master(key, master)
        return key

    def after_spawn(self, key: int, pid: int) -> None:
        # The warden reads the pid's start time itself (off our thread): the zombie
        # is ours until we reap it, and unregister right after.
        self._record(key, f"P {key} {pid}\n")

    def forget(self, key: int) -> None:
        with self._lock:
            self._masters.pop(key, None)
            if self._live.pop(key, None) is not None and self._fd is not None:
                self._send(f"U {key}\n".encode())

    # -- internals --------------------------------------------------------------

    def _record(self, key: int, line: str) -> None:
        with self._lock:
            self._live.setdefault(key, []).append(line)
            if self._ensure():
                self._send(line.encode())

    def _ensure(self) -> bool:
        if self._fd is not None:
            return True
        if self._failed:
            return False
        try:
            self._fd = self._launch()
        except OSError as exc:
            self._failed = True
            log.warning(
                "cannot start the unified_exec warden (%s): children of this process "
                "will outlive it if it is killed",
                exc,
            )
            return False
        for lines in self._live.values():  # a restart: tell the new warden everything
            for line in lines:
                self._send(line.encode(), replay=True)
        for key, master in self._masters.items():
            self._pass_master(key, master)
        return self._fd is not None

    def _pass_master(self, key: int, master: int) -> None:
        """Best effort: without it, only the pty-name guard is lost, not the warden."""
        sock = self._sock
        if sock is None or self._fd is None:
            return
        try:
            socket.send_fds(sock, [f"M {key}".encode()], [master])
        except OSError as exc:
            sock.close()
            self._sock = None
            log.warning("cannot pass pty masters to the unified_exec warden: %s", exc)

    def _launch(self) -> int:
        if not sys.executable or not os.path.exists(_SCRIPT):
            raise OSError(0, f"no interpreter or no {_SCRIPT}")
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Room for thousands of masters in flight (the warden reads in batches).
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _PIPE_BYTES)
        except OSError:
            pass
        try:
            # Room for thousands of registrations: the warden reads in batches.
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass
        try:
            devnull = OpenPath(os.devnull, os.O_RDWR)
            pid = spawn(
                sys.executable,
                [sys.executable, "-I", "-S", _SCRIPT],
                {"PATH": os.defpath},
                "/",
                (DupFd(read_end), DupFd(theirs.fileno()), devnull),
            )
        except BaseException:
            os.close(write_end)
            ours.close()
            raise
        finally:
            os.close(read_end)
            theirs.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = ours
        # The warden forks at once and its parent exits: reap that parent, so the
        # warden is nobody's child and never shows up as ours. In a thread: the
        # interpreter takes a while to start, and nobody needs to wait for it
        # (registrations wait in the pipe).
        threading.Thread(
            target=_reap, args=(pid,), name="unified_exec warden reaper", daemon=True
        ).start()
        return write_end

    def _send(self, data: bytes, *, replay: bool = False) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            os.write(fd, data)  # < PIPE_BUF: atomic, and the warden reads promptly
        except OSError as exc:
            os.close(fd)
            self._fd = None
            if replay:
                self._failed = True
                log.warning("the unified_exec warden died at start-up: %s", exc)
                return
            log.warning("the unified_exec warden went away (%s); starting another", exc)
            self._ensure()

    def _after_fork_in_child(self) -> None:
        """A forked copy is not the owner: drop the write end (it would keep the warden
        from ever seeing the owner's death) and every registration."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._masters.clear()
        self._failed = False
        self._live.clear()
        self._lock = threading.Lock()


warden = Warden()
os.register_at_fork(after_in_child=warden._after_fork_in_child)
