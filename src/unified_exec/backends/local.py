"""LocalPtyBackend: run processes on this machine, on a PTY or on pipes.

Every child leads its own session and process group. One supervisor task per child
waits for its exit (pidfd), drains its output and then makes sure nothing of it
survives: the group is killed, and so is any escapee still holding our stream. The
warden (a small process of its own) does the same if this Python process dies
without getting to it, SIGKILL included.

The jobs live in their own modules: ``_fds`` (descriptors of a spawn), ``_stdin``
(writing), ``_reader`` (reading), ``_supervisor`` (supervision and reaping),
``_warden`` (no child outlives its owner). This one starts children and answers
for them as a ProcessHandle.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator

import trio

from .._errors import InvalidRequestError, LaunchError
from .._events import ProcessEvent, WriteStatus
from .._request import ExecRequest, check_tty_size
from .._validate import check_duration, check_size
from . import _procfs
from ._base import Capability
from ._description import BackendDescription, Location
from ._fds import ChildFds, set_winsize
from ._queue import EventQueue
from ._reader import OutputReader
from ._spawn import spawn
from ._stdin import StdinWriter, dup_for_writing
from ._supervisor import Flag, Supervisor, kill_group
from ._warden import warden as _warden

__all__ = ["LocalPtyBackend"]

_DEFAULT_KILL_GRACE = 1.0
_PLATFORM = "macos" if sys.platform == "darwin" else sys.platform
_DEFAULT_POST_EXIT_GRACE = 0.5


def _find_executable(name: str, env: dict[str, str] | None, cwd: str | None) -> str:
    """Resolve argv[0] like execvp, but against the *child's* PATH and cwd.

    The answer is absolute: posix_spawn resolves a relative path after its chdir,
    which would apply a relative cwd a second time.
    """
    base = os.path.abspath(cwd) if cwd is not None else os.getcwd()
    if "/" in name:
        full = os.path.join(base, name)
        if not os.path.exists(full):
            raise LaunchError(f"executable not found: {name}", path=name)
        return full
    search = (os.environ if env is None else env).get("PATH", os.environ.get("PATH", os.defpath))
    for directory in search.split(os.pathsep):
        candidate = os.path.join(base, directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.normpath(candidate)
    raise LaunchError(f"executable not found: {name} (searched PATH={search})", path=name)


def _launch_error(exc: OSError, path: str, cwd: str | None) -> LaunchError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if cwd is not None and not os.path.isdir(cwd):  # it vanished since we checked
        return LaunchError(f"working directory unusable ({reason}): {cwd}", path=cwd)
    return LaunchError(f"cannot execute {path}: {reason}", path=path)


_CAPABILITIES = frozenset({Capability.CLOSE_STDIN, Capability.RESIZE, Capability.INTERRUPT})


class _LocalProcess:
    """The ProcessHandle of a local child."""

    capabilities = _CAPABILITIES

    def __init__(
        self,
        backend: LocalPtyBackend,
        process_id: str,
        pid: int,
        fds: ChildFds,
        warden_key: int | None,
    ) -> None:
        self._backend = backend
        self._process_id = process_id
        self.pid = pid
        self._master = fds.master
        queue = EventQueue(backend._queue_bytes)
        reader = OutputReader(fds.readers, queue, backend._read_size)
        reader.label = process_id
        self._sup = Supervisor(
            label=process_id,
            pid=pid,
            queue=queue,
            reader=reader,
            stdin=StdinWriter(dup_for_writing(fds.master, fds.stdin)),
            links=fds.links,
            warden_key=warden_key,
            post_exit_grace=backend._post_exit_grace,
        )
        self._events_taken = False

    @property
    def _closed(self) -> Flag:
        return self._sup.closed

    # -- ProcessHandle ---------------------------------------------------------------

    @property
    def process_id(self) -> str:
        return self._process_id

    def events(self) -> AsyncIterator[ProcessEvent]:
        if self._events_taken:
            raise RuntimeError("events() of a process handle can be taken only once")
        self._events_taken = True
        return self._sup.queue.events()

    async def write(self, data: bytes) -> WriteStatus:
        return await self._sup.stdin.write(data)

    def poll_output(self) -> None:
        """Read what the child has written so far, now, as the reader task would
        when it wakes (only with room in the queue); a consumer about to wait calls
        it first, which often saves the wait. Never blocks, never raises."""
        sup = self._sup
        if not sup.queue.full and sup.reader.fds:
            sup.reader.read_ready()

    async def terminate(self) -> None:
        """SIGTERM the group, its session and descendants that left it; SIGKILL after
        the grace (at once when ``kill_grace`` is 0, or when the leader has already
        exited: then what is left is its background, and it goes now).

        The exit code reported is 128+N for the signal that ended it (143 or 137),
        or the child's own code if it handled SIGTERM and exited.
        """
        sup = self._sup
        sup.terminating = True
        sup.stdin.cancel()
        sup.wake()  # a supervisor waiting out post_exit_grace switches to the short one
        if sup.reaped:
            await trio.lowlevel.checkpoint()
            return
        if not sup.exited.is_set():
            # Found before the leader dies: afterwards its children are reparented.
            strays = await sup.family()
            if self._backend._kill_grace > 0:
                kill_group(self.pid, signal.SIGTERM)
                _procfs.kill_all(strays, signal.SIGTERM)
                with trio.move_on_after(self._backend._kill_grace):
                    await sup.exited.wait()
            kill_group(self.pid, signal.SIGKILL)
            _procfs.kill_all(strays | await sup.family())
        elif not sup.reaped:
            kill_group(self.pid, signal.SIGKILL)
            _procfs.kill_all(await sup.family())
        if not sup.reaped:
            await sup.kill_escapees()
        sup.all_dead()
        await trio.lowlevel.checkpoint()

    async def close_stdin(self) -> None:
        """EOF on a pipe stdin (``cat``, ``wc`` and friends then finish)."""
        if self._master is not None:
            raise InvalidRequestError(
                "a terminal has no separate stdin to close; write b'\\x04' (Ctrl-D) instead"
            )
        await self._sup.stdin.send_eof()

    async def interrupt(self) -> None:
        """SIGINT to the terminal's foreground job on a PTY (as Ctrl-C would: under a
        job-control shell that is not the shell's group), else to the group."""
        if not self._sup.reaped:
            target = self.pid
            if self._master is not None and not self._sup.closed.is_set():
                try:
                    target = os.tcgetpgrp(self._master) or self.pid
                except OSError:
                    pass
            kill_group(target, signal.SIGINT)
        await trio.lowlevel.checkpoint()

    async def resize(self, rows: int, cols: int) -> None:
        check_tty_size(rows, cols)
        if self._master is None:
            raise InvalidRequestError(f"process {self._process_id} has no terminal to resize")
        if not self._sup.closed.is_set():
            set_winsize(self._master, rows, cols)
        await trio.lowlevel.checkpoint()

    async def supervise(self) -> None:
        try:
            await self._sup.run()
        finally:
            self._backend._forget(self)


