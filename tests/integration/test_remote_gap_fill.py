"""Seq gaps on a live connection: the client fetches what is missing.

A real server never drops a notification while attached, so this test puts a
fault-injecting link between RemoteExecBackend and our real ExecServer (with a
real LocalPtyBackend behind it): the link loses chosen process/output
notifications on the way to the client. This is a fake for a fault real parts
cannot produce on demand; everything else is real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

import unified_exec as ue
from unified_exec.backends.remote import RemoteExecBackend
from unified_exec.server import ExecServer


class _End:
    """One end of an in-memory, message-framed link."""

    def __init__(self, send: trio.MemorySendChannel[str], receive: trio.MemoryReceiveChannel[str]):
        self._send = send
        self._receive = receive

    async def send(self, text: str) -> None:
        await self._send.send(text)

    async def receive(self) -> str | None:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def aclose(self) -> None:
        await self._send.aclose()


class _ServerEnd(_End):
    kind = "websocket"
    name = "test link"

    def __init__(self, *args: Any, drop: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(*args)
        self._drop = drop
        self.dropped: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        message = json.loads(text)
        if self._drop(message):
            self.dropped.append(message)
            return
        await super().send(text)


@asynccontextmanager
async def linked(
    drop: Callable[[dict[str, Any]], bool], end: type[_ServerEnd] = _ServerEnd
) -> AsyncIterator[tuple[Any, _ServerEnd]]:
    to_server_send, to_server_recv = trio.open_memory_channel[str](1000)
    to_client_send, to_client_recv = trio.open_memory_channel[str](1000)
    server_end = end(to_client_send, to_server_recv, drop=drop)
    client_end = _End(to_server_send, to_client_recv)
    async with ExecServer(ue.LocalPtyBackend(kill_grace=0)) as server, trio.open_nursery() as n:
        n.start_soon(server.serve_connection, server_end)
        async with RemoteExecBackend._running(client_end, "gap-test", 10.0) as backend:
            yield backend, server_end
        await client_end.aclose()


def _output_seq(seq: int) -> Callable[[dict[str, Any]], bool]:
    def drop(message: dict[str, Any]) -> bool:
        params = message.get("params") or {}
        return message.get("method") == "process/output" and params.get("seq") == seq

    return drop


async def test_a_lost_notification_is_fetched_with_process_read() -> None:
    with trio.fail_after(20):
        async with linked(_output_seq(1)) as (backend, server_end):
            req = ue.ExecRequest(["sh", "-c", "echo one; sleep 0.1; echo two"])
            async with ue.open_process(backend, req) as proc:
                events = [e async for e in proc.events()]
    assert [m["params"]["seq"] for m in server_end.dropped] == [1]
    outputs = [e for e in events if isinstance(e, ue.OutputEvent)]
    assert [(e.seq, e.data) for e in outputs] == [(1, b"one\n"), (2, b"two\n")]
    assert not any(isinstance(e, ue.LostEvent | ue.FailedEvent) for e in events)
    assert isinstance(events[-1], ue.ClosedEvent)


async def test_a_lost_exit_is_inferred_from_the_read_result() -> None:
    def drop_exit(message: dict[str, Any]) -> bool:
        return message.get("method") == "process/exited"

    with trio.fail_after(20):
        async with (
            linked(drop_exit) as (backend, server_end),
            ue.open_process(backend, ue.ExecRequest(["sh", "-c", "exit 7"])) as proc,
        ):
            state = await proc.wait()
    assert len(server_end.dropped) == 1
    assert state == ue.ProcessState(has_exited=True, exit_code=7)


_START_KEYS = {"processId", "sandboxType"}  # the answer to process/start


class _LateStartAnswer(_ServerEnd):
    """Also holds the answer to process/start back until the process has closed, so
    that every notification (gap included) is in before the client's log connects."""

    def __init__(self, *args: Any, drop: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(*args, drop=drop)
        self._held: list[str] = []

    async def send(self, text: str) -> None:
        message = json.loads(text)
        result = message.get("result")
        if isinstance(result, dict) and "processId" in result and set(result) <= _START_KEYS:
            self._held.append(text)
            return
        await super().send(text)
        if message.get("method") == "process/closed":
            for held in self._held:
                await super().send(held)
            self._held.clear()


async def test_a_gap_that_is_there_before_the_log_connects_is_fetched() -> None:
    """Output 1 lost, then 2, exited and closed arrive before the start answer: the
    log connects to a stream already held at a gap. wait() alone (nobody iterates)
    must still see the fetch happen and the process close."""
    with trio.fail_after(20):
        async with linked(_output_seq(1), end=_LateStartAnswer) as (backend, server_end):
            req = ue.ExecRequest(["sh", "-c", "echo one; sleep 0.1; echo two"])
            async with ue.open_process(backend, req) as proc:
                state = await proc.wait()
                chunks = (await proc.read()).chunks
    assert [m["params"]["seq"] for m in server_end.dropped] == [1]
    assert state == ue.ProcessState(has_exited=True, exit_code=0)
    assert [(c.seq, c.data) for c in chunks] == [(1, b"one\n"), (2, b"two\n")]
