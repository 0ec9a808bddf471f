"""Property: whatever our ExecServer can send about a process, our client decodes.

Review observation 3 / defect 11: the server once emitted ``exitCode: -1`` that its own
client refused as "invalid number". Here hypothesis scripts a process's whole life
(output on any stream, an exit with any i32 code, or a failure with any text) in a
scripted backend; the real ``ExecServer`` serves it and the real ``RemoteExecBackend``
reads it over an in-memory message link (the scripted backend and the link are fakes
for what a real child cannot produce on demand: exit -2**31, a failure with a chosen
text). The client must see the same output and the same end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unified_exec as ue
from unified_exec.backends.remote import RemoteExecBackend
from unified_exec.server import ExecServer

I32 = st.integers(-(2**31), 2**31 - 1)
OUTPUT = st.tuples(st.sampled_from(["stdout", "stderr", "pty"]), st.binary(min_size=1, max_size=64))
END = st.one_of(
    st.tuples(st.just("exit"), I32),
    st.tuples(st.just("fail"), st.text(min_size=1, max_size=40).filter(str.strip)),
)


@attrs.define
class _Scripted:
    process_id: str
    outputs: list[tuple[str, bytes]]
    end: tuple[str, Any]

    async def events(self) -> AsyncIterator[ue.ProcessEvent]:
        seq = 0
        for stream, data in self.outputs:
            seq += 1
            yield ue.OutputEvent(seq, stream, data)  # type: ignore[arg-type]
        kind, value = self.end
        if kind == "exit":
            yield ue.ExitedEvent(seq + 1, value)
            yield ue.ClosedEvent(seq + 2)
        else:
            yield ue.FailedEvent(value)

    async def write(self, data: bytes) -> ue.WriteStatus:
        return ue.WriteStatus.STDIN_CLOSED

    async def terminate(self) -> None:
        pass

    async def interrupt(self) -> None:
        pass

    async def resize(self, rows: int, cols: int) -> None:
        pass


@attrs.define
class _ScriptedBackend:
    outputs: list[tuple[str, bytes]]
    end: tuple[str, Any]

    async def start(self, request: ue.ExecRequest) -> _Scripted:
        return _Scripted(request.process_id or "p", self.outputs, self.end)

    async def aclose(self) -> None:
        pass


class _End:
    def __init__(self, send: trio.MemorySendChannel[str], receive: trio.MemoryReceiveChannel[str]):
        self._send = send
        self._receive = receive
        self.kind = "websocket"
        self.name = "memory link"

    async def send(self, text: str) -> None:
        await self._send.send(text)

    async def receive(self) -> str | None:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def aclose(self) -> None:
        await self._send.aclose()


async def _run(outputs: list[tuple[str, bytes]], end: tuple[str, Any]) -> list[object]:
    a_send, a_recv = trio.open_memory_channel[str](1000)
    b_send, b_recv = trio.open_memory_channel[str](1000)
    server_end, client_end = _End(b_send, a_recv), _End(a_send, b_recv)
    async with (
        ExecServer(_ScriptedBackend(outputs, end)) as server,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(server.serve_connection, server_end)
        async with (
            RemoteExecBackend._running(client_end, "property", 10.0) as backend,
            ue.open_process(backend, ue.ExecRequest(["x"], process_id="p")) as proc,
        ):
            events = [ev async for ev in proc.events()]
        await client_end.aclose()
    return events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outputs=st.lists(OUTPUT, max_size=5), end=END)
def test_every_process_life_the_server_can_send_decodes_in_the_client(
    outputs: list[tuple[str, bytes]], end: tuple[str, Any]
) -> None:
    async def main() -> list[object]:
        with trio.fail_after(20):
            return await _run(outputs, end)

    events = trio.run(main)
    got = [(e.stream, e.data) for e in events if isinstance(e, ue.OutputEvent)]
    assert got == outputs
    assert not any(isinstance(e, ue.LostEvent) for e in events)
    kind, value = end
    if kind == "exit":
        assert events[-2:] == [
            ue.ExitedEvent(len(outputs) + 1, value),
            ue.ClosedEvent(len(outputs) + 2),
        ]
    else:
        assert events[-1] == ue.FailedEvent(value)
