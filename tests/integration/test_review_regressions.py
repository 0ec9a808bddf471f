"""Regression tests for the eleven defects a code review found (scripts in /tmp/rev).

Real processes, real sockets on 127.0.0.1 and the real exec-server (a ``python -m
unified_exec serve`` subprocess, or ``serve_exec_server`` embedded in the test's own
trio run). The only fake peer is the wedged stdio server of
``test_stalled_stdio_server_times_out_the_send``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

import unified_exec as ue
from unified_exec.backends import remote
from unified_exec.tools import UnifiedExecManager

from .._support import embedded_server

SERVE = [sys.executable, "-m", "unified_exec", "serve"]
MiB = 1 << 20
CLIENT_BUFFER = 16 * MiB  # what the remote client may hold per process for a lagging reader


def _pid_gone(pid: int) -> bool:
    """No such process at all: neither running nor a zombie nobody reaped."""
    return not os.path.exists(f"/proc/{pid}")


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _stop(proc: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.kill()
        with trio.fail_after(10):
            await proc.wait()


@asynccontextmanager
async def ws_server_process(*args: str) -> AsyncIterator[tuple[str, trio.Process]]:
    """``python -m unified_exec serve --listen ws://127.0.0.1:0`` as a subprocess."""
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--listen", "ws://127.0.0.1:0", "--ws-auth", "none", *args], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(15):
            while not buf.endswith(b"\n"):
                data = await proc.stdout.receive_some(4096)
                assert data, "the server exited before announcing its URL"
                buf += data
        url = buf.decode().strip().splitlines()[-1]
        assert url.startswith("ws://127.0.0.1:"), url
        yield url, proc
    finally:
        await _stop(proc)


@asynccontextmanager
async def stdio_server_process() -> AsyncIterator[tuple[trio.Process, LineReader]]:
    """``python -m unified_exec serve --listen stdio`` as a subprocess, spoken to raw."""
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--listen", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        yield proc, LineReader(proc.stdout)
    finally:
        await _stop(proc)


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = b""

    async def line(self) -> bytes:
        while b"\n" not in self._buf:
            data = await self._stream.receive_some(1 << 20)
            assert data, "the stdio server closed its stdout"
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line


async def ws_initialize(ws: trio_websocket.WebSocketConnection, request_id: int = 1) -> Any:
    await ws.send_message(
        json.dumps({"id": request_id, "method": "initialize", "params": {"clientName": "t"}})
    )
    reply = json.loads(await ws.get_message())
    assert reply.get("id") == request_id and "result" in reply, reply
    await ws.send_message(json.dumps({"method": "initialized", "params": {}}))
    return reply["result"]


def start_params(process_id: str, argv: list[str], env: dict[str, str], tty: bool) -> Any:
    return {
        "processId": process_id,
        "argv": argv,
        "cwd": "/",
        "env": env,
        "tty": tty,
        "arg0": None,
    }


# -- 1. hostile JSON must not take the server down ----------------------------------

HOSTILE = {
    "huge-int": "1" * 5000,
    "huge-int-id": '{"id":' + "1" * 5000 + ',"method":"initialize","params":{}}',
    "deep-array": "[" * 100_000 + "]" * 100_000,
    "deep-object": '{"a":' * 100_000 + "1" + "}" * 100_000,
}


@pytest.mark.parametrize("payload", sorted(HOSTILE))
async def test_hostile_json_over_websocket_gets_invalid_request(payload: str) -> None:
    async with ws_server_process() as (url, proc):
        with trio.fail_after(20):
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.send_message(HOSTILE[payload])  # before initialize, no token
                reply = json.loads(await ws.get_message())
                assert reply["id"] == -1, reply
                assert reply["error"]["code"] == -32600, reply
                # The same connection is still served...
                await ws_initialize(ws)
            # ...and so is a new one.
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws_initialize(ws)
            await trio.sleep(0.2)
            assert proc.returncode is None, "the exec-server process died"
            assert proc.poll() is None


