"""read() and write() without a scheduler pass where none is needed, and what stays:
cancellation is honoured, wait=0 lets others run, a timed read still times out, a
loop that never blocks does not starve other tasks, and a write that put part of
its bytes in the pipe is finished rather than cancelled half-way."""

from __future__ import annotations

import hashlib
import sys

import trio
import trio.testing

import unified_exec as ue


def _cat() -> ue.ExecRequest:
    return ue.ExecRequest(argv=["cat"], pipe_stdin=True)


async def _read_until(proc: ue.UnifiedExecProcess, want: bytes, cursor: int = 0) -> int:
    got = b""
    with trio.fail_after(20):
        while not got.endswith(want):
            res = await proc.read(after_seq=cursor, wait=5)
            got += b"".join(c.data for c in res.chunks)
            cursor = res.cursor
            assert not res.closed, got
    return cursor


async def test_a_cancelled_reader_is_cancelled_even_with_output_waiting() -> None:
    async with ue.LocalPtyBackend() as backend, ue.open_process(backend, _cat()) as proc:
        assert await proc.write(b"x\n") is ue.WriteStatus.ACCEPTED
        await _read_until(proc, b"x\n")  # the output is there for after_seq=0
        with trio.CancelScope() as scope:
            scope.cancel()
            await proc.read(after_seq=0, wait=5)
            raise AssertionError("read() returned in a cancelled scope")
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await proc.read(after_seq=proc.last_seq, wait=5)  # would park
        assert scope.cancelled_caught


async def test_a_timed_read_with_nothing_to_read_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with ue.LocalPtyBackend() as backend, ue.open_process(backend, _cat()) as proc:
        for wait in (0.5, 30.0, 0.001):
            t0 = trio.current_time()
            res = await proc.read(after_seq=0, wait=wait)
            assert res.chunks == () and not res.closed
            assert trio.current_time() - t0 >= wait
        # A read waiting long is not held up by one with a shorter wait, and vice versa.
        results: list[float] = []

        async def timed(wait: float) -> None:
            await proc.read(after_seq=0, wait=wait)
            results.append(wait)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(timed, 100.0)
            nursery.start_soon(timed, 1.0)
        assert results == [1.0, 100.0]
        # And output that comes wakes a timed reader before its deadline.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timed, 1000.0)
            await trio.testing.wait_all_tasks_blocked()
            assert await proc.write(b"hi\n") is ue.WriteStatus.ACCEPTED
        assert results[-1] == 1000.0


async def test_read_wait_zero_and_busy_loops_let_other_tasks_run() -> None:
    ran = trio.Event()

    async def other() -> None:
        ran.set()

    async with ue.LocalPtyBackend() as backend, ue.open_process(backend, _cat()) as proc:
        assert await proc.write(b"x\n") is ue.WriteStatus.ACCEPTED
        await _read_until(proc, b"x\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(4):
                await proc.read(after_seq=0, wait=0)
            assert ran.is_set()
        # A loop of timed reads that always have their answer at once.
        ran = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(100):
                await proc.read(after_seq=0, wait=5)
            assert ran.is_set()
        # A loop of writes the kernel always takes at once.
        ran = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(100):
                assert await proc.write(b"y") is ue.WriteStatus.ACCEPTED
            assert ran.is_set()


async def test_a_cancelled_writer_writes_nothing() -> None:
    async with ue.LocalPtyBackend() as backend, ue.open_process(backend, _cat()) as proc:
        with trio.CancelScope() as scope:
            scope.cancel()
            await proc.write(b"never\n")
        assert scope.cancelled_caught
        assert await proc.write(b"after\n") is ue.WriteStatus.ACCEPTED
        cursor = await _read_until(proc, b"after\n")
        got = b"".join(c.data for c in (await proc.read(after_seq=0)).chunks)
        assert got == b"after\n" and cursor == proc.last_seq


# Reads its stdin to EOF and prints how much and its digest.
_DIGEST = (
    "import hashlib, sys\n"
    "data = sys.stdin.buffer.read()\n"
    "print(len(data), hashlib.sha256(data).hexdigest(), flush=True)\n"
)


async def test_a_write_cancelled_while_waiting_for_room_leaves_a_clean_prefix() -> None:
    # The child reads nothing until it is interrupted; a write waiting for room is then
    # cancelled by its caller (as write_stdin's yield window does): what the pipe
    # took is a prefix of it, and a later write follows that prefix, not mixed in.
    payload = bytes(range(256)) * 4096  # 1 MiB: far more than a pipe holds
    later = b"and then this"
    script = (
        "import signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "print('ready', flush=True)\n"
        "signal.sigwait({signal.SIGINT})\n"
    ) + _DIGEST
    request = ue.ExecRequest(argv=[sys.executable, "-c", script], pipe_stdin=True)
    async with ue.LocalPtyBackend() as backend, ue.open_process(backend, request) as proc:
        cursor = await _read_until(proc, b"ready\n")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(proc.write, payload)
                await trio.testing.wait_all_tasks_blocked()  # part written, pipe full
                scope.cancel()
        assert scope.cancelled_caught
        writing = trio.Event()

        async def write_later() -> None:
            writing.set()
            assert await proc.write(later) is ue.WriteStatus.ACCEPTED

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_later)
            await writing.wait()
            await trio.testing.wait_all_tasks_blocked()  # it waits for room too
            await proc.interrupt()  # the child starts reading
        await proc.close_stdin()
        res = None
        with trio.fail_after(20):
            while res is None or not res.closed:
                res = await proc.read(after_seq=cursor, wait=5)
        out = b"".join(c.data for c in res.chunks).split()
        size = int(out[0])
        assert 0 < size - len(later) < len(payload)
        want = payload[: size - len(later)] + later
        assert out[1].decode() == hashlib.sha256(want).hexdigest()
