"""Non-blocking pipe I/O for a stdio exec-server link: the syscall first, a wait if needed.

trio's ``FdStream`` takes a scheduler pass before every ``receive_some`` and
``send_all``, and a second one when it then has to wait. On the server's stdio that
was a pass before every reply and notification went out, and two per frame read;
each pass is a trio scheduler round (~10-20 us of CPU here). Here the syscall comes
first:

- ``receive_some`` yields exactly once: in the wait when the pipe is empty, or right
  after a read that found data (so a burst of frames never starves other tasks);
- ``send_all`` yields only when the pipe is full. Every server loop that sends also
  yields elsewhere (an events() step, a receive), so none can spin; cancellation is
  still honoured before anything is written.
"""

from __future__ import annotations

import errno
import fcntl
import os

import trio

__all__ = ["FdReader", "FdWriter"]


class _Fd:
    """A pipe end, non-blocking, the pipe grown to ``pipe_bytes`` where the system
    allows (Linux: up to /proc/sys/fs/pipe-max-size, 1 MiB by default). A 64 KiB
    output event is a ~87 KB frame, more than a default pipe holds: each one cost the
    server a wait and both ends a wake-up in its middle (256 MiB through stdio,
    ours/codex 0.171.0: 2.7x -> 4x)."""

    _fd: int | None = None  # so that __del__ works even if __init__ failed

    def __init__(self, fd: int, pipe_bytes: int = 1 << 20) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, pipe_bytes)
        except (OSError, AttributeError):  # not a pipe, over the limit, not Linux
            pass

    def _live(self) -> int:
        if self._fd is None:
            raise trio.ClosedResourceError("the pipe was already closed")
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __del__(self) -> None:
        # An end its owner never closed (an error path): no fd leak. No task can be
        # waiting on it (a waiter holds a reference), so no notify_closing is needed.
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class FdReader(_Fd, trio.abc.ReceiveStream):
    """The read end of a pipe; ``receive_some`` is one ``os.read`` when data is there."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            fd = self._live()
            try:
                data = os.read(fd, max_bytes or 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)  # the schedule point
                waited = True
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("the pipe was already closed") from None
                raise trio.BrokenResourceError from exc
            if not waited:  # read without waiting: yield now (shielded: the bytes are ours)
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data


class FdWriter(_Fd, trio.abc.SendStream):
    """The write end of a pipe; ``send_all`` waits (yields) only while the pipe is full."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_parts(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._live())

    async def send_parts(self, *parts: bytes | bytearray | memoryview) -> None:
        """Write ``parts`` back to back (one ``writev``, no copy to join them)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            fd = self._live()
            try:
                sent = os.writev(fd, views)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("the pipe was already closed") from None
                raise trio.BrokenResourceError from exc
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]