@pytest.mark.parametrize("payload", sorted(HOSTILE))
async def test_hostile_json_over_stdio_gets_invalid_request(payload: str) -> None:
    async with stdio_server_process() as (proc, lines):
        assert proc.stdin is not None
        with trio.fail_after(20):
            await proc.stdin.send_all(HOSTILE[payload].encode() + b"\n")
            reply = json.loads(await lines.line())
            assert reply["id"] == -1, reply
            assert reply["error"]["code"] == -32600, reply
            await proc.stdin.send_all(
                b'{"id":7,"method":"initialize","params":{"clientName":"t"}}\n'
            )
            reply = json.loads(await lines.line())
            assert reply["id"] == 7 and "result" in reply, reply
            assert proc.poll() is None, "the exec-server process died"


# -- 2. cross-origin websocket handshakes are refused --------------------------------


async def test_websocket_with_origin_header_is_refused() -> None:
    with trio.fail_after(20):
        async with embedded_server() as url:
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket_url(
                    url, extra_headers=[(b"Origin", b"https://evil.example")]
                ) as ws:
                    await ws_initialize(ws)  # pragma: no cover - must not get here
            assert info.value.status_code == 403
            # A null origin (sandboxed iframes, file:// pages) is an origin too.
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket_url(
                    url, extra_headers=[(b"Origin", b"null")]
                ):
                    pass  # pragma: no cover
            assert info.value.status_code == 403
            # No Origin: a real client, served as before.
            async with trio_websocket.open_websocket_url(url) as ws:
                result = await ws_initialize(ws)
                assert result["sessionId"]
            async with (
                ue.RemoteExecBackend.connect(url) as backend,
                ue.open_process(backend, ue.ExecRequest(["echo", "hi"])) as proc,
            ):
                state = await proc.wait()
                assert state.exit_code == 0


async def test_origin_is_refused_with_a_token_too() -> None:
    with trio.fail_after(20):
        async with embedded_server(token="s3cret") as url:
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket_url(
                    url,
                    extra_headers=[
                        (b"Authorization", b"Bearer s3cret"),
                        (b"Origin", b"http://127.0.0.1:8000"),
                    ],
                ):
                    pass  # pragma: no cover
            assert info.value.status_code == 403


# -- 3. terminate() from inside the events() loop ------------------------------------


@pytest.mark.parametrize("tty", [False, True])
async def test_terminate_inside_events_loop_returns(tty: bool) -> None:
    backend = ue.LocalPtyBackend()
    proc = await ue.UnifiedExecProcess.start(
        backend, ue.ExecRequest(["sh", "-c", "echo ready; exec yes"], tty=tty)
    )
    pid = proc._handle.pid  # type: ignore[attr-defined]
    try:
        with trio.fail_after(15):
            async for _ev in proc.events():
                await trio.sleep(0.5)  # `yes` fills retention, the queue and the pipe
                with trio.fail_after(5):
                    state = await proc.terminate()
                break
        assert state.has_exited, state
        assert proc.closed
        assert _pid_gone(pid), "the child is still there (running or an unreaped zombie)"
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await proc.terminate()


# -- 4. close_stdin() while writes are queued ----------------------------------------


async def test_close_stdin_with_queued_writes_returns_promptly() -> None:
    backend = ue.LocalPtyBackend()
    req = ue.ExecRequest(["sleep", "20"], pipe_stdin=True)  # never reads its stdin
    with trio.fail_after(15):
        async with ue.open_process(backend, req) as proc:
            results: dict[str, ue.WriteStatus] = {}
            done = trio.Event()

            async def write(name: str, data: bytes) -> None:
                results[name] = await proc.write(data)
                if len(results) == 2:
                    done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, "big", b"x" * (2 * MiB))  # fills the pipe, blocks
                await trio.sleep(0.2)
                nursery.start_soon(write, "small", b"y")  # queued behind it
                await trio.sleep(0.2)
                assert results == {}, "the writes should still be blocked"
                with trio.fail_after(1):
                    await proc.close_stdin()
                with trio.fail_after(1):
                    await done.wait()
            assert results == {
                "big": ue.WriteStatus.STDIN_CLOSED,
                "small": ue.WriteStatus.STDIN_CLOSED,
            }
            assert await proc.write(b"z") is ue.WriteStatus.STDIN_CLOSED
            assert not proc.state.has_exited  # closing stdin did not kill it
            await proc.terminate()


