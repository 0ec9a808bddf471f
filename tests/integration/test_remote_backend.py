"""RemoteExecBackend against our own exec-server, over real websockets and stdio.

Servers are embedded (``serve_exec_server`` in this trio run), or subprocesses
(``python -m unified_exec serve``) when a test must kill the server.
"""

from __future__ import annotations

import functools
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import unified_exec as ue

from .._support import embedded_server
from .helpers import alive, sh

SERVE = [sys.executable, "-m", "unified_exec", "serve"]
TRANSPORTS = [pytest.param("ws", id="ws"), pytest.param("stdio", id="stdio")]
LOST_PREFIX = "exec-server transport disconnected"


@asynccontextmanager
async def ws_server_process() -> AsyncIterator[tuple[str, trio.Process]]:
    """``python -m unified_exec serve --listen ws://127.0.0.1:0`` and its URL."""
    env = dict(os.environ)
    env.pop("UNIFIED_EXEC_TOKEN", None)
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--listen", "ws://127.0.0.1:0", "--ws-auth", "none"],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        buf = b""
        while b"\n" not in buf:
            data = await proc.stdout.receive_some(4096)
            assert data, "the server exited before printing its URL"
            buf += data
        yield buf.split(b"\n", 1)[0].decode(), proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                with trio.move_on_after(10):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def remote(transport: str) -> AsyncIterator[ue.RemoteExecBackend]:
    if transport == "ws":
        async with embedded_server() as url, ue.RemoteExecBackend.connect(url) as backend:
            yield backend
    elif transport == "ws-proc":
        async with (
            ws_server_process() as (url, _),
            ue.RemoteExecBackend.connect(url) as backend,
        ):
            yield backend
    else:
        async with ue.RemoteExecBackend.connect_stdio([*SERVE, "--listen", "stdio"]) as backend:
            yield backend


@asynccontextmanager
async def killable_remote(
    transport: str, tmp_path: pathlib.Path
) -> AsyncIterator[tuple[ue.RemoteExecBackend, int]]:
    """A backend on a server subprocess, and that subprocess's pid."""
    if transport == "ws":
        async with (
            ws_server_process() as (url, proc),
            ue.RemoteExecBackend.connect(url) as backend,
        ):
            yield backend, proc.pid
    else:
        pidfile = tmp_path / "server.pid"
        argv = ["sh", "-c", 'echo $$ > "$0"; exec "$@"', str(pidfile), *SERVE]
        async with ue.RemoteExecBackend.connect_stdio([*argv, "--listen", "stdio"]) as backend:
            yield backend, int(pidfile.read_text())


async def read_until(proc: ue.UnifiedExecProcess, needle: bytes) -> bytes:
    data = b""
    cursor = 0
    while needle not in data:
        res = await proc.read(after_seq=cursor, wait=1.0)
        data += b"".join(c.data for c in res.chunks)
        cursor = res.next_seq - 1
        if res.closed and needle not in data:
            raise AssertionError(f"{needle!r} never came; got {data!r} and {res.state}")
    return data


async def child_pid(proc: ue.UnifiedExecProcess) -> int:
    out = await read_until(proc, b"\n")
    line = out.split(b"\n", 1)[0].strip()
    assert line.startswith(b"pid:"), out
    return int(line[4:])


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while alive(pid):
            await trio.sleep(0.02)


# -- basics ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", [*TRANSPORTS, pytest.param("ws-proc", id="ws-proc")])
async def test_round_trip(transport: str) -> None:
    with trio.fail_after(20):
        async with remote(transport) as backend:
            assert backend.session_id
            req = sh("read x; echo got:$x; echo err >&2; exit 3", pipe_stdin=True)
            async with ue.open_process(backend, req) as proc:
                assert await proc.write(b"hi\n") is ue.WriteStatus.ACCEPTED
                state = await proc.wait()
                assert state == ue.ProcessState(has_exited=True, exit_code=3, failure_message=None)
                res = await proc.read()
                assert res.chunks == (
                    ue.OutputEvent(seq=1, stream="stdout", data=b"got:hi\n"),
                    ue.OutputEvent(seq=2, stream="stderr", data=b"err\n"),
                )
                assert res.closed and res.next_seq == 5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_leaving_the_backend_terminates_its_processes(transport: str) -> None:
    with trio.fail_after(20):
        async with remote(transport) as backend:
            proc = await ue.UnifiedExecProcess.start(backend, sh("echo pid:$$; exec sleep 60"))
            pid = await child_pid(proc)
        await wait_gone(pid)


