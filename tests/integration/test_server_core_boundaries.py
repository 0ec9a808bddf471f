"""No peer input and no backend exception ends the ExecServer (defects 4, 7, 10, 27).

The faulty backends here wrap a real LocalPtyBackend (real children) and only inject
the fault a real part cannot produce on demand: a terminate() that raises (as a relay's
does when its upstream stalls), a start() that raises something unexpected.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio

import unified_exec as ue
from unified_exec.server import ExecServer, open_exec_server

from .server_core_harness import connect, served, start_params

SERVE_STDIO = [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]


class _RaisingHandle:
    """A real local handle, but its terminate() raises after killing the child."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def terminate(self) -> None:
        await self._inner.terminate()
        raise ue.ExecTimeoutError("upstream did not answer process/terminate within 1 s")


class RaisingTerminate:
    """Fault injection: a real LocalPtyBackend whose handles' terminate() kills the
    child for real, then raises as a relay's does when its upstream answers late."""

    def __init__(self, local: ue.LocalPtyBackend) -> None:
        self.local = local

    async def start(self, request: ue.ExecRequest) -> Any:
        return _RaisingHandle(await self.local.start(request))

    async def aclose(self) -> None:
        await self.local.aclose()


class OddStart:
    """Fault injection: start() raises what a third-party backend might."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def start(self, request: ue.ExecRequest) -> Any:
        await trio.lowlevel.checkpoint()
        raise self.exc

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_backend_terminate_that_raises_does_not_end_the_server() -> None:
    """r10: the relay case. The server, its other process and the connection go on."""
    with trio.fail_after(20):
        async with (
            ue.LocalPtyBackend(kill_grace=0) as local,
            served(RaisingTerminate(local)) as server,
            connect(server) as raw,
        ):
            await raw.handshake()
            await raw.call("process/start", start_params("victim", ["sleep", "30"]))
            await raw.call("process/start", start_params("bystander", ["cat"], pipeStdin=True))
            assert await raw.call("process/terminate", {"processId": "victim"}) == {"running": True}
            await raw.wait_note("victim", "process/closed")
            await trio.sleep(0.2)  # the raising terminate task has finished by now
            status = await raw.call(
                "process/write",
                {"processId": "bystander", "chunk": "aGkK", "writeId": "w1"},
            )
            assert status == {"status": "accepted"}
            assert await raw.wait_output("bystander", b"hi\n") == b"hi\n"
            assert await raw.call("environment/status") == {"status": "ready"}
            # leaving the server block terminates "bystander" through the same raising
            # terminate(): the block still ends normally.


@pytest.mark.parametrize("form", ["ExecServer", "open_exec_server"])
async def test_shutdown_with_a_raising_terminate_leaves_the_trio_run_sane(form: str) -> None:
    """n04b: the terminate of shutdown raises; the block ends without an exception and
    the caller's run goes on (it used to abort with 'Nursery stack corrupted')."""
    with trio.fail_after(20):
        async with ue.LocalPtyBackend(kill_grace=0) as local:
            backend = RaisingTerminate(local)
            cm = ExecServer(backend) if form == "ExecServer" else open_exec_server(backend)
            async with cm as server, connect(server, kind="websocket") as raw:
                await raw.handshake()
                await raw.call("process/start", start_params("p", ["sleep", "30"]))
            # still inside a healthy trio run:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0.01)
            await trio.sleep(0)


async def test_the_body_exception_leaves_the_server_block_unwrapped() -> None:
    with trio.fail_after(10):
        async with ue.LocalPtyBackend(kill_grace=0) as local:
            with pytest.raises(KeyError):
                async with ExecServer(local):
                    raise KeyError("mine")
            with pytest.raises(KeyError):
                async with open_exec_server(local):
                    raise KeyError("mine")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ue.InvalidRequestError("argv[0] is empty"), -32602),
        (ue.LaunchError("no such file"), -32603),
        (RuntimeError("a bug in someone's backend"), -32603),
        (ue.ExecTimeoutError("upstream stalled"), -32603),
    ],
)
async def test_one_table_maps_start_errors(exc: Exception, code: int) -> None:
    """Review observation 10: InvalidRequestError from backend.start() is -32602, like
    the same error raised by our own validation; nothing ends the connection."""
    with trio.fail_after(10):
        async with served(OddStart(exc)) as server, connect(server) as raw:
            await raw.handshake()
            got = await raw.error("process/start", start_params("p", ["true"]))
            assert got == (code, str(exc))
            assert await raw.call("environment/status") == {"status": "ready"}


