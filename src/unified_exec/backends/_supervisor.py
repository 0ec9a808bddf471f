"""Supervision and reaping of one local child: nothing of it survives, on any path.

One system task per child, the only task it has: it waits on one epoll holding the
child's pidfd and output (``_watch``), reads in the same step (only while the queue
has room), sees the exit, drains the output, then kills what is left: the process
group, the session (job control puts commands in groups of their own), and any
escapee still holding our stream. The
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
from ._watch import ChildWatch

__all__ = ["Supervisor", "kill_group"]

log = logging.getLogger("unified_exec.local")

_TERMINATED_DRAIN = 0.05
_ESCAPEE_DRAIN = 1.0
_NO_PIDFD_POLL = 0.05


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


class Flag:
    """A trio.Event that is made only when somebody waits for it: most are never
    waited for, and an idle session is then ~400 bytes smaller."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


class Supervisor:
    """Owns the child's pid, pidfd, output readers and stdin until it is reaped."""

    __slots__ = (
        "_escapees_killed",
        "_links",
        "_pidfd",
        "_post_exit_grace",
        "_warden_key",
        "_watch",
        "closed",
        "exited",
        "label",
        "pid",
        "queue",
        "reader",
        "reaped",
        "stdin",
        "terminating",
    )

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
        self.exited = Flag()
        self.closed = Flag()
        self.terminating = False
        self.reaped = False
        self._escapees_killed = False
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # pragma: no cover - kernels before 5.3
            self._pidfd = None
        try:
            self._watch = ChildWatch()
        except BaseException:  # EMFILE: the caller kills the child and closes its fds
            if self._pidfd is not None:
                os.close(self._pidfd)
            stdin.close()  # a dup of ours, which the caller does not know of
            raise
        queue.on_room = self._watch.wake

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
        self.queue.make_unbounded()
        self._watch.wake()

    # -- the supervisor task ---------------------------------------------------------

    def wake(self) -> None:
        """Let the supervisor look again at what to wait for (room, a terminate)."""
        self._watch.wake()

    def _exit_status(self) -> int | None:
        # WNOWAIT: the zombie keeps the pid (and so the pgid) from being reused
        # until we have killed what is left of the group.
        status = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        return None if status is None else _exit_code(status)

    async def _wait_exit(self) -> int:
        """Read output (while there is room) until the child exits; its exit code.

        What the child wrote before it exited gets seqs before the exit: a wake-up
        that brings both reads first. Only when throttled is that left for after.
        """
        reader, queue, watch, pidfd = self.reader, self.queue, self._watch, self._pidfd
        while True:
            throttled = queue.full
            fds = [] if throttled else reader.live()
            if pidfd is not None:
                queue.waiting_for_room = throttled
                if throttled:
                    ready = await watch.wait_alone(pidfd)
                    if not ready and not queue.full:
                        # Room again: what filled the pipe meanwhile is there now,
                        # so read it at once rather than after a pass through epoll.
                        ready = reader.live()
                else:
                    fds.append(pidfd)
                    ready = await watch.wait(fds)
            else:  # pragma: no cover - kernels before 5.3: look every 50 ms
                queue.waiting_for_room = throttled
                deadline = trio.current_time() + _NO_PIDFD_POLL
                ready = await watch.wait(fds, deadline=deadline, wakeable=throttled)
                ready.append(-1)
            queue.waiting_for_room = False
            if ready and not queue.full:
                reader.read_ready(ready)
            if pidfd is None or pidfd in ready:
                code = self._exit_status()
                if code is not None:
                    return code

    async def _drain_after_exit(self) -> None:
        """Wait for EOF, but only for the grace's worth of time we are not throttled.

        While the consumer holds us back the child's tail is ours to deliver, so that
        time does not count; a stray writer that never closes its end does. The
        grace is looked up on every turn: a terminate() during the wait shortens it.
        """
        reader, queue = self.reader, self.queue
        used = 0.0
        while not reader.all_eof():
            grace = _TERMINATED_DRAIN if self.terminating else self._post_exit_grace
            if used >= grace:
                return
            if queue.full:
                await queue.wait_room()
                continue
            start = trio.current_time()
            ready = await self._watch.wait(
                reader.live(), deadline=start + grace - used, wakeable=True
            )
            used += trio.current_time() - start
            if ready and not queue.full:
                reader.read_ready(ready)

    async def _drain_escapees(self) -> None:
        """After the kills: what is left in the streams (the queue is unbounded now)."""
        reader = self.reader
        deadline = trio.current_time() + _ESCAPEE_DRAIN
        while not reader.all_eof() and trio.current_time() < deadline:
            reader.read_ready(await self._watch.wait(reader.live(), deadline=deadline))

    async def run(self) -> None:
        try:
            code = await self._wait_exit()
            self.exited.set()
            self.stdin.cancel()
            self.queue.put_exit(code)
            await self._drain_after_exit()
            kill_group(self.pid, signal.SIGKILL)
            if not self.reader.all_eof():  # someone outside the group holds it
                _procfs.kill_all(await self.family())
                await self.kill_escapees()
            self.all_dead()
            if not self.reader.all_eof():
                await self._drain_escapees()
            self.cleanup()
            self.queue.put_closed()
        except BaseException as exc:
            self.cleanup()
            if isinstance(exc, trio.Cancelled):
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
        self._watch.close()  # first: it holds our fds
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
