"""Baselines: the same work done with raw OS calls, subprocess and ptyprocess.

Every function returns a list of samples (ms, MiB/s or µs, as its name says) and
checks the work was really done (exit codes, byte counts), never the timings.
"""

from __future__ import annotations

import collections
import errno
import os
import subprocess
import time
from collections.abc import Awaitable, Callable

import trio
from ptyprocess import PtyProcess

__all__ = [
    "concurrency_popen_ms",
    "concurrency_trio_ms",
    "echo_all_ms",
    "roundtrip_pipe_us",
    "roundtrip_trio_pipe_us",
    "roundtrip_pty_us",
    "roundtrip_trio_pty_us",
    "spawn_openpty_popen",
    "spawn_posix_spawn",
    "spawn_ptyprocess",
    "spawn_subprocess_run",
    "spawn_trio_run_process",
    "throughput_pipe_mib_s",
    "throughput_pipe_retaining_mib_s",
    "throughput_pty_mib_s",
    "throughput_trio_pty_mib_s",
    "timed_loop_ms",
]

TRUE = "/bin/true"
ECHO = "/bin/echo"
READ_SIZE = 65536
MIB = 1024 * 1024


class BenchmarkError(RuntimeError):
    """The measured work did not happen as expected (wrong bytes, bad exit code)."""


def _check_exit(what: str, code: int) -> None:
    if code != 0:
        raise BenchmarkError(f"{what} exited with {code}")


def timed_loop_ms(fn: Callable[[], None], iterations: int, warmup: int) -> list[float]:
    """Run ``fn`` warmup + iterations times; return the timed ones in ms."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


# -- 1. spawn + exit of /bin/true --------------------------------------------------


def spawn_subprocess_run() -> None:
    _check_exit("subprocess.run", subprocess.run([TRUE], check=False).returncode)


def spawn_posix_spawn() -> None:
    pid = os.posix_spawn(TRUE, [TRUE], os.environ)
    _, status = os.waitpid(pid, 0)
    _check_exit("posix_spawn", os.waitstatus_to_exitcode(status))


def spawn_trio_run_process(iterations: int, warmup: int) -> list[float]:
    """trio.run_process([true]) in one trio.run: what a trio-based spawn costs."""

    async def main() -> list[float]:
        samples = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            done = await trio.run_process([TRUE], check=False)
            elapsed = (time.perf_counter() - t0) * 1e3
            _check_exit("trio.run_process", done.returncode)
            if i >= warmup:
                samples.append(elapsed)
        return samples

    return trio.run(main)


def _read_pty_to_eof(master: int) -> int:
    total = 0
    while True:
        try:
            data = os.read(master, READ_SIZE)
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: the slave side is closed everywhere
                raise
            return total
        if not data:
            return total
        total += len(data)


def spawn_openpty_popen() -> None:
    """openpty + Popen(start_new_session=True) (vfork path, no controlling tty)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [TRUE], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        slave = -1
        _read_pty_to_eof(master)
        _check_exit("openpty+Popen", proc.wait())
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def spawn_ptyprocess() -> None:
    """ptyprocess spawn -> read to EOF -> wait -> close, without its close() sleep."""
    proc = PtyProcess.spawn([TRUE])
    proc.delayafterclose = 0
    try:
        while True:
            try:
                proc.read(READ_SIZE)
            except EOFError:
                break
        _check_exit("ptyprocess", proc.wait())
    finally:
        proc.close(force=True)


# -- 2. throughput of head -c N /dev/zero -------------------------------------------


def _head_argv(nbytes: int) -> list[str]:
    return ["head", "-c", str(nbytes), "/dev/zero"]


def _check_bytes(what: str, got: int, want: int) -> None:
    if got != want:
        raise BenchmarkError(f"{what}: read {got} bytes, expected {want}")