# -- transport loss ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_transport_loss_ends_everything_promptly(
    transport: str, tmp_path: pathlib.Path
) -> None:
    pids: list[int] = []
    try:
        with trio.fail_after(30):
            async with killable_remote(transport, tmp_path) as (backend, server_pid):
                proc = await ue.UnifiedExecProcess.start(backend, sh("echo pid:$$; exec sleep 60"))
                tty = await ue.UnifiedExecProcess.start(
                    backend, sh("echo pid:$$; exec sleep 60", tty=True)
                )
                pids += [await child_pid(proc), await child_pid(tty)]
                done: dict[str, tuple[float, Any]] = {}

                async def waiter() -> None:
                    state = await proc.wait()
                    done["wait"] = (trio.current_time(), state)

                async def consumer() -> None:
                    events = [ev async for ev in proc.events()]
                    done["events"] = (trio.current_time(), events)

                async def tty_waiter() -> None:
                    state = await tty.wait()
                    done["tty"] = (trio.current_time(), state)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(waiter)
                    nursery.start_soon(consumer)
                    nursery.start_soon(tty_waiter)
                    await trio.sleep(0.3)
                    assert not done  # all pending
                    t0 = trio.current_time()
                    os.kill(server_pid, signal.SIGKILL)

                for key, (t, _) in done.items():
                    assert t - t0 < 2.0, (key, t - t0)
                for state in (done["wait"][1], proc.state, done["tty"][1], tty.state):
                    assert state.has_exited and state.exit_code is None
                    assert state.failure_message is not None
                    assert state.failure_message.startswith(LOST_PREFIX), state
                events = done["events"][1]
                assert isinstance(events[-1], ue.FailedEvent), events
                assert events[-1].message.startswith(LOST_PREFIX)
                assert isinstance(events[0], ue.OutputEvent) and events[0].data.startswith(b"pid:")
                assert proc.closed
                res = await proc.read(wait=5)  # returns at once, with the failure
                assert res.closed and res.state == proc.state
                assert await proc.write(b"x") is ue.WriteStatus.STDIN_CLOSED

                with pytest.raises(ue.TransportLostError):
                    await backend.start(ue.ExecRequest(["true"]))
                with pytest.raises(ue.TransportLostError):
                    async with ue.open_process(backend, ue.ExecRequest(["true"])):
                        pass
    finally:
        # The killed server could not reap its children: do it for it.
        for pid in pids:
            kill_group(pid)


# -- launch failures ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_launch_failure_and_id_reuse(transport: str, tmp_path: pathlib.Path) -> None:
    with trio.fail_after(20):
        async with remote(transport) as backend:
            bad = [
                ue.ExecRequest(["/nonexistent/binary"], process_id="p1"),
                ue.ExecRequest(["/etc/passwd"], process_id="p1"),  # not executable
                ue.ExecRequest(["no-such-command-xyz"], process_id="p1"),
                ue.ExecRequest(["no-such-command-xyz"], tty=True, process_id="p1"),
                ue.ExecRequest(["true"], cwd=str(tmp_path / "missing"), process_id="p1"),
            ]
            for req in bad:
                with pytest.raises(ue.LaunchError) as info:
                    await ue.UnifiedExecProcess.start(backend, req)
                if req.argv[0] == "/nonexistent/binary":
                    assert info.value.path == "/nonexistent/binary"
            async with ue.open_process(backend, sh("echo again", process_id="p1")) as proc:
                state = await proc.wait()
                assert state.exit_code == 0
                assert (await proc.read()).chunks[0].data == b"again\n"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_duplicate_process_id_is_refused(transport: str) -> None:
    with trio.fail_after(20):
        async with remote(transport) as backend:
            first = await ue.UnifiedExecProcess.start(
                backend, sh("exec sleep 60", process_id="dup")
            )
            async with first:
                with pytest.raises(ue.InvalidRequestError):
                    await ue.UnifiedExecProcess.start(backend, sh("true", process_id="dup"))
                assert not first.state.has_exited


# -- terminals ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resize_through_our_server(transport: str) -> None:
    with trio.fail_after(20):
        async with remote(transport) as backend:
            assert "process/resize" in backend.extensions
            req = sh("stty size; read x; stty size; read y; echo bye", tty=True)
            async with ue.open_process(backend, req) as proc:
                assert b"24 80" in await read_until(proc, b"24 80")
                await proc.resize(40, 120)
                await proc.write(b"\n")
                await read_until(proc, b"40 120")
                await proc.write(b"\n")
                state = await proc.wait()
                assert state.exit_code == 0
            with pytest.raises(ue.InvalidRequestError):
                async with ue.open_process(backend, sh("exec sleep 60")) as pipe_proc:
                    await pipe_proc.resize(30, 90)  # no terminal to resize


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_requested_tty_size_is_honoured(transport: str) -> None:
    """ExecRequest.size applies remotely too (the server announces process/resize)."""
    with trio.fail_after(20):
        async with remote(transport) as backend:
            req = ue.ExecRequest(["stty", "size"], tty=True, size=(33, 101))
            async with ue.open_process(backend, req) as proc:
                await proc.wait()
                out = b"".join(c.data for c in (await proc.read()).chunks)
            assert out.strip() == b"33 101"


