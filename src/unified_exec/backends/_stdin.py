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
    def __init__(self, fd: int | None) -> None:
        """``fd``: ours to own (closed by close()), or None for a child without stdin."""
        self._stream = trio.lowlevel.FdStream(fd) if fd is not None else None
        self._lock = trio.Lock()
        self._scopes: set[trio.CancelScope] = set()
        self.shut = False  # set at exit or terminate: every write answers STDIN_CLOSED

    async def write(self, data: bytes) -> WriteStatus:
        stream = self._stream
        if stream is None or self.shut:
            return WriteStatus.STDIN_CLOSED
        if not data:
            await trio.lowlevel.checkpoint()
            return WriteStatus.ACCEPTED
        if not self._lock.locked():
            # The usual case, nobody else writing: one non-blocking write, and one
            # schedule point after it instead of the lock's and send_all's two. A
            # cancelled caller writes nothing; once written, it is not cancelled.
            await trio.lowlevel.checkpoint_if_cancelled()
            sent = self._write_now(stream, data)
            if sent < 0 or sent == len(data):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return WriteStatus.STDIN_CLOSED if sent < 0 else WriteStatus.ACCEPTED
            # A full pipe: the rest waits in the lock's queue (nothing ran since the
            # write, so nobody can take the lock before us and interleave).
            data = data[sent:]
        return await self._write_locked(stream, data)

    async def _write_locked(self, stream: trio.lowlevel.FdStream, data: bytes) -> WriteStatus:
        async with self._lock:
            if self.shut or self._stream is not stream:
                return WriteStatus.STDIN_CLOSED
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return WriteStatus.STDIN_CLOSED
                finally:
                    self._scopes.discard(scope)
            if scope.cancelled_caught:
                return WriteStatus.STDIN_CLOSED
        return WriteStatus.ACCEPTED

    @staticmethod
    def _write_now(stream: trio.lowlevel.FdStream, data: bytes) -> int:
        """Bytes written without waiting (0 if the pipe is full), -1 if it is broken."""
        try:
            return os.write(stream.fileno(), data)
        except BlockingIOError:
            return 0
        except OSError:  # EPIPE, EIO, EBADF: nobody will read it
            return -1

    def cancel(self) -> None:
        """Make every pending and future write answer STDIN_CLOSED."""
        self.shut = True
        self._cancel_pending()

    def _cancel_pending(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    async def send_eof(self) -> None:
        """Close our end: the child reads EOF once the pipe drains."""
        stream = self._stream
        if stream is not None:
            self._stream = None
            self._cancel_pending()
            async with self._lock:
                await stream.aclose()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Synchronous, for teardown."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def dup_for_writing(master: int | None, stdin: int | None) -> int | None:
    """A PTY is written through a second fd on its master (the first one is read)."""
    return os.dup(master) if master is not None else stdin