def throughput_pipe_mib_s(nbytes: int) -> float:
    """Popen(stdout=PIPE), os.read(fd, 64 KiB) until EOF. Timed from spawn to reap."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(_head_argv(nbytes), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    total = 0
    while data := os.read(fd, READ_SIZE):
        total += len(data)
    proc.stdout.close()
    code = proc.wait()
    elapsed = time.perf_counter() - t0
    _check_exit("head (pipe)", code)
    _check_bytes("pipe os.read", total, nbytes)
    return nbytes / MIB / elapsed


def throughput_pipe_retaining_mib_s(nbytes: int, keep_bytes: int) -> float:
    """The pipe loop above, keeping the newest ``keep_bytes`` of chunks alive.

    A reference, not a target's baseline: our log retains the newest output (1 MiB
    by default, plus the 512 KiB queue), so each read copies into memory that is
    not in the cache any more. This shows what that alone costs raw os.read.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(_head_argv(nbytes), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    total = 0
    kept: collections.deque[bytes] = collections.deque()
    kept_bytes = 0
    while data := os.read(fd, READ_SIZE):
        total += len(data)
        kept.append(data)
        kept_bytes += len(data)
        while kept_bytes > keep_bytes:
            kept_bytes -= len(kept.popleft())
    proc.stdout.close()
    code = proc.wait()
    elapsed = time.perf_counter() - t0
    _check_exit("head (pipe, retaining)", code)
    _check_bytes("pipe os.read, retaining", total, nbytes)
    return nbytes / MIB / elapsed


def throughput_pty_mib_s(nbytes: int) -> float:
    """os.openpty + Popen(start_new_session=True), os.read(master) until EIO (cooked)."""
    t0 = time.perf_counter()
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            _head_argv(nbytes), stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        slave = -1
        total = _read_pty_to_eof(master)
        code = proc.wait()
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    elapsed = time.perf_counter() - t0
    _check_exit("head (pty)", code)
    _check_bytes("pty os.read", total, nbytes)
    return nbytes / MIB / elapsed


def throughput_trio_pty_mib_s(nbytes: int) -> float:
    """The same PTY stream read through trio's FdStream on the master, 64 KiB at a
    time: the event-loop floor (each read that finds nothing waits in trio's epoll)."""

    async def main() -> tuple[int, int]:
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(
                _head_argv(nbytes), stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True,
            )  # fmt: skip
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        stream = trio.lowlevel.FdStream(master)
        total = 0
        try:
            while True:
                try:
                    data = await stream.receive_some(READ_SIZE)
                except trio.BrokenResourceError:  # EIO: every slave fd is closed
                    break
                if not data:
                    break
                total += len(data)
        finally:
            await stream.aclose()
        return total, proc.wait()

    t0 = time.perf_counter()
    total, code = trio.run(main)
    elapsed = time.perf_counter() - t0
    _check_exit("head (pty, trio)", code)
    _check_bytes("pty trio FdStream", total, nbytes)
    return nbytes / MIB / elapsed


# -- 3. interactive round trip through cat -------------------------------------------


def _read_exactly(fd: int, want: int) -> None:
    got = 0
    while got < want:
        data = os.read(fd, READ_SIZE)
        if not data:
            raise BenchmarkError(f"EOF after {got} of {want} bytes")
        got += len(data)
    if got != want:
        raise BenchmarkError(f"read {got} bytes, expected {want}")


def _trips(fd_out: int, fd_in: int, line: bytes, want: int, trips: int, warmup: int) -> list[float]:
    """Write ``line`` to fd_out, read ``want`` bytes from fd_in; µs per trip."""
    samples = []
    for i in range(warmup + trips):
        t0 = time.perf_counter()
        os.write(fd_out, line)
        _read_exactly(fd_in, want)
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e6)
    return samples


async def _trio_trips(
    out: trio.abc.SendStream, into: trio.abc.ReceiveStream,
    line: bytes, want: int, trips: int, warmup: int,
) -> list[float]:  # fmt: skip
    """_trips through trio streams: send ``line``, receive ``want`` bytes; µs per trip."""
    samples = []
    for i in range(warmup + trips):
        t0 = time.perf_counter()
        await out.send_all(line)
        got = 0
        while got < want:
            data = await into.receive_some(READ_SIZE)
            if not data:
                raise BenchmarkError(f"EOF after {got} of {want} bytes")
            got += len(data)
        elapsed = time.perf_counter() - t0
        if got != want:
            raise BenchmarkError(f"read {got} bytes, expected {want}")
        if i >= warmup:
            samples.append(elapsed * 1e6)
    return samples


