"""The descriptors of one local spawn: what the child gets, and what we keep.

Pipes for stdout and stderr (grown, so a flooding child needs fewer wake-ups), an
optional stdin pipe, or one PTY. The child's ends are moved above fd 2 so the
spawn's dup2 onto 0..2 never meets itself; ours are closed on every failure path.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from typing import TypeAlias

import attrs

from .._events import Stream
from .._request import ExecRequest
from ._spawn import DupFd, OpenPath

__all__ = ["ChildFds", "Stdio", "set_winsize"]

_PIPE_BYTES = 256 * 1024

Stdio: TypeAlias = tuple[DupFd | OpenPath, DupFd | OpenPath, DupFd | OpenPath]


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _grow_pipe(fd: int) -> None:
    """A bigger pipe lets the child run further ahead: fewer wake-ups per MiB."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:  # over /proc/sys/fs/pipe-max-size or the user's pipe quota
        pass


def _high_fd(fd: int) -> int:
    """Move fd above 2 so that dup2 onto 0..2 never meets itself."""
    if fd > 2:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new


@attrs.define
class ChildFds:
    """The descriptors of one spawn: the child's side, and the side we keep."""

    stdio: Stdio
    readers: dict[Stream, int]  # ours: output to read
    stdin: int | None  # ours: pipe stdin to write (a PTY is written via its master)
    master: int | None  # ours: the PTY master (also in readers)
    links: set[str]  # what /proc/*/fd shows for the child's end of our output
    child_side: list[int]

    @classmethod
    def open(cls, request: ExecRequest) -> ChildFds:
        opened: list[int] = []
        try:
            return cls._open(request, opened)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise

    @classmethod
    def _open(cls, request: ExecRequest, opened: list[int]) -> ChildFds:
        def pipe() -> tuple[int, int]:
            r, w = os.pipe()
            opened.extend((r, w))
            return r, w

        def high(fd: int) -> int:
            new = _high_fd(fd)
            opened[opened.index(fd)] = new
            return new

        if request.tty:
            master, slave = os.openpty()
            opened.extend((master, slave))
            set_winsize(master, *request.size)
            name = os.ttyname(slave)
            # After setsid, the child opening the slave makes it its controlling tty.
            stdio: Stdio = (OpenPath(name, os.O_RDWR), DupFd(0), DupFd(0))
            return cls(stdio, {"pty": master}, None, master, {name}, [slave])
        out_r, out_w = pipe()
        err_r, err_w = pipe()
        _grow_pipe(out_r)
        _grow_pipe(err_r)
        child_side = [high(out_w), high(err_w)]
        stdin: int | None = None
        stdin_src: DupFd | OpenPath = OpenPath(os.devnull, os.O_RDONLY)
        if request.pipe_stdin:
            in_r, stdin = pipe()
            child_side.append(high(in_r))
            stdin_src = DupFd(child_side[-1])
        links = {f"pipe:[{os.fstat(fd).st_ino}]" for fd in (out_r, err_r)}
        stdio = (stdin_src, DupFd(child_side[0]), DupFd(child_side[1]))
        return cls(stdio, {"stdout": out_r, "stderr": err_r}, stdin, None, links, child_side)

    def close_child_side(self) -> None:
        for fd in self.child_side:
            os.close(fd)
        self.child_side.clear()

    def close_parent_side(self) -> None:
        for fd in self.readers.values():
            os.close(fd)
        if self.stdin is not None:
            os.close(self.stdin)
