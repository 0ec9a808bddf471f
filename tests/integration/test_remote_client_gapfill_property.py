"""Property: whatever pushes a server drops and whatever its retention evicted, the
client's seq reorder + ``process/read`` refetch yields every surviving output once, in
seq order, a ``LostEvent`` for exactly the seqs that are gone, the one true exit, and
``closed`` (defect 5 generalised).

The server here is a fake, because no real server drops notifications or evicts on
cue: it speaks the real wire format (as codex 0.169 does: a shared seq counter, the exit
possibly before later output, ``process/read`` returning retained output from the
oldest, ``nextSeq`` the next unassigned seq) over an in-memory link. The client is the
real ``RemoteExecBackend``. Time is trio's MockClock, so the gap grace costs nothing.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unified_exec as ue
from unified_exec.backends.remote import RemoteExecBackend


@attrs.frozen
class Life:
    outputs: int  # how many output chunks
    exit_at: int  # the exit takes the seq after this many outputs
    exit_code: int
    arrival: list[int]  # seqs in the order the server pushes them
    dropped: frozenset[int]  # seqs whose push never arrives
    evicted: int  # the oldest this-many outputs are no longer retained

    @property
    def closed_seq(self) -> int:
        return self.outputs + 2

    @property
    def exit_seq(self) -> int:
        return self.exit_at + 1

    def output_seqs(self) -> list[int]:
        return [s for s in range(1, self.closed_seq) if s != self.exit_seq]


@st.composite
def lives(draw: st.DrawFn) -> Life:
    outputs = draw(st.integers(0, 8))
    exit_at = draw(st.integers(0, outputs))
    seqs = list(range(1, outputs + 3))
    arrival = draw(st.permutations(seqs))
    closed = outputs + 2
    # The last push always arrives: a gap is only seen before something held.
    dropped = draw(st.frozensets(st.sampled_from(seqs[:-1]))) if outputs + 1 else frozenset()
    return Life(
        outputs, exit_at, draw(st.integers(-(2**31), 2**31 - 1)), arrival,
        frozenset(s for s in dropped if s != closed), draw(st.integers(0, outputs)),
    )  # fmt: skip


def _data(seq: int) -> bytes:
    return f"chunk-{seq};".encode()


class _End:
    def __init__(self, send: trio.MemorySendChannel[str], receive: trio.MemoryReceiveChannel[str]):
        self._send, self._receive = send, receive

    async def send(self, text: str) -> None:
        await self._send.send(text)

    async def receive(self) -> str | None:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def aclose(self) -> None:
        await self._send.aclose()


async def _fake_server(end: _End, life: Life) -> None:
    outs = life.output_seqs()
    retained = outs[life.evicted :]

    async def push(seq: int, pid: str) -> None:
        if seq in life.dropped:
            return
        if seq == life.closed_seq:
            msg: dict[str, Any] = {
                "method": "process/closed",
                "params": {"processId": pid, "seq": seq},
            }
        elif seq == life.exit_seq:
            params = {"processId": pid, "seq": seq, "exitCode": life.exit_code}
            msg = {"method": "process/exited", "params": params}
        else:
            chunk = base64.b64encode(_data(seq)).decode()
            params = {"processId": pid, "seq": seq, "stream": "stdout", "chunk": chunk}
            msg = {"method": "process/output", "params": params}
        await end.send(json.dumps(msg))

    while (frame := await end.receive()) is not None:
        msg = json.loads(frame)
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
        if method == "initialize":
            await end.send(json.dumps({"id": rid, "result": {"sessionId": "s"}}))
        elif method == "process/start":
            pid = params["processId"]
            await end.send(json.dumps({"id": rid, "result": {"processId": pid}}))
            for seq in life.arrival:
                await push(seq, pid)
        elif method == "process/read":
            after = params.get("afterSeq") or 0
            chunks = [
                {"seq": s, "stream": "stdout", "chunk": base64.b64encode(_data(s)).decode()}
                for s in retained
                if s > after
            ]
            result = {
                "chunks": chunks, "nextSeq": life.closed_seq + 1, "exited": True,
                "exitCode": life.exit_code, "closed": True, "failure": None,
                "sandboxDenied": False,
            }  # fmt: skip
            await end.send(json.dumps({"id": rid, "result": result}))
        elif rid is not None:
            await end.send(json.dumps({"id": rid, "result": {}}))


async def _run(life: Life) -> list[object]:
    a_send, a_recv = trio.open_memory_channel[str](1000)
    b_send, b_recv = trio.open_memory_channel[str](1000)
    server_end, client_end = _End(b_send, a_recv), _End(a_send, b_recv)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fake_server, server_end, life)
        async with (
            RemoteExecBackend._running(client_end, "property", 10.0) as backend,
            ue.open_process(backend, ue.ExecRequest(["x"], process_id="p")) as proc,
        ):
            events = [ev async for ev in proc.events()]
        nursery.cancel_scope.cancel()
    return events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(life=lives())
def test_drops_and_evictions_come_out_as_data_or_lost_never_confused(life: Life) -> None:
    async def main() -> list[object]:
        with trio.fail_after(60):
            return await _run(life)

    events = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    outs = life.output_seqs()
    gone = {s for s in outs[: life.evicted] if s in life.dropped}
    got = [e for e in events if isinstance(e, ue.OutputEvent)]
    assert [(e.seq, e.data) for e in got] == [(s, _data(s)) for s in outs if s not in gone]
    lost: set[int] = set()
    for e in events:
        if isinstance(e, ue.LostEvent):
            lost |= set(range(e.first_seq, e.last_seq + 1))
    exits = [e for e in events if isinstance(e, ue.ExitedEvent)]
    assert len(exits) == 1 and exits[0].exit_code == life.exit_code
    if life.exit_seq in life.dropped and gone:
        # A dropped exit next to dropped-and-evicted output: the read cannot say which
        # of those seqs the exit took. Each is accounted for, as the exit or as lost.
        assert lost | {exits[0].seq} == gone | {life.exit_seq}
    else:
        assert exits[0].seq == life.exit_seq
        assert lost == gone
    assert events[-1] == ue.ClosedEvent(life.closed_seq)
    assert not any(isinstance(e, ue.FailedEvent) for e in events)