class LocalPtyBackend:
    """Runs processes on this machine: ``tty=True`` on a PTY, otherwise on pipes.

    ``kill_grace``: seconds between SIGTERM and SIGKILL in ``terminate()``; 0 sends
    SIGKILL at once (exit code 137), as codex's exec-server does.
    ``post_exit_grace``: after the child exits, how long to keep collecting output
    from descendants that still hold the stream (time spent throttled by a slow
    consumer does not count); then the rest of the group is killed and the stream
    is closed. ``read_size`` and ``queue_bytes`` tune throughput and how much
    output may sit between the child and a slow consumer.
    ``warden``: register every child with this Python process's warden, so that
    the children die even when this process is SIGKILLed (default on; off saves
    two short pipe writes per spawn and the one warden process).

    Usable with or without ``async with``; either way ``aclose()`` (or the end of
    the trio run) kills and reaps whatever is still running.
    """

    def __init__(
        self,
        *,
        kill_grace: float = _DEFAULT_KILL_GRACE,
        post_exit_grace: float = _DEFAULT_POST_EXIT_GRACE,
        read_size: int = 256 * 1024,
        queue_bytes: int = 512 * 1024,
        warden: bool = True,
    ) -> None:
        self._kill_grace = check_duration("kill_grace", kill_grace) or 0.0
        self._post_exit_grace = check_duration("post_exit_grace", post_exit_grace) or 0.0
        self._read_size = check_size("read_size", read_size, minimum=1) or 1
        self._queue_bytes = check_size("queue_bytes", queue_bytes, minimum=1) or 1
        self._warden = bool(warden)
        self._live: set[_LocalProcess] = set()
        self._closed = False
        # (cwd, the environment's bytes, what they described): see description.
        self._described: tuple[str, dict[bytes, bytes], BackendDescription] | None = None

    @property
    def description(self) -> BackendDescription:
        """This machine as this process sees it now (cwd and env are read at each call).

        Building one copies the environment (~40 us); while cwd and environment are
        what they were (compared as the bytes os.environ holds: ~1 us, in C), the
        last one, which is immutable, is the answer.
        """
        cwd = os.getcwd()
        data: dict[bytes, bytes] | None = getattr(os.environ, "_data", None)
        last = self._described
        if last is not None and data is not None and last[0] == cwd and last[1] == data:
            return last[2]
        described = BackendDescription(
            location=Location.LOCAL,
            cwd=cwd,
            home=os.path.expanduser("~"),
            shell=os.environ.get("SHELL") or "/bin/bash",
            platform=_PLATFORM,
            default_env=os.environ,
            capabilities=_CAPABILITIES,
        )
        if data is not None:
            self._described = (cwd, dict(data), described)
        return described

    async def __aenter__(self) -> LocalPtyBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()

    def _forget(self, proc: _LocalProcess) -> None:
        self._live.discard(proc)

    async def aclose(self) -> None:
        self._closed = True
        procs = list(self._live)
        async with trio.open_nursery() as nursery:
            for proc in procs:
                nursery.start_soon(proc.terminate)
        for proc in procs:
            await proc._closed.wait()

    async def start(self, request: ExecRequest) -> _LocalProcess:
        # A checkpoint, as every trio async function: a cancelled caller spawns nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(request, ExecRequest):
            raise InvalidRequestError(f"expected an ExecRequest, got {type(request).__name__}")
        if self._closed:
            raise InvalidRequestError("this backend is closed")
        # None: the child gets our environment as it is at this spawn (spawn passes
        # the C library's environ as is; copying it was ~10% of a spawn of true).
        env = None if request.env is None else dict(request.env)
        cwd = request.cwd
        if cwd is not None and not os.path.isdir(cwd):
            what = "is not a directory" if os.path.exists(cwd) else "does not exist"
            raise LaunchError(f"working directory {what}: {cwd}", path=cwd)
        path = _find_executable(request.argv[0], env, cwd)
        argv = [request.arg0 if request.arg0 is not None else request.argv[0], *request.argv[1:]]
        process_id = request.process_id or f"local-{os.urandom(8).hex()}"
        if self._warden and not _warden.settled:
            await trio.to_thread.run_sync(_warden.ensure_started)  # once per Python process
        try:
            fds = ChildFds.open(request)
        except OSError as exc:  # EMFILE, ENFILE, no free ptys...
            what = "a pty" if request.tty else "pipes"
            raise LaunchError(f"cannot allocate {what} for {path}: {exc.strerror}") from exc
        # Registered before the spawn: a death of ours between spawn and the second
        # registration still leaves the warden the streams to find the child by.
        key = _warden.before_spawn(fds.links, fds.master) if self._warden else None
        try:
            pid = spawn(path, argv, env, cwd, fds.stdio)
        except BaseException as exc:
            if key is not None:
                _warden.forget(key)
            fds.close_parent_side()
            if isinstance(exc, OSError):
                raise _launch_error(exc, path, cwd) from None
            raise
        finally:
            fds.close_child_side()
        if key is not None:
            _warden.after_spawn(key, pid)
        try:
            proc = _LocalProcess(self, process_id, pid, fds, key)
        except BaseException:  # e.g. EMFILE on dup: do not leave an unsupervised child
            kill_group(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            if key is not None:
                _warden.forget(key)
            fds.close_parent_side()
            raise
        self._live.add(proc)
        trio.lowlevel.spawn_system_task(
            proc.supervise, name=f"unified_exec supervisor {process_id} (pid {pid})"
        )
        # Let others run, but never lose the child we just started to a cancellation.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return proc
