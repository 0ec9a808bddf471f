"""The local data path without task hops: one supervisor task per child, events
handed straight into the log, a pump only once the log must hold output back."""

from __future__ import annotations

import collections
import os

import pytest
import trio

import unified_exec as ue
from unified_exec.backends._base import DirectEvents, direct_events
from unified_exec.backends._queue import EventQueue

MODES = [pytest.param(False, id="pipes"), pytest.param(True, id="pty")]


class _TaskNames(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: collections.Counter[str] = collections.Counter()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names[task.name.split()[1] if task.name.startswith("unified_exec") else "x"] += 1


@pytest.mark.parametrize("tty", MODES)
async def test_a_spawn_runs_one_task_and_no_pump(tty: bool) -> None:
    seen = _TaskNames()
    async with ue.LocalPtyBackend() as backend:
        trio.lowlevel.add_instrument(seen)
        try:
            async with ue.open_process(backend, ue.ExecRequest(["echo", "hi"], tty=tty)) as p:
                state = await p.wait()
                out = b"".join(c.data for c in (await p.read()).chunks)
        finally:
            trio.lowlevel.remove_instrument(seen)
    assert state.exit_code == 0
    assert out.strip() == b"hi"
    assert seen.names["supervisor"] == 1
    assert seen.names["pump"] == 0


async def test_a_slow_reader_starts_the_pump_and_loses_nothing() -> None:
    # 8 MiB with 64 KiB retention and a reader that sleeps: the log must hold
    # output back (the pump takes over), and every byte arrives once, in order.
    seen = _TaskNames()
    script = "head -c 8388608 /dev/zero | tr '\\0' a; echo done >&2"
    async with ue.LocalPtyBackend() as backend:
        trio.lowlevel.add_instrument(seen)
        try:
            request = ue.ExecRequest(["sh", "-c", script])
            async with ue.open_process(backend, request) as p:
                p._shared.log.retention_bytes = 64 * 1024
                total, last_seq, kinds = 0, 0, []
                async for ev in p.events():
                    assert not isinstance(ev, ue.LostEvent | ue.FailedEvent), ev
                    assert ev.seq == last_seq + 1
                    last_seq = ev.seq
                    if isinstance(ev, ue.OutputEvent):
                        if ev.stream == "stdout":
                            assert set(ev.data) == {ord("a")}
                            total += len(ev.data)
                        if total < 256 * 1024:
                            await trio.sleep(0.001)
                    kinds.append(type(ev).__name__)
        finally:
            trio.lowlevel.remove_instrument(seen)
    assert total == 8 * 1024 * 1024
    # (throttled at the exit, the rest of the output comes after the exit event)
    assert kinds.count("ExitedEvent") == 1
    assert kinds[-1] == "ClosedEvent"
    assert seen.names["pump"] == 1


async def test_events_queued_before_connect_go_to_the_sink_in_order() -> None:
    q = EventQueue(1024)
    q.put_output("stdout", b"a")
    q.put_output("stdout", b"b")
    q.put_exit(0)
    it = q.events()
    direct = direct_events(it)
    assert isinstance(direct, DirectEvents)
    took: list[ue.OutputEvent | ue.ExitedEvent | ue.ClosedEvent] = []

    def sink(event: object) -> bool:
        if isinstance(event, ue.OutputEvent) and event.data == b"b" and not refused:
            refused.append(event)
            return False
        took.append(event)  # type: ignore[arg-type]
        return True

    refused: list[object] = []
    direct.connect(sink)
    # "a" went to the sink; "b" was refused, so it and the exit wait for the iterator,
    # and later events queue behind them rather than jump the line.
    assert [e.seq for e in took] == [1]
    q.put_closed()
    assert [e.seq for e in took] == [1]
    assert [e.seq async for e in it] == [2, 3, 4]  # type: ignore[attr-defined]
    # Caught up: the sink is offered events again (none left after closed).


async def test_the_sink_takes_events_once_the_iterator_has_caught_up() -> None:
    q = EventQueue(1024)
    it = q.events()
    took: list[int] = []
    direct = direct_events(it)
    assert direct is not None
    direct.connect(lambda e: took.append(e.seq) or True)  # type: ignore[attr-defined, func-returns-value]
    q.put_output("stdout", b"a")
    q.put_exit(0)
    q.put_closed()
    assert took == [1, 2, 3]
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()


def test_a_plain_async_iterator_is_not_direct() -> None:
    async def gen() -> collections.abc.AsyncIterator[ue.ClosedEvent]:
        yield ue.ClosedEvent(1)

    g = gen()
    assert direct_events(g) is None
    assert direct_events(g) is None  # the answer is remembered per class


async def test_a_full_queue_still_sees_the_exit() -> None:
    # Nobody reads: the queue fills, the supervisor stops reading, yet the exit of
    # the child that was blocked in write(2) is noticed once it is killed.
    async with ue.LocalPtyBackend(queue_bytes=64 * 1024, kill_grace=0) as backend:
        handle = await backend.start(ue.ExecRequest(["sh", "-c", "exec yes"]))
        sup = handle._sup
        with trio.fail_after(10):
            while not sup.queue.full:
                await trio.sleep(0.01)
        assert not sup.exited.is_set()
        await handle.terminate()
        with trio.fail_after(10):
            await sup.exited.wait()
        events = [e async for e in handle.events()]
    assert isinstance(events[-1], ue.ClosedEvent)
    exited = [e for e in events if isinstance(e, ue.ExitedEvent)]
    assert [e.exit_code for e in exited] == [137]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_the_end_of_the_run_fails_and_reaps_a_process_that_has_no_pump() -> None:
    # No pump task to be cancelled: the supervisor's own cancellation is what
    # reaches the log, and its synchronous cleanup still kills and reaps.
    procs: list[ue.UnifiedExecProcess] = []

    async def main() -> None:
        backend = ue.LocalPtyBackend()
        procs.append(await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["sleep", "30"])))

    trio.run(main)
    (proc,) = procs
    assert proc.closed
    assert "supervision was cancelled" in (proc.state.failure_message or "")
    with pytest.raises(ProcessLookupError):
        os.kill(proc._handle.pid, 0)  # type: ignore[attr-defined]
