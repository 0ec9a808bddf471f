"""Helpers for the server-edge tests: a CLI server subprocess, raw HTTP, raw websockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import wsproto
import wsproto.events as wse

import unified_exec as ue

from .._support import embedded_server, host_port

__all__ = [
    "SERVE", "UPGRADE", "CliServer", "RawWs", "clean_env", "cli_server", "embedded",
    "host_port", "http", "run_echo", "status_of",
]  # fmt: skip

SERVE = [sys.executable, "-m", "unified_exec", "serve"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIFIED_EXEC_")}
    env.update(extra)
    return env


class CliServer:
    def __init__(self, proc: trio.Process, url: str) -> None:
        self.proc = proc
        self.url = url
        self.stderr = bytearray()

    @property
    def host_port(self) -> tuple[str, int]:
        return host_port(self.url)


@asynccontextmanager
async def cli_server(
    *args: str, env: dict[str, str] | None = None, stdin: int | None = subprocess.DEVNULL
) -> AsyncIterator[CliServer]:
    """``unified-exec serve ARGS`` with its announced URL; killed (group too) at the end."""
    proc = await trio.lowlevel.open_process(
        [*SERVE, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else clean_env(),
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    try:
        async with trio.open_nursery() as nursery:
            buf = b""
            with trio.fail_after(20):
                while b"\n" not in buf:
                    data = await stdout.receive_some(4096)
                    if not data:
                        await proc.wait()
                        err = await stderr.receive_some(65536)
                        raise AssertionError(f"server exited {proc.returncode}: {err!r}")
                    buf += data
            server = CliServer(proc, buf.split(b"\n", 1)[0].decode())

            async def drain() -> None:
                while data := await stderr.receive_some(65536):
                    server.stderr.extend(data)

            nursery.start_soon(drain)
            yield server
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            await proc.wait()


embedded = embedded_server  # our exec-server in this trio run


async def http(url: str, request: bytes, *, timeout: float = 10) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    host, port = host_port(url)
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(request)
            out = bytearray()
            try:
                while data := await stream.receive_some(65536):
                    out.extend(data)
            except trio.BrokenResourceError:
                pass
    return bytes(out)


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


async def run_echo(url: str, token: str | None = None, text: str = "edge-ok") -> bytes:
    """Connect our client, run ``echo TEXT``, return its output."""
    out = bytearray()
    with trio.fail_after(30):
        async with (
            ue.RemoteExecBackend.connect(url, token=token) as backend,
            ue.open_process(backend, ue.ExecRequest(["echo", text])) as proc,
        ):
            async for ev in proc.events():
                if isinstance(ev, ue.OutputEvent):
                    out.extend(ev.data)
    return bytes(out)


class RawWs:
    """A websocket client that answers nothing by itself (no automatic pongs).

    The liveness tests need a peer that stays connected but falls silent, which no
    real client does on demand; this one is built from wsproto, the same framing
    library the real ones use.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.events: list[wse.Event] = []
        self._next_id = 1

    async def _pump(self) -> None:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        self.events.extend(self.ws.events())

    async def open(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self.stream.send_all(
            self.ws.send(wse.Request(host="127.0.0.1", target="/", extra_headers=headers or []))
        )
        while not any(isinstance(e, wse.AcceptConnection) for e in self.events):
            await self._pump()
            assert not any(isinstance(e, wse.RejectConnection) for e in self.events)

    async def send_json(self, obj: Any) -> None:
        await self.stream.send_all(self.ws.send(wse.Message(data=json.dumps(obj))))

    async def call(self, method: str, params: Any) -> Any:
        rid = self._next_id
        self._next_id += 1
        await self.send_json({"id": rid, "method": method, "params": params})
        while True:
            for i, ev in enumerate(self.events):
                if isinstance(ev, wse.TextMessage):
                    msg = json.loads(ev.data)
                    if msg.get("id") == rid:
                        del self.events[i]
                        return msg
            await self._pump()
