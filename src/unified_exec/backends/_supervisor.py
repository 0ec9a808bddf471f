"""Supervision and reaping of one local child: nothing of it survives, on any path.

One system task per child waits for its exit (pidfd), lets the readers drain its
output, then kills what is left: the process group, the session (job control puts
commands in groups of their own), and any escapee still holding our stream. The
zombie is kept (WNOWAIT) until then, so its pid, and so its pgid, cannot be reused
under our kill. ``cleanup()`` is synchronous so that it also runs while the trio
run is being torn down (an exception, Ctrl-C): it then scans /proc on this thread,
because there is no thread to hand the scan to any more.
"""

from __future__ import annotations

import logging
import os
import signal

import trio

from . import _procfs
from ._queue import EventQueue
from ._reader import OutputReader
from ._stdin import StdinWriter
from ._warden import warden

__all__ = ["Supervisor", "kill_group"]

log = logging.getLogger("unified_exec.local")

_TERMINATED_DRAIN = 0.05
_ESCAPEE_DRAIN = 1.0


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_code(status: os.waitid_result) -> int:
    """128+N for a child killed by signal N, for pipes and PTYs alike."""
    if status.si_code == os.CLD_EXITED:
        return status.si_status
    return 128 + status.si_status


def _is_cancellation(exc: BaseException) -> bool:
    """Cancelled, or a nursery's group made of nothing but Cancelled."""
    if isinstance(exc, BaseExceptionGroup):
        rest = exc.split(trio.Cancelled)[1]
        return rest is None
    return isinstance(exc, trio.Cancelled)


class Supervisor:
    """Owns the child's pid, pidfd, output readers and stdin until it is reaped."""

    def __init__(
        self,
        *,
        label: str,
        pid: int,
        queue: EventQueue,
        reader: OutputReader,
        stdin: StdinWriter,
        links: set[str],
        warden_key: int | None,
        post_exit_grace: float,
    ) -> None:
        self.label = label
        self.pid = pid
        self.queue = queue
        self.reader = reader
        self.stdin = stdin
        self._links = links
        self._warden_key = warden_key
        self._post_exit_grace = post_exit_grace
        self.exited = trio.Event()
        self.closed = trio.Event()
        self.terminating = False
        self.reaped = False
        self._escapees_killed = False
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # pragma: no cover - kernels before 5.3
            self._pidfd = None

    # -- killing -------------------------------------------------------------------

    async def family(self) -> set[int]:
        """The child's descendants and session members (off the trio thread)."""
        return await trio.to_thread.run_sync(_procfs.family, self.pid)

    async def kill_escapees(self) -> None:
        """SIGKILL whoever still holds our output's write side (a setsid escapee)."""
        if not self.reader.all_eof():
            found = await trio.to_thread.run_sync(_procfs.holders, self._links)
            _procfs.kill_all(found)
            self._escapees_killed = True

    def all_dead(self) -> None:
        """Everything that could write is dead: what is left in the pipes is bounded,
        so the end must never wait for a consumer's room again."""
        self.queue.unbounded = True
        self.queue.notify()

    # -- the supervisor task ---------------------------------------------------------

    async def _wait_exit(self) -> int:
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
        else:  # pragma: no cover
            await trio.to_thread.run_sync(
                os.waitid, os.P_PID, self.pid, os.WEXITED | os.WNOWAIT, abandon_on_cancel=True
            )
        # WNOWAIT: the zombie keeps the pid (and so the pgid) from being reused
        # until we have killed what is left of the group.
        status = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        assert status is not None
        return _exit_code(status)

    async def _drain_after_exit(self) -> None:
        """Wait for EOF, but only for the grace's worth of time we are not throttled.

        While the consumer holds us back the child's tail is ours to deliver, so that
        time does not count; a stray writer that never closes its end does. The
        grace is looked up on every turn: a terminate() during the wait shortens it.
        """
        used = 0.0
        while not self.reader.all_eof():
            grace = _TERMINATED_DRAIN if self.terminating else self._post_exit_grace
            if used >= grace:
                return
            if self.queue.waiting_for_room:
                await self.queue.changed.park()
                continue
            start = trio.current_time()
            with trio.move_on_after(grace - used):
                await self.queue.changed.park()
            used += trio.current_time() - start

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for name in self.reader.fds:
                    nursery.start_soon(self.reader.read_loop, name)
                code = await self._wait_exit()
                # What the child wrote before it exited gets seqs before the exit.
                # Only when throttled is that left to the readers (so, after exit).
                if not self.queue.full:
                    self.reader.read_ready()
                self.exited.set()
                self.stdin.cancel()
                self.queue.put_exit(code)
                await self._drain_after_exit()
                kill_group(self.pid, signal.SIGKILL)
                if not self.reader.all_eof():  # someone outside the group holds it
                    _procfs.kill_all(await self.family())
                    await self.kill_escapees()
                self.all_dead()
                if not self.reader.all_eof():  # (a cancel scope costs ~5 us: only if needed)
                    with trio.move_on_after(_ESCAPEE_DRAIN):
                        while not self.reader.all_eof():
                            await self.queue.changed.park()
                nursery.cancel_scope.cancel()
            self.cleanup()
            self.queue.put_closed()
        except BaseException as exc:
            self.cleanup()
            if _is_cancellation(exc):
                self.queue.put_failed("process supervision was cancelled (the trio run ended)")
                raise
            log.exception("supervising process %s failed", self.label)
            self.queue.put_failed(f"local backend error: {exc!r}")
        finally:
            self.closed.set()

    def cleanup(self) -> None:
        """Kill, reap and close. Synchronous, so it also runs when the run is torn down."""
        if not self.reaped:
            kill_group(self.pid, signal.SIGKILL)
            if not self.reader.all_eof() and not self._escapees_killed:
                _procfs.kill_all(_procfs.family(self.pid) | _procfs.holders(self._links))
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.reaped = True
        if self._warden_key is not None:
            # Before our fds close: a closed pty's name is soon another's, and the
            # warden must never be left holding it.
            warden.forget(self._warden_key)
            self._warden_key = None
        self.reader.close()
        self.stdin.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
