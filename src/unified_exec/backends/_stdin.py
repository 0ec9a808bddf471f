"""Writing to a local child: its stdin pipe, or its PTY master.

One write at a time (a lock), so concurrent writers never interleave their bytes.
A write blocked on a full pipe must not outlive the process: exit, terminate and
close_stdin cancel it, and it answers STDIN_CLOSED rather than hanging.
"""

from __future__ import annotations

import os

import trio

from .._events import WriteStatus

__all__ = ["StdinWriter"]


class StdinWriter:
    # The FdStream and the lock are made on the first write that has to wait: most
    # writes never do, and an idle session is then ~1 KiB smaller.
    __slots__ = ("_fd", "_lock", "_scopes", "_stream", "shut")

    def __init__(self, fd: int | None) -> None:
        """``fd``: ours to own (closed by close()), or None for a child without stdin."""
        if fd is not None:
            os.set_blocking(fd, False)
        self._fd = fd
        self._stream: trio.lowlevel.FdStream | None = None
        self._lock: trio.Lock | None = None
        self._scopes: set[trio.CancelScope] | None = None
        self.shut = False  # set at exit or terminate: every write answers STDIN_CLOSED

    async def write(self, data: bytes) -> WriteStatus:
        fd = self._fd
        if fd is None or self.shut:
            return WriteStatus.STDIN_CLOSED
        if not data:
            await trio.lowlevel.checkpoint()
            return WriteStatus.ACCEPTED
        if self._lock is None or not self._lock.locked():
            # The usual case, nobody else writing: one non-blocking write, and one
            # schedule point after it instead of the lock's and send_all's two. A
            # cancelled caller writes nothing; once written, it is not cancelled.
            await trio.lowlevel.checkpoint_if_cancelled()
            sent = self._write_now(fd, data)
            if sent < 0 or sent == len(data):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return WriteStatus.STDIN_CLOSED if sent < 0 else WriteStatus.ACCEPTED
            # A full pipe: the rest waits in the lock's queue (nothing ran since the
            # write, so nobody can take the lock before us and interleave).
            data = data[sent:]
        return await self._write_locked(fd, data)

    async def _write_locked(self, fd: int, data: bytes) -> WriteStatus:
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            if self.shut or self._fd != fd:  # closed (send_eof) while we queued
                return WriteStatus.STDIN_CLOSED
            if self._stream is None:
                self._stream = trio.lowlevel.FdStream(fd)
            if self._scopes is None:
                self._scopes = set()
            scopes = self._scopes
            with trio.CancelScope() as scope:
                scopes.add(scope)
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return WriteStatus.STDIN_CLOSED
                finally:
                    scopes.discard(scope)
            if scope.cancelled_caught:
                return WriteStatus.STDIN_CLOSED
        return WriteStatus.ACCEPTED

    @staticmethod
    def _write_now(fd: int, data: bytes) -> int:
        """Bytes written without waiting (0 if the pipe is full), -1 if it is broken."""
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError:  # EPIPE, EIO, EBADF: nobody will read it
            return -1

    def cancel(self) -> None:
        """Make every pending and future write answer STDIN_CLOSED."""
        self.shut = True
        self._cancel_pending()

    def _cancel_pending(self) -> None:
        for scope in self._scopes or ():
            scope.cancel()

    async def send_eof(self) -> None:
        """Close our end: the child reads EOF once the pipe drains."""
        fd = self._fd
        if fd is not None:
            self._fd = None
            self._cancel_pending()
            stream, self._stream = self._stream, None
            if stream is None:
                os.close(fd)  # no stream, so no writer waits on it
            else:
                assert self._lock is not None  # made before the stream
                async with self._lock:
                    await stream.aclose()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Synchronous, for teardown."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        elif self._fd is not None:
            os.close(self._fd)
        self._fd = None


def dup_for_writing(master: int | None, stdin: int | None) -> int | None:
    """A PTY is written through a second fd on its master (the first one is read)."""
    return os.dup(master) if master is not None else stdin
