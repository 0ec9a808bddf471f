"""Writing to a local child: its stdin pipe, or its PTY master.

One write at a time (a lock), so concurrent writers never interleave their bytes.
A write blocked on a full pipe must not outlive the process: exit, terminate and
close_stdin cancel it, and it answers STDIN_CLOSED rather than hanging. A
cancelled caller writes nothing; a write the kernel took whole is never reported
cancelled; a caller cancelled while its write waits for room (a child that does
not read) gets Cancelled there, with what the pipe took so far written.
"""

from __future__ import annotations

import os

import trio

from .._events import WriteStatus

__all__ = ["StdinWriter"]

# A write the kernel takes at once returns without a scheduler pass (a pass costs
# ~20 µs here, as much as the write itself); every this-many such writes one does
# take a pass, so a loop that only writes cannot starve the other tasks.
_PASS_EVERY = 16


class StdinWriter:
    # The lock is made on the first write that has to wait: most writes never do.
    __slots__ = ("_fd", "_lock", "_scopes", "_unscheduled", "shut")

    def __init__(self, fd: int | None) -> None:
        """``fd``: ours to own (closed by close()), or None for a child without stdin."""
        if fd is not None:
            os.set_blocking(fd, False)
        self._fd = fd
        self._lock: trio.Lock | None = None
        self._scopes: set[trio.CancelScope] | None = None
        self._unscheduled = 0  # writes since the last scheduler pass
        self.shut = False  # set at exit or terminate: every write answers STDIN_CLOSED

    async def write(self, data: bytes) -> WriteStatus:
        fd = self._fd
        if fd is None or self.shut:
            return WriteStatus.STDIN_CLOSED
        if not data:
            await trio.lowlevel.checkpoint()
            return WriteStatus.ACCEPTED
        if self._lock is not None and self._lock.locked():
            return await self._write_locked(fd, data, written=False)
        # The usual case, nobody else writing: one non-blocking write. A cancelled
        # caller writes nothing; once written, it is not cancelled.
        await trio.lowlevel.checkpoint_if_cancelled()
        sent = self._write_now(fd, data)
        if sent < 0 or sent == len(data):
            self._unscheduled += 1
            if self._unscheduled >= _PASS_EVERY:
                self._unscheduled = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return WriteStatus.STDIN_CLOSED if sent < 0 else WriteStatus.ACCEPTED
        # A full pipe: the rest is written under the lock (nothing ran since the
        # write, so nobody else holds it or waits for it, and nobody interleaves).
        return await self._write_locked(fd, data[sent:], written=sent > 0)

    async def _write_locked(self, fd: int, rest: bytes, *, written: bool) -> WriteStatus:
        self._unscheduled = 0  # this way nearly always waits
        if self._lock is None:
            self._lock = trio.Lock()
        lock = self._lock
        if written:
            # Not acquire(): its checkpoint could raise Cancelled before the rest
            # was even tried, with the first part written and the rest dropped.
            lock.acquire_nowait()
        else:
            await lock.acquire()
        try:
            if self.shut or self._fd != fd:  # closed (send_eof) while we queued
                return WriteStatus.STDIN_CLOSED
            if self._scopes is None:
                self._scopes = set()
            scopes = self._scopes
            data = memoryview(rest)
            with trio.CancelScope() as scope:
                scopes.add(scope)
                try:
                    while True:
                        sent = self._write_now(fd, data)
                        if sent < 0:
                            return WriteStatus.STDIN_CLOSED
                        data = data[sent:]
                        if not data:
                            break
                        await trio.lowlevel.wait_writable(fd)
                except trio.ClosedResourceError:  # send_eof closed the fd
                    return WriteStatus.STDIN_CLOSED
                finally:
                    scopes.discard(scope)
            if scope.cancelled_caught:
                return WriteStatus.STDIN_CLOSED
            return WriteStatus.ACCEPTED
        finally:
            lock.release()

    @staticmethod
    def _write_now(fd: int, data: bytes | memoryview) -> int:
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
            self._fd = None  # a writer queued on the lock sees it and answers closed
            self._cancel_pending()
            self._close_fd(fd)
        await trio.lowlevel.checkpoint()

    def _close_fd(self, fd: int) -> None:
        if self._lock is not None:  # a writer may wait on the fd: it must wake first
            try:
                trio.lowlevel.notify_closing(fd)
            except RuntimeError:  # outside the run: nobody can be waiting
                pass
        os.close(fd)

    def close(self) -> None:
        """Synchronous, for teardown."""
        fd, self._fd = self._fd, None
        if fd is not None:
            self._close_fd(fd)


def dup_for_writing(master: int | None, stdin: int | None) -> int | None:
    """A PTY is written through a second fd on its master (the first one is read)."""
    return os.dup(master) if master is not None else stdin
