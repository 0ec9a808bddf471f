"""LocalPtyBackend: run processes on this machine, on a PTY or on pipes.

Every child leads its own session and process group. One supervisor task per child
waits for its exit (pidfd), drains its output and then makes sure nothing of it
survives: the group is killed, and so is any escapee still holding our stream.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import struct
import termios
import uuid
from collections.abc import AsyncIterator
from typing import TypeAlias

import attrs
import trio

from .._errors import InvalidRequestError, LaunchError
from .._events import ProcessEvent, Stream, WriteStatus
from .._request import ExecRequest, check_tty_size
from . import _procfs
from ._queue import EventQueue
from ._spawn import DupFd, OpenPath, spawn

__all__ = ["LocalPtyBackend"]

log = logging.getLogger("unified_exec.local")

_DEFAULT_KILL_GRACE = 1.0
_DEFAULT_POST_EXIT_GRACE = 0.5
_TERMINATED_DRAIN = 0.05
_ESCAPEE_DRAIN = 1.0
_PIPE_BYTES = 256 * 1024


def _exit_code(status: os.waitid_result) -> int:
    """128+N for a child killed by signal N, for pipes and PTYs alike."""
    if status.si_code == os.CLD_EXITED:
        return status.si_status
    return 128 + status.si_status


def _find_executable(name: str, env: dict[str, str], cwd: str | None) -> str:
    """Resolve argv[0] like execvp, but against the *child's* PATH."""
    base = cwd if cwd is not None else os.getcwd()
    if "/" in name:
        full = os.path.join(base, name)
        if not os.path.exists(full):
            raise LaunchError(f"executable not found: {name}", path=name)
        return name
    search = env.get("PATH", os.environ.get("PATH", os.defpath))
    for directory in search.split(os.pathsep):
        candidate = os.path.join(base, directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise LaunchError(f"executable not found: {name} (searched PATH={search})", path=name)


def _set_winsize(fd: int, rows: int, cols: int) -> None:
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


def _is_cancellation(exc: BaseException) -> bool:
    """Cancelled, or a nursery's group made of nothing but Cancelled."""
    if isinstance(exc, BaseExceptionGroup):
        rest = exc.split(trio.Cancelled)[1]
        return rest is None
    return isinstance(exc, trio.Cancelled)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _launch_error(exc: OSError, path: str, cwd: str | None) -> LaunchError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if cwd is not None and not os.path.isdir(cwd):  # it vanished since we checked
        return LaunchError(f"working directory unusable ({reason}): {cwd}", path=cwd)
    return LaunchError(f"cannot execute {path}: {reason}", path=path)


Stdio: TypeAlias = tuple[DupFd | OpenPath, DupFd | OpenPath, DupFd | OpenPath]


@attrs.define
class _ChildFds:
    """The descriptors of one spawn: the child's side, and the side we keep."""

    stdio: Stdio
    readers: dict[Stream, int]  # ours: output to read
    stdin: int | None  # ours: pipe stdin to write (a PTY is written via its master)
    master: int | None  # ours: the PTY master (also in readers)
    links: set[str]  # what /proc/*/fd shows for the child's end of our output
    child_side: list[int]

    @classmethod
    def open(cls, request: ExecRequest) -> _ChildFds:
        opened: list[int] = []
        try:
            return cls._open(request, opened)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise

    @classmethod
    def _open(cls, request: ExecRequest, opened: list[int]) -> _ChildFds:
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
            _set_winsize(master, *request.size)
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


class _LocalProcess:
    """The ProcessHandle of a local child."""

    def __init__(self, backend: LocalPtyBackend, process_id: str, pid: int, fds: _ChildFds) -> None:
        self._backend = backend
        self._process_id = process_id
        self.pid = pid
        self._queue = EventQueue(backend._queue_bytes)
        self._readers = dict(fds.readers)
        for fd in self._readers.values():
            os.set_blocking(fd, False)
        self._eof: set[Stream] = set()
        self._master = fds.master
        # A PTY is written through a second fd on its master.
        stdin_fd = os.dup(fds.master) if fds.master is not None else fds.stdin
        self._stdin = trio.lowlevel.FdStream(stdin_fd) if stdin_fd is not None else None
        self._stream_links = fds.links
        self._write_lock = trio.Lock()
        self._write_scopes: set[trio.CancelScope] = set()
        self._exited = trio.Event()
        self._closed = trio.Event()
        self._terminating = False
        self._reaped = False
        self._events_taken = False
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # pragma: no cover - kernels before 5.3
            self._pidfd = None

    # -- ProcessHandle ---------------------------------------------------------------

    @property
    def process_id(self) -> str:
        return self._process_id

    def events(self) -> AsyncIterator[ProcessEvent]:
        if self._events_taken:
            raise RuntimeError("events() of a process handle can be taken only once")
        self._events_taken = True
        return self._queue.events()

    async def write(self, data: bytes) -> WriteStatus:
        stdin = self._stdin
        if stdin is None or self._exited.is_set() or self._terminating:
            return WriteStatus.STDIN_CLOSED
        if not data:
            return WriteStatus.ACCEPTED
        async with self._write_lock:
            if self._exited.is_set() or self._terminating or self._stdin is not stdin:
                return WriteStatus.STDIN_CLOSED
            with trio.CancelScope() as scope:
                self._write_scopes.add(scope)
                try:
                    await stdin.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return WriteStatus.STDIN_CLOSED
                finally:
                    self._write_scopes.discard(scope)
            if scope.cancelled_caught:
                return WriteStatus.STDIN_CLOSED
        return WriteStatus.ACCEPTED

    async def terminate(self) -> None:
        """SIGTERM the group (and descendants that left it), SIGKILL after the grace
        (at once when ``kill_grace`` is 0).

        The exit code reported is 128+N for the signal that ended it (143 or 137),
        or the child's own code if it handled SIGTERM and exited.
        """
        self._terminating = True
        self._queue.unbounded = True  # what is left is bounded: the group is being killed
        self._queue.notify()
        self._cancel_writes()
        if not self._exited.is_set():
            strays = _procfs.descendants(self.pid)
            if self._backend._kill_grace > 0:
                _kill_group(self.pid, signal.SIGTERM)
                _procfs.kill_all(strays, signal.SIGTERM)
                with trio.move_on_after(self._backend._kill_grace):
                    await self._exited.wait()
            _kill_group(self.pid, signal.SIGKILL)
            _procfs.kill_all(strays | _procfs.descendants(self.pid))
        await trio.lowlevel.checkpoint()

    async def close_stdin(self) -> None:
        """EOF on a pipe stdin (``cat``, ``wc`` and friends then finish)."""
        if self._master is not None:
            raise InvalidRequestError(
                "a terminal has no separate stdin to close; write b'\\x04' (Ctrl-D) instead"
            )
        stdin = self._stdin
        if stdin is not None:
            self._stdin = None
            self._cancel_writes()
            async with self._write_lock:
                await stdin.aclose()
        await trio.lowlevel.checkpoint()

    async def interrupt(self) -> None:
        if not self._reaped:
            _kill_group(self.pid, signal.SIGINT)
        await trio.lowlevel.checkpoint()

    async def resize(self, rows: int, cols: int) -> None:
        check_tty_size(rows, cols)
        if self._master is None:
            raise InvalidRequestError(f"process {self._process_id} has no terminal to resize")
        if not self._closed.is_set():
            _set_winsize(self._master, rows, cols)
        await trio.lowlevel.checkpoint()

    # -- supervision ---------------------------------------------------------------------

    def _cancel_writes(self) -> None:
        for scope in self._write_scopes:
            scope.cancel()

    async def _read_loop(self, name: Stream) -> None:
        try:
            while name not in self._eof:
                await self._queue.wait_room()
                await trio.lowlevel.wait_readable(self._readers[name])
                self._read_ready()
        finally:
            self._eof.add(name)
            self._queue.notify()

    def _read_ready(self) -> None:
        """Read every ready stream once, stdout before stderr.

        Both pipes often turn readable in the same wake-up; reading them in a fixed
        order (rather than in whatever order trio runs the tasks) keeps
        ``echo out; echo err >&2`` in the order it was written.
        """
        size = self._backend._read_size
        for name, fd in self._readers.items():
            if name in self._eof:
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
                        log.warning("reading %s of %s failed: %s", name, self._process_id, exc)
                    data = b""
                if not data:
                    self._eof.add(name)
                    break
                parts.append(data)
                got += len(data)
            if parts:
                self._queue.put_output(name, parts[0] if len(parts) == 1 else b"".join(parts))
            if name in self._eof:
                self._queue.notify()

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

    def _all_eof(self) -> bool:
        return all(name in self._eof for name in self._readers)

    async def _drain_after_exit(self, budget: float) -> None:
        """Wait for EOF, but only ``budget`` seconds of time we are not throttled.

        While the consumer holds us back the child's tail is ours to deliver, so that
        time does not count; a stray writer that never closes its end does.
        """
        while not self._all_eof() and budget > 0:
            if self._queue.waiting_for_room:
                await self._queue.changed.park()
                continue
            start = trio.current_time()
            with trio.move_on_after(budget):
                await self._queue.changed.park()
            budget -= trio.current_time() - start

    async def supervise(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for name in self._readers:
                    nursery.start_soon(self._read_loop, name)
                code = await self._wait_exit()
                # What the child wrote before it exited gets seqs before the exit.
                # Only when throttled is that left to the readers (so, after exit).
                if not self._queue.full:
                    self._read_ready()
                self._exited.set()
                self._cancel_writes()
                self._queue.put_exit(code)
                await self._drain_after_exit(
                    _TERMINATED_DRAIN if self._terminating else self._backend._post_exit_grace
                )
                _kill_group(self.pid, signal.SIGKILL)
                if not self._all_eof():
                    _procfs.kill_all(_procfs.holders(self._stream_links))
                    with trio.move_on_after(_ESCAPEE_DRAIN):
                        await self._drain_after_exit(_ESCAPEE_DRAIN)
                nursery.cancel_scope.cancel()
            self._cleanup()
            self._queue.put_closed()
        except BaseException as exc:
            self._cleanup()
            if _is_cancellation(exc):
                self._queue.put_failed("process supervision was cancelled (the trio run ended)")
                raise
            log.exception("supervising process %s failed", self._process_id)
            self._queue.put_failed(f"local backend error: {exc!r}")
        finally:
            self._closed.set()
            self._backend._forget(self)

    def _cleanup(self) -> None:
        """Synchronous, so it also runs when the trio run is being torn down."""
        if not self._reaped:
            _kill_group(self.pid, signal.SIGKILL)
            if not self._all_eof():
                _procfs.kill_all(_procfs.holders(self._stream_links))
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self._reaped = True
        for fd in self._readers.values():
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
        self._readers.clear()
        if self._stdin is not None:
            self._stdin.close()
            self._stdin = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class LocalPtyBackend:
    """Runs processes on this machine: ``tty=True`` on a PTY, otherwise on pipes.

    ``kill_grace``: seconds between SIGTERM and SIGKILL in ``terminate()``; 0 sends
    SIGKILL at once (exit code 137), as codex's exec-server does.
    ``post_exit_grace``: after the child exits, how long to keep collecting output
    from descendants that still hold the stream (time spent throttled by a slow
    consumer does not count); then the rest of the group is killed and the stream
    is closed. ``read_size`` and ``queue_bytes`` tune throughput and how much
    output may sit between the child and a slow consumer.

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
    ) -> None:
        if kill_grace < 0 or post_exit_grace < 0:
            raise InvalidRequestError("grace periods must be >= 0")
        if read_size < 1 or queue_bytes < 1:
            raise InvalidRequestError("read_size and queue_bytes must be >= 1")
        self._kill_grace = kill_grace
        self._post_exit_grace = post_exit_grace
        self._read_size = read_size
        self._queue_bytes = queue_bytes
        self._live: set[_LocalProcess] = set()
        self._closed = False

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
        if not isinstance(request, ExecRequest):
            raise InvalidRequestError(f"expected an ExecRequest, got {type(request).__name__}")
        if self._closed:
            raise InvalidRequestError("this backend is closed")
        trio.lowlevel.current_task()  # RuntimeError outside trio, before anything is spawned
        env = dict(os.environ) if request.env is None else dict(request.env)
        cwd = request.cwd
        if cwd is not None and not os.path.isdir(cwd):
            what = "is not a directory" if os.path.exists(cwd) else "does not exist"
            raise LaunchError(f"working directory {what}: {cwd}", path=cwd)
        path = _find_executable(request.argv[0], env, cwd)
        argv = [request.arg0 if request.arg0 is not None else request.argv[0], *request.argv[1:]]
        process_id = request.process_id or f"local-{uuid.uuid4().hex[:16]}"
        try:
            fds = _ChildFds.open(request)
        except OSError as exc:  # EMFILE, ENFILE, no free ptys...
            what = "a pty" if request.tty else "pipes"
            raise LaunchError(f"cannot allocate {what} for {path}: {exc.strerror}") from exc
        try:
            pid = spawn(path, argv, env, cwd, fds.stdio)
        except BaseException as exc:
            fds.close_parent_side()
            if isinstance(exc, OSError):
                raise _launch_error(exc, path, cwd) from None
            raise
        finally:
            fds.close_child_side()
        try:
            proc = _LocalProcess(self, process_id, pid, fds)
        except BaseException:  # e.g. EMFILE on dup: do not leave an unsupervised child
            _kill_group(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            fds.close_parent_side()
            raise
        self._live.add(proc)
        trio.lowlevel.spawn_system_task(
            proc.supervise, name=f"unified_exec supervisor {process_id} (pid {pid})"
        )
        return proc
