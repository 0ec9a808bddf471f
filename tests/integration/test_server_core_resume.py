"""Liveness and resume on the server side (defect 9, issue §2).

A link that dies without FIN or RST leaves the server attached to a dead connection.
Two ways out: an idle timeout (the transport reports pongs through ``Heartbeat``), and
a resume with the session id taking over a connection that has been silent for
``takeover_after`` seconds (a livelier one still answers -32010).
"""

from __future__ import annotations

import trio

import unified_exec as ue
from unified_exec.server import ExecServer

from .server_core_harness import SocketConnection, connect, served, start_params

TICK = "i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.05; done"


async def test_resume_takes_over_a_silent_connection_but_not_a_lively_one() -> None:
    with trio.fail_after(20):
        async with served(takeover_after=0.5) as server, connect(server) as old:
            session = (await old.handshake())["sessionId"]
            await old.call("process/start", start_params("tick", ["sh", "-c", TICK]))
            await old.wait_output("tick", b"tick1\n")
            async with connect(server) as new:
                params = {"clientName": "again", "resumeSessionId": session}
                code, text = await new.error("initialize", params)
                assert code == -32010 and "already attached" in text
                await trio.sleep(0.8)  # the old link is silent (as a half-open one is)
                result = await new.call("initialize", params)
                assert result["sessionId"] == session
                await new.notify("initialized", {})
                with trio.fail_after(5):
                    await old.closed.wait()  # the server let go of the old connection
                note = await new.wait_note("tick", "process/output")  # pushed to the new one
                assert note["params"]["seq"] > 1
                await new.call("process/terminate", {"processId": "tick"})
                await new.wait_note("tick", "process/closed")


async def test_idle_timeout_closes_a_silent_connection_and_keeps_the_session() -> None:
    with trio.fail_after(20):
        async with served(idle_timeout=0.5) as server, connect(server) as first:
            session = (await first.handshake())["sessionId"]
            await first.call("process/start", start_params("q", ["sleep", "30"]))
            t0 = trio.current_time()
            with trio.fail_after(5):
                await first.closed.wait()
            assert trio.current_time() - t0 >= 0.4
            async with connect(server) as second:
                await second.handshake(resumeSessionId=session)  # detached, not ended
                read = await second.call("process/read", {"processId": "q"})
                assert read["closed"] is False
                await second.call("process/terminate", {"processId": "q"})
                await second.wait_note("q", "process/closed")


class _Pinged(SocketConnection):
    """A transport that sees pongs: it reports life though no frame arrives."""

    def last_activity(self) -> float:
        return trio.current_time()


async def test_a_transport_heartbeat_keeps_an_idle_connection_open() -> None:
    with trio.fail_after(20):
        async with (
            served(idle_timeout=0.3) as server,
            connect(server, conn_class=_Pinged) as raw,
        ):
            await raw.handshake()
            await trio.sleep(1.2)
            assert not raw.closed.is_set()
            assert await raw.call("environment/status") == {"status": "ready"}


async def test_retention_defaults_are_at_least_codex() -> None:
    async with ue.LocalPtyBackend() as local:
        server = ExecServer(local)
        assert server.detach_timeout >= 80 and server.retain_closed >= 80
        assert server.idle_timeout is None  # stdio and codex clients need no pings


async def test_a_stdio_session_is_never_taken_over() -> None:
    with trio.fail_after(10):
        async with (
            served(takeover_after=0.2) as server,
            connect(server, kind="stdio") as pipe,
        ):
            session = (await pipe.handshake())["sessionId"]
            await trio.sleep(0.4)
            async with connect(server) as other:
                code, _ = await other.error(
                    "initialize", {"clientName": "x", "resumeSessionId": session}
                )
                assert code == -32010
            assert not pipe.closed.is_set()
