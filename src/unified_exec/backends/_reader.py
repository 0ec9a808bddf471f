"""Reading a local child's output into its EventQueue.

No task of its own: the supervisor reads when its wait says a stream is readable
(and only with room in the queue: that is how a slow consumer throttles the
child), and so does a consumer about to wait (``poll_output``). A stream is at EOF
only when a read said so: a supervisor that was cancelled has *not* seen EOF, and
whoever still holds the stream's write side must be found and killed (cleanup).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Container

from .._events import Stream
from ._queue import EventQueue

__all__ = ["OutputReader"]

log = logging.getLogger("unified_exec.local")


# One read asks for at most this much (read_size bounds the bytes per wake-up): a
# bytes object of 256 KiB is above glibc's mmap threshold, so os.read(fd, 256 KiB)
# that returns 32 bytes costs an mmap, page faults and an mremap (30 µs against
# 2 µs here), and a full one faults in fresh pages for every chunk (os.read was
# 43% of a 256 MiB pipe stream). 64 KiB buffers come back from the heap, warm.
_FIRST_READ = 64 * 1024


class OutputReader:
    __slots__ = ("_pty", "_queue", "_read_size", "eof", "fds", "label")

    def __init__(self, readers: dict[Stream, int], queue: EventQueue, read_size: int) -> None:
        self.fds = readers  # ours from now on; closed by close()
        for fd in self.fds.values():
            os.set_blocking(fd, False)
        self._queue = queue
        self._read_size = read_size
        self._pty = "pty" in self.fds
        self.eof: list[Stream] = []  # streams whose read returned EOF (or EIO): at most 2
        self.label = ""

    def all_eof(self) -> bool:
        return all(name in self.eof for name in self.fds)

    def live(self) -> list[int]:
        """The fds not at EOF yet, in stream order."""
        eof = self.eof
        return [fd for name, fd in self.fds.items() if name not in eof]

    def read_ready(self, ready: Container[int] | None = None) -> None:
        """Read every stream once (or those whose fd is in ``ready``), stdout first.

        Both pipes often turn readable in the same wake-up; reading them in a fixed
        order keeps ``echo out; echo err >&2`` in the order it was written.
        """
        size = self._read_size
        first = min(size, _FIRST_READ)
        eof = self.eof
        for name, fd in self.fds.items():
            if name not in eof and (ready is None or fd in ready):
                self._read_stream(name, fd, size, first)

    def _read_stream(self, name: Stream, fd: int, size: int, first: int) -> None:
        # Take what is already there, up to read_size. A PTY hands out ~4 KiB per
        # read, so its pieces are coalesced into one event (fewer events, same
        # bytes, same order); a pipe read returns all there is, so a short one
        # means the pipe is empty, and each read is an event of its own (joining
        # 256 KiB would cost a copy and an allocation above the mmap threshold).
        parts: list[bytes] = []
        got = 0
        want = first
        while got < size:
            try:
                data = os.read(fd, want)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every PTY slave fd is closed
                    log.warning("reading %s of %s failed: %s", name, self.label, exc)
                data = b""
            if not data:
                self.eof.append(name)
                break
            got += len(data)
            if self._pty:
                parts.append(data)
                want = min(size - got, _FIRST_READ)
                continue
            self._queue.put_output(name, data)
            if len(data) < want:
                break
            want = min(size - got, _FIRST_READ)
        if parts:
            self._queue.put_output(name, parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self) -> None:
        """Synchronous, so it also runs when the trio run is being torn down. (No
        trio task ever waits on these fds: the supervisor's epoll holds them.)"""
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