# -- 5. a peer that stops reading ------------------------------------------------------

# A fake exec-server: it answers initialize and one process/start, then never reads
# its stdin again (a wedged peer). Only this test uses a fake peer.
STALL_SERVER = textwrap.dedent(
    """
    import json, sys, time
    req = json.loads(sys.stdin.readline())
    sys.stdout.write(json.dumps({"id": req["id"], "result": {
        "sessionId": "s", "environmentInfo": {}, "extensions": []}}) + "\\n")
    sys.stdout.flush()
    sys.stdin.readline()  # initialized
    req = json.loads(sys.stdin.readline())
    sys.stdout.write(json.dumps({"id": req["id"], "result": {
        "processId": req["params"]["processId"]}}) + "\\n")
    sys.stdout.flush()
    time.sleep(3600)
    """
)


async def test_stalled_stdio_server_times_out_the_send(tmp_path: Path) -> None:
    """Fake peer (stall_server.py style): it stops reading after process/start."""
    script = tmp_path / "stall_server.py"
    script.write_text(STALL_SERVER)
    with trio.fail_after(20):
        async with ue.RemoteExecBackend.connect_stdio(
            [sys.executable, str(script)], request_timeout=1
        ) as backend:
            handle = await backend.start(ue.ExecRequest(["cat"], pipe_stdin=True))
            t0 = trio.current_time()
            with trio.fail_after(3), pytest.raises(ue.TransportLostError):
                await handle.write(b"x" * (4 * MiB))  # far more than a pipe holds
            assert trio.current_time() - t0 < 3
            # The link is given up: everything after fails at once.
            with trio.fail_after(0.5):
                with pytest.raises(ue.TransportLostError):
                    await handle.write(b"y")
                with pytest.raises(ue.TransportLostError):
                    await handle.terminate()
                with pytest.raises(ue.TransportLostError):
                    await backend.start(ue.ExecRequest(["true"]))


# -- 6. a cancelled write must not leave half a frame on the link ----------------------


