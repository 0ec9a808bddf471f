"""Issue §3: ``unified-exec serve`` stopped by SIGTERM or by stdin closing
(``--exit-on-stdin-close``, codex's flag) terminates every child, sends the last
notifications it can, and exits 0 within a bound. Children are found by a marker in
their environment (a scan of /proc/*/environ), so a grandchild counts too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from typing import Any

import pytest
import trio
import trio_websocket

from .._support import marked_pids
from .server_edge_helpers import SERVE, clean_env

SHUTDOWN_BOUND = 15.0  # generous for a loaded 2-core box; the measured time is printed


def marked(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds the marker."""
    return marked_pids("UE_EDGE_MARKER", marker)


def _start(marker: str) -> dict[str, Any]:
    return {
        "processId": "p1",
        "argv": ["sh", "-c", "sleep 1000 & sleep 1000"],
        "cwd": "/",
        "env": {"PATH": os.environ["PATH"], "UE_EDGE_MARKER": marker},
        "tty": False,
        "pipeStdin": False,
        "arg0": None,
    }


async def _wait_marked(marker: str, count: int) -> None:
    with trio.fail_after(20):
        while len(marked(marker)) < count:
            await trio.sleep(0.05)


async def _no_survivors(marker: str) -> None:
    with trio.move_on_after(3):
        while marked(marker):
            await trio.sleep(0.05)
    assert marked(marker) == [], "children outlived the server"


def _kill_marked(marker: str) -> None:
    for pid in marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("how", ["sigterm", "stdin-close"])
async def test_ws_server_stops_cleanly(how: str) -> None:
    marker = uuid.uuid4().hex
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--listen", "ws://127.0.0.1:0", "--ws-auth", "none", "--exit-on-stdin-close"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=clean_env(), start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with trio.fail_after(60):
            buf = b""
            while b"\n" not in buf:
                data = await proc.stdout.receive_some(4096)
                assert data, "server exited before announcing its URL"
                buf += data
            url = buf.split(b"\n", 1)[0].decode()
            async with trio_websocket.open_websocket_url(url) as ws:
                init = {"id": 1, "method": "initialize", "params": {"clientName": "edge"}}
                await ws.send_message(json.dumps(init))
                assert "sessionId" in await ws.get_message()
                await ws.send_message(json.dumps({"method": "initialized", "params": {}}))
                await ws.send_message(
                    json.dumps({"id": 2, "method": "process/start", "params": _start(marker)})
                )
                await _wait_marked(marker, 3)  # sh and both sleeps
                t0 = trio.current_time()
                if how == "sigterm":
                    proc.send_signal(signal.SIGTERM)
                else:
                    await proc.stdin.aclose()
                methods = []
                try:
                    while True:
                        msg = json.loads(await ws.get_message())
                        methods.append(msg.get("method"))
                except trio_websocket.ConnectionClosed as exc:
                    close_code = exc.reason.code
            with trio.fail_after(SHUTDOWN_BOUND):
                await proc.wait()
            took = trio.current_time() - t0
            print(f"{how}: exited {proc.returncode} after {took:.2f} s")
            assert proc.returncode == 0
            # The final notifications were flushed before the goodbye.
            assert "process/exited" in methods and "process/closed" in methods, methods
            assert close_code == 1001, close_code
            await _no_survivors(marker)
    finally:
        with trio.CancelScope(shield=True):
            _kill_marked(marker)
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


@pytest.mark.parametrize("how", ["sigterm", "stdin-close"])
async def test_stdio_server_stops_cleanly(how: str) -> None:
    marker = uuid.uuid4().hex
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--listen", "stdio", "--exit-on-stdin-close"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=clean_env(), start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout
    lines: list[dict[str, Any]] = []

    async def read_all() -> None:
        buf = b""
        while data := await stdout.receive_some(65536):
            buf += data
            *done, buf = buf.split(b"\n")
            lines.extend(json.loads(x) for x in done if x)

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for msg in (
                    {"id": 1, "method": "initialize", "params": {"clientName": "edge"}},
                    {"method": "initialized", "params": {}},
                    {"id": 2, "method": "process/start", "params": _start(marker)},
                ):
                    await proc.stdin.send_all(json.dumps(msg).encode() + b"\n")
                await _wait_marked(marker, 3)
                t0 = trio.current_time()
                if how == "sigterm":
                    proc.send_signal(signal.SIGTERM)
                else:
                    await proc.stdin.aclose()
                with trio.fail_after(SHUTDOWN_BOUND):
                    await proc.wait()
            took = trio.current_time() - t0
            print(f"stdio {how}: exited {proc.returncode} after {took:.2f} s")
            assert proc.returncode == 0
            methods = [m.get("method") for m in lines]
            assert "process/exited" in methods and "process/closed" in methods, methods
            await _no_survivors(marker)
    finally:
        with trio.CancelScope(shield=True):
            _kill_marked(marker)
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