def roundtrip_pipe_us(line: bytes, trips: int, warmup: int) -> list[float]:
    """cat on pipes: os.write the line, os.read until it is all back."""
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    wfd, rfd = proc.stdin.fileno(), proc.stdout.fileno()
    try:
        return _trips(wfd, rfd, line, len(line), trips, warmup)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait()


def roundtrip_trio_pipe_us(line: bytes, trips: int, warmup: int) -> list[float]:
    """cat on pipes through trio FdStream send_all / receive_some: the event-loop floor."""

    async def main() -> list[float]:
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert proc.stdin is not None and proc.stdout is not None
        stdin = trio.lowlevel.FdStream(os.dup(proc.stdin.fileno()))
        stdout = trio.lowlevel.FdStream(os.dup(proc.stdout.fileno()))
        proc.stdin.close()
        proc.stdout.close()
        try:
            return await _trio_trips(stdin, stdout, line, len(line), trips, warmup)
        finally:
            await stdin.aclose()
            await stdout.aclose()
            proc.wait()

    return trio.run(main)


def roundtrip_pty_us(line: bytes, trips: int, warmup: int) -> list[float]:
    """cat on a PTY with default termios (echo on): wait for the echo and cat's copy."""
    want = 2 * len(line.replace(b"\n", b"\r\n"))
    master, slave = os.openpty()
    proc = subprocess.Popen(
        ["cat"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    try:
        return _trips(master, master, line, want, trips, warmup)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def roundtrip_trio_pty_us(line: bytes, trips: int, warmup: int) -> list[float]:
    """cat on a PTY (echo on) through trio FdStream on the master: the event-loop floor
    for the PTY round trip, both copies awaited as in roundtrip_pty_us."""
    want = 2 * len(line.replace(b"\n", b"\r\n"))

    async def main() -> list[float]:
        master, slave = os.openpty()
        proc = subprocess.Popen(
            ["cat"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        stream = trio.lowlevel.FdStream(master)
        try:
            return await _trio_trips(stream, stream, line, want, trips, warmup)
        finally:
            proc.kill()
            proc.wait()
            await stream.aclose()

    return trio.run(main)


# -- 4. many processes at once --------------------------------------------------------


def concurrency_popen_ms(count: int) -> float:
    """Popen x count (stdout captured), then communicate() each; ms until all are reaped."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen([ECHO, "hi"], stdout=subprocess.PIPE) for _ in range(count)]
    outputs = [p.communicate()[0] for p in procs]
    elapsed = (time.perf_counter() - t0) * 1e3
    for p, out in zip(procs, outputs, strict=True):
        _check_exit("echo", p.returncode)
        if out != b"hi\n":
            raise BenchmarkError(f"echo printed {out!r}")
    return elapsed


async def echo_all_ms(count: int, one: Callable[[], Awaitable[bytes]]) -> float:
    """Run ``one()`` (one ``echo hi`` to its end, checked; its output) ``count`` times
    at once in a nursery; ms until all are done, every output checked."""
    outputs: list[bytes] = []

    async def run_one() -> None:
        outputs.append(await one())

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(run_one)
    elapsed = (time.perf_counter() - t0) * 1e3
    if len(outputs) != count:
        raise BenchmarkError(f"{len(outputs)} of {count} echo runs finished")
    for out in outputs:
        if out != b"hi\n":
            raise BenchmarkError(f"echo printed {out!r}")
    return elapsed


def concurrency_trio_ms(count: int) -> float:
    """trio.run_process(echo hi) x count in one nursery, stdout captured: what the
    same job costs any trio program (trio's floor, as trio_run_process for spawn)."""

    async def one() -> bytes:
        done = await trio.run_process([ECHO, "hi"], capture_stdout=True, check=False)
        _check_exit("echo", done.returncode)
        return bytes(done.stdout)

    return trio.run(echo_all_ms, count, one)