async def test_cancelled_big_write_does_not_corrupt_stdio_link(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The link and server are real. The server is SIGSTOPped before the 30 MiB write,
    so its stdin pipe really fills and the 40 MiB frame stops part-way; the caller gives
    up there. The wrapped send only *observes* that the big frame is under way (it
    calls the real send)."""
    sending = {"now": False}
    orig_send = remote._StdioTransport.send

    async def send(self: Any, text: str) -> None:
        big = len(text) > MiB
        if big:
            sending["now"] = True
        try:
            await orig_send(self, text)
        finally:
            if big:
                sending["now"] = False

    monkeypatch.setattr(remote._StdioTransport, "send", send)
    pidfile = tmp_path / "server.pid"
    argv = [
        "sh", "-c", f'echo $$ > {pidfile}; exec "$0" -m unified_exec serve --listen stdio',
        sys.executable,
    ]  # fmt: skip
    with trio.fail_after(45):
        async with ue.RemoteExecBackend.connect_stdio(argv, request_timeout=20) as backend:
            server_pid = int(pidfile.read_text())
            # `tr -d x` echoes everything but the x's: what comes out proves the link.
            req = ue.ExecRequest(["tr", "-d", "x"], pipe_stdin=True)
            async with ue.open_process(backend, req) as proc:
                completed = []
                os.kill(server_pid, signal.SIGSTOP)
                try:
                    async with trio.open_nursery() as nursery:

                        async def writer() -> None:
                            completed.append(await proc.write(b"x" * (30 * MiB)))

                        nursery.start_soon(writer)
                        # Every task parked: the writer waits on the full pipe.
                        await trio.testing.wait_all_tasks_blocked()
                        assert sending["now"], "test setup: the frame was already sent"
                        nursery.cancel_scope.cancel()  # the caller gives up mid-frame
                        os.kill(server_pid, signal.SIGCONT)
                finally:
                    os.kill(server_pid, signal.SIGCONT)
                assert completed == []
                with trio.fail_after(15):
                    assert await proc.write(b"hello\n") is ue.WriteStatus.ACCEPTED
                    await proc.close_stdin()
                    out = bytearray()
                    async for ev in proc.events():
                        if isinstance(ev, ue.OutputEvent):
                            out += ev.data
                    state = proc.state
                assert bytes(out) == b"hello\n"
                assert state.exit_code == 0, state
                assert state.failure_message is None
            # The backend is still good for a new process.
            async with ue.open_process(backend, ue.ExecRequest(["echo", "again"])) as proc2:
                assert (await proc2.wait()).exit_code == 0


# -- 7. lone surrogates ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"argv": ["echo", "\ud800"]},
        {"argv": ["\ud800"]},
        {"argv": ["echo"], "env": {"X": "\ud800"}},
        {"argv": ["echo"], "env": {"\ud800": "x"}},
    ],
    ids=["argv", "argv0", "env-value", "env-key"],
)
@pytest.mark.parametrize("tty", [False, True])
def test_lone_surrogate_is_an_invalid_request(kw: dict[str, Any], tty: bool) -> None:
    with pytest.raises(ue.InvalidRequestError):
        ue.ExecRequest(**kw, tty=tty)


async def test_lone_surrogates_over_the_wire_do_not_leak_server_fds() -> None:
    async with ws_server_process() as (url, proc):
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws_initialize(ws)
                before = _fd_count(proc.pid)
                path = os.environ.get("PATH", "/usr/bin:/bin")
                for i in range(50):
                    if i % 2:
                        params = start_params(
                            f"p{i}", ["echo", "\ud800"], {"PATH": path}, i % 4 == 1
                        )
                    else:
                        env = {"PATH": path, "X": "\ud800"}
                        params = start_params(f"p{i}", ["echo"], env, i % 4 == 0)
                    frame = json.dumps({"id": i + 10, "method": "process/start", "params": params})
                    assert "\\ud800" in frame  # a JSON escape decoding to a lone surrogate
                    await ws.send_message(frame)
                    reply = json.loads(await ws.get_message())
                    assert reply["id"] == i + 10, reply
                    assert reply.get("error", {}).get("code") in (-32602, -32603), reply
                after = _fd_count(proc.pid)
                assert after - before <= 3, f"server fds grew from {before} to {after}"
                # Still serving good requests.
                good = start_params("ok", ["true"], {"PATH": path}, False)
                await ws.send_message(
                    json.dumps({"id": 999, "method": "process/start", "params": good})
                )
                while True:
                    reply = json.loads(await ws.get_message())
                    if reply.get("id") == 999:
                        break
                assert "result" in reply, reply
            assert proc.poll() is None


# -- 8. exceptions out of our context managers come out as they are ----------------------


async def test_exceptions_in_connect_bodies_are_not_wrapped() -> None:
    with trio.fail_after(30):
        async with embedded_server(token="s3cret") as url:
            with pytest.raises(ValueError, match="user bug"):
                async with ue.RemoteExecBackend.connect(url, token="s3cret"):
                    raise ValueError("user bug")
            with pytest.raises(ue.LaunchError):
                async with ue.RemoteExecBackend.connect(url, token="s3cret") as backend:
                    await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["/nonexistent/p"]))
            with pytest.raises(ue.TransportLostError):
                async with ue.RemoteExecBackend.connect(url, token="wrong"):
                    pass  # pragma: no cover
        # Nothing listens here any more.
        with pytest.raises(ue.TransportLostError):
            async with ue.RemoteExecBackend.connect(url, token="s3cret"):
                pass  # pragma: no cover


async def test_exceptions_in_connect_stdio_bodies_are_not_wrapped() -> None:
    srv = [*SERVE, "--listen", "stdio"]
    with trio.fail_after(30):
        with pytest.raises(ValueError, match="user bug"):
            async with ue.RemoteExecBackend.connect_stdio(srv):
                raise ValueError("user bug")
        with pytest.raises(ue.LaunchError):
            async with ue.RemoteExecBackend.connect_stdio(srv) as backend:
                await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["/nonexistent/p"]))
        with pytest.raises(ue.TransportLostError):
            async with ue.RemoteExecBackend.connect_stdio(["false"]):
                pass  # pragma: no cover


# -- 9. a lagging remote reader must not make the client hold unbounded output ---------


def _held_bytes(handle: Any) -> int:
    """Output the remote client holds for this process: released and held back."""
    ready = sum(len(e.data) for e in handle._ready if isinstance(e, ue.OutputEvent))
    held = sum(len(e.data) for e in handle._order._held.values() if isinstance(e, ue.OutputEvent))
    return ready + held


async def _check_remote_reader_bounded(reads_while_paused: float | None) -> None:
    bound = CLIENT_BUFFER + MiB
    async with ue.RemoteExecBackend.connect_stdio([*SERVE, "--listen", "stdio"]) as backend:
        proc = await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["yes"]))
        handle: Any = proc._handle
        try:
            with trio.fail_after(30):
                it = proc.events()
                await it.__anext__()
                worst = 0
                next_read = trio.current_time()
                end = trio.current_time() + 3
                while trio.current_time() < end:
                    await trio.sleep(0.05)
                    if reads_while_paused is not None and trio.current_time() >= next_read:
                        await it.__anext__()  # a slow reader, not a stopped one
                        next_read = trio.current_time() + reads_while_paused
                    assert handle._ready_bytes <= bound, handle._ready_bytes
                    worst = max(worst, _held_bytes(handle))
                assert worst <= bound, f"client held {worst / MiB:.0f} MiB for one process"
                # Reading on works (dropped output is fetched again or reported lost).
                got = 0
                while got < 4 * CLIENT_BUFFER:
                    ev = await it.__anext__()
                    assert isinstance(ev, ue.OutputEvent | ue.LostEvent), ev
                    if isinstance(ev, ue.OutputEvent):
                        got += len(ev.data)
                await it.aclose()
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(10):
                await proc.terminate()


async def test_paused_remote_reader_keeps_client_buffer_bounded() -> None:
    await _check_remote_reader_bounded(None)


async def test_slow_remote_reader_keeps_client_buffer_bounded() -> None:
    await _check_remote_reader_bounded(0.25)


# -- 10. write_stdin to a child that never reads ----------------------------------------


async def test_write_stdin_to_non_reader_returns_within_yield_time() -> None:
    with trio.fail_after(20):
        async with UnifiedExecManager(ue.LocalPtyBackend(), allow_login_shell=False) as mgr:
            out = await mgr.exec_command("sleep 30", pipe_stdin=True, yield_time_ms=250)
            assert out.session_id is not None
            t0 = trio.current_time()
            with trio.fail_after(2):
                res = await mgr.write_stdin(out.session_id, "x" * 2_000_000, yield_time_ms=250)
            assert trio.current_time() - t0 < 2
            assert any("stdin" in w for w in res.warnings), res.warnings
            assert res.exit_code is None  # still running; the manager's exit ends it


# -- 11. ending trio.run with a live process ---------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("kw", [{}, {"tty": True}, {"pipe_stdin": True}], ids=str)
def test_run_ending_with_live_process_logs_no_error(
    kw: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    records = _Records()
    logger = logging.getLogger("unified_exec")
    logger.addHandler(records)
    procs: list[ue.UnifiedExecProcess] = []

    async def main() -> None:
        with trio.fail_after(10):
            backend = ue.LocalPtyBackend()
            proc = await ue.UnifiedExecProcess.start(
                backend, ue.ExecRequest(["sleep", "100"], **kw)
            )
            procs.append(proc)
            await trio.sleep(0.2)

    try:
        with caplog.at_level(logging.DEBUG, logger="unified_exec"):
            trio.run(main)
    finally:
        logger.removeHandler(records)
    errors = [
        r
        for r in [*records.records, *caplog.records]
        if r.levelno >= logging.ERROR and r.name.startswith("unified_exec")
    ]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    (proc,) = procs
    pid = proc._handle.pid  # type: ignore[attr-defined]
    assert _pid_gone(pid), "the child was not killed and reaped"
    assert proc.state.has_exited