@pytest.mark.parametrize(
    "setting",
    ["retain_closed", "detach_timeout", "idle_timeout", "takeover_after"],
)
@pytest.mark.parametrize("value", [-1, -0.5, math.nan])
async def test_negative_durations_are_refused_at_construction(setting: str, value: float) -> None:
    """r20: retain_closed=-1 used to be accepted, then crash the server at trio.sleep."""
    async with ue.LocalPtyBackend() as local:
        with pytest.raises(ue.InvalidRequestError, match=setting):
            ExecServer(local, **{setting: value})
        with pytest.raises(ue.InvalidRequestError, match="retention_bytes"):
            ExecServer(local, retention_bytes=-1)


async def test_lone_surrogate_echoed_in_an_error_keeps_a_socket_connection() -> None:
    """r16, websocket-like connection: the error naming a method with a lone surrogate
    is sent (with U+FFFD), and the connection keeps answering."""
    with trio.fail_after(10):
        async with served() as server, connect(server) as raw:
            await raw.send_raw('{"id":"s1","method":"x\\ud800y"}')
            reply = await raw.response("s1")
            assert reply["error"]["code"] == -32601
            assert "x\ufffdy" in reply["error"]["message"]
            await raw.handshake()
            assert await raw.call("environment/status") == {"status": "ready"}


async def test_lone_surrogate_echoed_in_an_error_keeps_a_stdio_server() -> None:
    """r16, the real stdio server: it used to exit at the first such echo."""
    proc = subprocess.Popen(
        SERVE_STDIO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'{"id":1,"method":"bad\\udc80name"}\n')
        proc.stdin.write(b'{"id":2,"method":"initialize","params":{"clientName":"\\ud800"}}\n')
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
        assert first["id"] == 1 and first["error"]["code"] == -32601
        assert "bad\ufffdname" in first["error"]["message"]
        second = json.loads(proc.stdout.readline())
        assert second["id"] == 2 and "sessionId" in second["result"]
        assert proc.poll() is None
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]


def _child_servers() -> set[int]:
    """Our direct children that run `unified_exec serve` (the relay's upstream)."""
    found = set()
    me = str(os.getpid())
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        ppid = stat[stat.rfind(b")") + 2 :].split()[1].decode()
        if ppid == me and b"unified_exec\0serve" in cmd:
            found.add(int(name))
    return found


async def test_a_relay_whose_upstream_stalls_during_terminate_survives() -> None:
    """r10 with real parts: our server relays to an upstream exec-server (stdio) that
    is SIGSTOPped while the relay terminates a process; the upstream's terminate times
    out (ExecTimeoutError) inside the relay, and the relay serves on."""
    with trio.fail_after(40):
        before = _child_servers()
        async with ue.RemoteExecBackend.connect_stdio(SERVE_STDIO, request_timeout=1.0) as up:
            (upstream,) = _child_servers() - before
            async with served(up) as relay, connect(relay) as raw:
                await raw.handshake()
                await raw.call("process/start", start_params("victim", ["sleep", "30"]))
                await raw.call("process/start", start_params("bystander", ["sleep", "30"]))
                os.kill(upstream, signal.SIGSTOP)
                try:
                    assert await raw.call("process/terminate", {"processId": "victim"}) == {
                        "running": True
                    }
                    await trio.sleep(1.5)  # the relay's terminate times out meanwhile
                finally:
                    os.kill(upstream, signal.SIGCONT)
                assert await raw.call("environment/status") == {"status": "ready"}
                read = await raw.call("process/read", {"processId": "bystander"})
                assert read["closed"] is False and read["failure"] is None
                await raw.call("process/terminate", {"processId": "bystander"})
                await raw.wait_note("bystander", "process/closed")
