"""A backend written by someone else: structural typing, and what a broken one gets.

The handles here are fakes on purpose: they inject faults (events out of order, a
stream that stops without closing, a crash) that no real backend produces on demand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence

import pytest
import trio
import trio.testing

import unified_exec as ue


class ScriptedHandle:
    """Plays back a fixed event list; inherits nothing from unified_exec."""

    def __init__(self, events: Sequence[ue.ProcessEvent | Exception]) -> None:
        self._events = list(events)
        self.terminated = False

    @property
    def process_id(self) -> str:
        return "scripted"

    async def events(self) -> AsyncIterator[ue.ProcessEvent]:
        for ev in self._events:
            await trio.sleep(0)
            if isinstance(ev, Exception):
                raise ev
            yield ev

    async def write(self, data: bytes) -> ue.WriteStatus:
        return ue.WriteStatus.ACCEPTED

    async def terminate(self) -> None:
        self.terminated = True

    async def interrupt(self) -> None:
        pass

    async def resize(self, rows: int, cols: int) -> None:
        pass


class ScriptedBackend:
    def __init__(self, events: Sequence[ue.ProcessEvent | Exception]) -> None:
        self.events = events

    async def start(self, request: ue.ExecRequest) -> ScriptedHandle:
        return ScriptedHandle(self.events)

    async def aclose(self) -> None:
        pass


class OneHandleBackend(ScriptedBackend):
    """Starts nothing: hands out the one handle the test made (to look into it)."""

    def __init__(self, handle: ScriptedHandle) -> None:
        super().__init__([])
        self.handle = handle

    async def start(self, request: ue.ExecRequest) -> ScriptedHandle:
        return self.handle


def test_protocols_are_structural() -> None:
    backend = ScriptedBackend([])
    assert isinstance(backend, ue.ExecBackend)
    assert isinstance(ScriptedHandle([]), ue.ProcessHandle)


async def test_a_well_behaved_foreign_backend_works() -> None:
    events = [
        ue.OutputEvent(1, "stdout", b"hi\n"),
        ue.ExitedEvent(2, 0),
        ue.ClosedEvent(3),
    ]
    with trio.fail_after(5):
        async with ue.open_process(ScriptedBackend(events), ue.ExecRequest(["x"])) as p:
            assert await p.wait() == ue.ProcessState(has_exited=True, exit_code=0)
            assert [e async for e in p.events()] == events


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([ue.OutputEvent(2, "stdout", b"a"), ue.OutputEvent(1, "stdout", b"b")], "seq 1 is not"),
        ([ue.OutputEvent(1, "stdout", b"a"), ue.ClosedEvent(2)], "closed before exited"),
        ([ue.OutputEvent(1, "stdout", b"a")], "ended without a closed event"),
        ([ue.OutputEvent(1, "stdout", b"a"), RuntimeError("boom")], "boom"),
    ],
)
async def test_a_misbehaving_backend_becomes_a_failed_state(
    events: list[ue.ProcessEvent | Exception], message: str
) -> None:
    with trio.fail_after(5):
        async with ue.open_process(ScriptedBackend(events), ue.ExecRequest(["x"])) as p:
            state = await p.wait()
            assert state.has_exited and state.failure_message is not None
            assert message in state.failure_message
            seen = [e async for e in p.events()]
            assert isinstance(seen[-1], ue.FailedEvent)
            assert (await p.read()).closed


class StuckHandle(ScriptedHandle):
    """Runs until terminated, like a real long-running process."""

    async def events(self) -> AsyncIterator[ue.ProcessEvent]:
        yield ue.OutputEvent(1, "stdout", b"a")
        while not self.terminated:
            await trio.sleep(0.01)
        yield ue.ExitedEvent(2, 143)
        yield ue.ClosedEvent(3)


async def test_leaving_open_process_terminates_a_foreign_process() -> None:
    handles: list[StuckHandle] = []

    class StuckBackend(ScriptedBackend):
        async def start(self, request: ue.ExecRequest) -> StuckHandle:
            handles.append(StuckHandle([]))
            return handles[-1]

    with trio.fail_after(5):
        async with ue.open_process(StuckBackend([]), ue.ExecRequest(["x"])) as p:
            await p.read(wait=1)
    assert handles[0].terminated
    assert p.state == ue.ProcessState(has_exited=True, exit_code=143)


class CountingHandle(ScriptedHandle):
    """A fast producer of many small chunks that counts what has been taken from it."""

    def __init__(self, chunks: int, size: int) -> None:
        super().__init__([])
        self.chunks, self.size, self.taken = chunks, size, 0

    async def events(self) -> AsyncIterator[ue.ProcessEvent]:
        for seq in range(1, self.chunks + 1):
            self.taken += 1
            yield ue.OutputEvent(seq, "stdout", b"x" * self.size)
        yield ue.ExitedEvent(self.chunks + 1, 0)
        yield ue.ClosedEvent(self.chunks + 2)


async def test_a_held_back_pump_takes_output_in_batches() -> None:
    """A slow events() reader holds the pump back (nothing it has not seen is evicted)
    and the pump goes on once half the retention is free, not at every chunk the
    reader takes: per chunk, that was a scheduler pass on each side."""
    handle = CountingHandle(chunks=400, size=10)
    with trio.fail_after(30):  # only ever reached by a hang
        async with ue.open_process(
            OneHandleBackend(handle), ue.ExecRequest(["x"]), retention_bytes=200
        ) as p:
            seen = 0
            moves = 0  # reader steps after which the pump had taken more
            last = handle.taken
            async for event in p.events():
                assert not isinstance(event, ue.LostEvent)
                if isinstance(event, ue.OutputEvent):
                    seen += 1
                    assert event.seq == seen
                    # Never further ahead than retention (20 chunks) and one in hand.
                    assert handle.taken - seen <= 21
                await trio.sleep(0)  # a slow reader: the pump runs between its steps
                if handle.taken != last:
                    moves += 1
                    last = handle.taken
            assert seen == 400
    # Batches of about half the retention (10 chunks): far fewer moves than chunks.
    assert moves <= 400 // 4, moves  # (per-chunk wake-ups made 283 here)


class GatedHandle(ScriptedHandle):
    """Three 300-byte chunks, then (once ``gate`` is set) a 500-byte one and the end.

    Its iterator has ``pausing()``, as a local queue's has: the pump calls it
    before it waits for its reader (so that the producer gets the queue's room)."""

    def __init__(self) -> None:
        super().__init__([])
        self.gate = trio.Event()
        self.pauses = 0

    def events(self) -> AsyncIterator[ue.ProcessEvent]:
        handle = self

        class Events:
            def __init__(self) -> None:
                self._it = handle._play()

            def __aiter__(self) -> Events:
                return self

            def __anext__(self) -> Awaitable[ue.ProcessEvent]:
                return self._it.__anext__()

            def pausing(self) -> None:
                handle.pauses += 1

        return Events()

    async def _play(self) -> AsyncIterator[ue.ProcessEvent]:
        for seq in (1, 2, 3):
            yield ue.OutputEvent(seq, "stdout", b"x" * 300)
        await self.gate.wait()
        yield ue.OutputEvent(4, "stdout", b"y" * 500)
        yield ue.ExitedEvent(5, 0)
        yield ue.ClosedEvent(6)


async def test_a_paused_reader_still_lets_in_what_fits() -> None:
    """Batching must not hold back more than the reader's lag requires: a reader
    that takes a few events and then pauses (its iterator still open) leaves room
    for the held chunk, and the process must get to its end on that room, as it
    would with a pump woken per chunk. Here the held chunk fits once the reader has
    seen two, but not with half the retention more: a pump that waited for a
    batch only would wait for ever."""
    handle = GatedHandle()
    with trio.fail_after(30):  # only ever reached by a hang
        async with ue.open_process(
            OneHandleBackend(handle), ue.ExecRequest(["x"]), retention_bytes=1000
        ) as p:
            assert (await p.read(after_seq=2, wait=20)).next_seq == 4  # 900 bytes in
            stream = p.events()
            assert (await stream.__anext__()).seq == 1
            handle.gate.set()
            # The pump gets the 500-byte chunk: it would evict unseen chunk 2, so
            # the pump holds it back and waits.
            await trio.testing.wait_all_tasks_blocked()
            assert p.last_seq == 3
            assert handle.pauses == 1
            assert (await stream.__anext__()).seq == 2  # now it fits; then a pause
            state = await p.wait()  # the stream stays open (and unread) meanwhile
            assert state == ue.ProcessState(has_exited=True, exit_code=0)
            # Nothing the open stream had not seen was dropped on the way.
            assert [e.seq async for e in stream] == [3, 4, 5, 6]
