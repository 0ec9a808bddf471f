"""backends/_fdpipe: pipe ends that try the syscall first (the stdio server's pipes)."""

from __future__ import annotations

import os

import pytest
import trio

from unified_exec.backends._fdpipe import FdReader, FdWriter


async def test_parts_arrive_whole_and_in_order_through_a_full_pipe() -> None:
    r, w = os.pipe()
    reader, writer = FdReader(r, pipe_bytes=4096), FdWriter(w, pipe_bytes=4096)
    frames = [os.urandom(n) for n in (1, 70_000, 3, 300_000, 0, 5000)]
    got = bytearray()
    with trio.fail_after(20):
        async with reader, writer, trio.open_nursery() as nursery:

            async def drain() -> None:
                while data := await reader.receive_some(1000):  # slower than the writer
                    got.extend(data)

            nursery.start_soon(drain)
            for frame in frames:
                await writer.send_parts(frame, b"\n")
            await writer.aclose()
    assert bytes(got) == b"".join(f + b"\n" for f in frames)


class _Steps(trio.abc.Instrument):
    """Counts the scheduler steps of one task (trio runs a batch of runnable tasks in
    a random order, so "another task ran meanwhile" is no deterministic probe)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_read_with_data_waiting_still_yields_once() -> None:
    r, w = os.pipe()
    os.write(w, b"x" * 10)
    reader = FdReader(r)
    steps = _Steps(trio.lowlevel.current_task())
    async with reader:
        trio.lowlevel.add_instrument(steps)
        try:
            assert await reader.receive_some(4) == b"xxxx"
        finally:
            trio.lowlevel.remove_instrument(steps)
    assert steps.steps == 1  # the read was a schedule point: one pass, no more
    os.close(w)


async def test_a_cancelled_send_writes_nothing_and_closed_ends_raise() -> None:
    r, w = os.pipe()
    writer = FdWriter(w)
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.send_all(b"never")
    os.set_blocking(r, False)
    with pytest.raises(BlockingIOError):
        os.read(r, 10)
    await writer.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await writer.send_all(b"x")
    reader = FdReader(r)
    assert await reader.receive_some() == b""  # EOF: the write end is closed
    await reader.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await reader.receive_some()


async def test_a_peer_gone_is_a_broken_resource() -> None:
    r, w = os.pipe()
    os.close(r)
    writer = FdWriter(w)
    with pytest.raises(trio.BrokenResourceError):
        await writer.send_parts(b"data", b"\n")
    await writer.aclose()