# -- fairness ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", [pytest.param("ws-proc", id="ws"), *TRANSPORTS[1:]])
async def test_noisy_process_does_not_starve_a_small_one(transport: str) -> None:
    total = 64 * 1024 * 1024
    with trio.fail_after(60):
        async with remote(transport) as backend:
            big = await ue.UnifiedExecProcess.start(
                backend, ue.ExecRequest(["head", "-c", str(total), "/dev/zero"])
            )
            received = 0
            small_report: dict[str, Any] = {}
            async with big:
                async for ev in big.events():
                    if isinstance(ev, ue.OutputEvent):
                        received += len(ev.data)
                        if not small_report and received >= (1 << 20):
                            t0 = trio.current_time()
                            async with ue.open_process(backend, sh("echo small")) as small:
                                state = await small.wait()
                                data = b"".join(c.data for c in (await small.read()).chunks)
                            small_report = {
                                "took": trio.current_time() - t0,
                                "state": state,
                                "data": data,
                                "big_received": received,
                                "big_closed": big.closed,
                            }
                    else:
                        assert not isinstance(ev, ue.FailedEvent | ue.LostEvent), ev
            assert received == total
            assert big.state.exit_code == 0
        assert small_report["data"] == b"small\n"
        assert small_report["state"].exit_code == 0
        assert small_report["took"] < 1.0, small_report
        assert not small_report["big_closed"], small_report
        assert small_report["big_received"] < total // 2, small_report


# -- security ----------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["ws://0.0.0.0:0", "ws://[::]:0", "ws://example.com:0"])
@pytest.mark.parametrize("token", [None, ""])
async def test_public_listen_needs_a_token(listen: str, token: str | None) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ue.InvalidRequestError):
                await nursery.start(
                    functools.partial(ue.serve_exec_server, listen=listen, token=token)
                )


async def test_token_is_required_and_checked() -> None:
    with trio.fail_after(20):
        async with embedded_server(listen="ws://0.0.0.0:0", token="s3cret") as url:
            port = int(url.rsplit(":", 1)[1])
            local = f"ws://127.0.0.1:{port}"
            for token in (None, "wrong", "s3cret-but-longer", "S3CRET"):
                with pytest.raises(ue.TransportLostError):
                    async with ue.RemoteExecBackend.connect(local, token=token):
                        pass
            async with ue.RemoteExecBackend.connect(local, token="s3cret") as backend:
                proc = await ue.UnifiedExecProcess.start(backend, sh("echo authorised"))
                await proc.wait()
                assert (await proc.read()).chunks[0].data == b"authorised\n"


async def test_token_on_loopback_is_enforced_too() -> None:
    with trio.fail_after(20):
        async with embedded_server(token="tok") as url:
            with pytest.raises(ue.TransportLostError):
                async with ue.RemoteExecBackend.connect(url):
                    pass
            async with ue.RemoteExecBackend.connect(url, token="tok") as backend:
                proc = await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["true"]))
                assert (await proc.wait()).exit_code == 0


async def test_connect_to_nothing_is_transport_lost() -> None:
    with trio.fail_after(20):
        async with embedded_server() as url:
            pass  # the port is free again
        with pytest.raises(ue.TransportLostError):
            async with ue.RemoteExecBackend.connect(url):
                pass


# -- relay -------------------------------------------------------------------------------


async def test_a_server_can_relay_a_remote_backend() -> None:
    with trio.fail_after(20):
        async with (
            embedded_server() as inner_url,
            ue.RemoteExecBackend.connect(inner_url) as inner,
            embedded_server(backend=inner) as outer_url,
            ue.RemoteExecBackend.connect(outer_url) as outer,
        ):
            req = sh("read x; echo got:$x; echo err >&2; exit 5", pipe_stdin=True)
            async with ue.open_process(outer, req) as proc:
                assert await proc.write(b"relayed\n") is ue.WriteStatus.ACCEPTED
                state = await proc.wait()
                assert state.exit_code == 5
                res = await proc.read()
                assert [(c.stream, c.data) for c in res.chunks] == [
                    ("stdout", b"got:relayed\n"),
                    ("stderr", b"err\n"),
                ]
            proc = await ue.UnifiedExecProcess.start(outer, sh("echo pid:$$; exec sleep 60"))
            pid = await child_pid(proc)
            assert (await proc.terminate()).exit_code == 137
            await wait_gone(pid)
