"""Liveness and explicit loss across dropped links (issue 7: defect 9 client side, §2).

Real servers behind the real loopback proxy of ``_cutproxy``:
- a link frozen without FIN/RST is noticed by keepalive pings, and resumed once the
  network is back (review repro n06: ``wait()`` hung forever);
- if it never comes back within the reconnect budget, processes fail, typed;
- a session the server dropped (detach timeout) is reported, not hung on;
- output the server evicted while detached reaches the reader as a ``LostEvent``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

import unified_exec as ue
from unified_exec.backends.remote import LinkSettings

from .._support import embedded_server
from ._cutproxy import CutProxy, parse_port

LOST_PREFIX = "exec-server transport disconnected"
FAST = LinkSettings(ping_interval=0.3, ping_misses=2, backoff_initial=0.02, backoff_max=0.2)
# A reconnect attempt that the proxy hangs up on during hold() is only given up at the
# connect timeout (10 s by default): with 3 s the link is back ~8 s sooner after
# release(), and a loopback handshake never takes that long.
HOLD_CONNECT_TIMEOUT = 3.0


@asynccontextmanager
async def proxied(
    url: str, link: LinkSettings, connect_timeout: float = 10.0
) -> AsyncIterator[tuple[CutProxy, ue.RemoteExecBackend]]:
    host, port = parse_port(url)
    async with (
        CutProxy(host, port).running() as proxy,
        ue.RemoteExecBackend.connect(
            proxy.url, link=link, connect_timeout=connect_timeout
        ) as backend,
    ):
        yield proxy, backend


async def test_a_frozen_link_is_noticed_and_resumed() -> None:
    script = "for i in $(seq 1 150); do echo n-$i; sleep 0.01; done"
    with trio.fail_after(60):
        async with (
            embedded_server() as url,
            proxied(url, FAST) as (proxy, backend),
            ue.open_process(backend, ue.ExecRequest(["sh", "-c", script])) as proc,
        ):
            await trio.sleep(0.3)
            proxy.freeze()  # silence: no FIN, no RST
            await trio.sleep(2.5)  # 2 missed pings (~0.9 s): keepalive gives the link up
            proxy.thaw()
            state = await proc.wait()
            res = await proc.read()
            events = [c.data for c in res.chunks]
    assert backend.resumes >= 1
    assert state.exit_code == 0
    assert b"".join(events).decode().split() == [f"n-{i}" for i in range(1, 151)]


async def test_a_link_that_stays_frozen_fails_processes_within_the_budget() -> None:
    link = LinkSettings(ping_interval=0.3, ping_misses=2, reconnect_budget=1.0)
    with trio.fail_after(30):
        async with (
            embedded_server() as url,
            proxied(url, link) as (proxy, backend),
            ue.open_process(backend, ue.ExecRequest(["sleep", "30"])) as proc,
        ):
            proxy.freeze()
            t0 = trio.current_time()
            state = await proc.wait()
            took = trio.current_time() - t0
            proxy.thaw()
    assert state.has_exited and state.exit_code is None
    assert state.failure_message is not None and state.failure_message.startswith(LOST_PREFIX)
    assert "keepalive" in state.failure_message
    assert took < 15  # 2 missed pings + 1 s budget, with slack for a busy machine


async def test_a_session_expired_on_the_server_is_reported() -> None:
    with trio.fail_after(30):
        async with (
            embedded_server(detach_timeout=0.3) as url,
            proxied(url, FAST, HOLD_CONNECT_TIMEOUT) as (proxy, backend),
            ue.open_process(backend, ue.ExecRequest(["sleep", "30"])) as proc,
        ):
            proxy.hold()  # an outage longer than the server keeps the session
            await trio.sleep(1.5)
            proxy.release()
            state = await proc.wait()
    assert state.failure_message is not None and state.failure_message.startswith(LOST_PREFIX)
    assert "unknown session" in state.failure_message


async def test_output_evicted_while_detached_is_a_lost_event(server_url: str) -> None:
    # ~4 MB while the link is down: more than the 1 MiB both servers retain.
    script = "read go; head -c 4000000 /dev/zero | tr '\\0' a; echo; echo END"
    with trio.fail_after(60):
        async with (
            proxied(server_url, FAST, HOLD_CONNECT_TIMEOUT) as (proxy, backend),
            ue.open_process(backend, ue.ExecRequest(["sh", "-c", script], pipe_stdin=True)) as proc,
        ):
            events: list[object] = []

            async def consume() -> None:
                async for ev in proc.events():
                    events.append(ev)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.sleep(0.2)
                assert await proc.write(b"go\n") is ue.WriteStatus.ACCEPTED
                proxy.hold()
                await trio.sleep(1.5)
                proxy.release()
            state = await proc.wait()
    lost = [e for e in events if isinstance(e, ue.LostEvent)]
    assert lost, "the evicted output must be reported"
    data = b"".join(e.data for e in events if isinstance(e, ue.OutputEvent))
    assert data.endswith(b"\nEND\n") and len(data) < 4_000_000
    assert state.exit_code == 0
    assert isinstance(events[-1], ue.ClosedEvent)
