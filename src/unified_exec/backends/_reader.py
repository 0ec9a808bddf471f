"""Reading a local child's output into its EventQueue.

One task per stream waits for readability (and for room in the queue: that wait
is how a slow consumer throttles the child). A stream is at EOF only when a read
said so: a reader task that was cancelled has *not* seen EOF, and whoever still
holds the stream's write side must be found and killed (see supervise/cleanup).
"""

from __future__ import annotations

import errno
import logging
import os

import trio

from .._events import Stream
from ._queue import EventQueue

__all__ = ["OutputReader"]

log = logging.getLogger("unified_exec.local")


class OutputReader:
    def __init__(self, readers: dict[Stream, int], queue: EventQueue, read_size: int) -> None:
        self.fds = dict(readers)  # ours; closed by close()
        for fd in self.fds.values():
            os.set_blocking(fd, False)
        self._queue = queue
        self._read_size = read_size
        self.eof: set[Stream] = set()  # streams whose read returned EOF (or EIO)
        self.label = ""

    def all_eof(self) -> bool:
        return all(name in self.eof for name in self.fds)

    async def read_loop(self, name: Stream) -> None:
        try:
            while name not in self.eof:
                await self._queue.wait_room()
                await trio.lowlevel.wait_readable(self.fds[name])
                self.read_ready()
        finally:
            self._queue.notify()  # a cancelled loop leaves eof as it was: the truth

    def read_ready(self) -> None:
        """Read every ready stream once, stdout before stderr.

        Both pipes often turn readable in the same wake-up; reading them in a fixed
        order (rather than in whatever order trio runs the tasks) keeps
        ``echo out; echo err >&2`` in the order it was written.
        """
        size = self._read_size
        for name, fd in self.fds.items():
            if name in self.eof:
                continue
            # Coalesce what is already there (a PTY hands out ~4 KiB per read) into
            # one event of up to read_size: fewer events, same bytes, same order.
            parts: list[bytes] = []
            got = 0
            while got < size:
                try:
                    data = os.read(fd, size - got)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: every PTY slave fd is closed
                        log.warning("reading %s of %s failed: %s", name, self.label, exc)
                    data = b""
                if not data:
                    self.eof.add(name)
                    break
                parts.append(data)
                got += len(data)
            if parts:
                self._queue.put_output(name, parts[0] if len(parts) == 1 else b"".join(parts))
            if name in self.eof:
                self._queue.notify()

    def close(self) -> None:
        """Synchronous, so it also runs when the trio run is being torn down."""
        for fd in self.fds.values():
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
        self.fds.clear()
