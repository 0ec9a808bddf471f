"""Hostile peers below JSON-RPC: raw TCP against the websocket port.

Review defect 1 (a peer hanging up mid-handshake killed the whole server) lives at
this level, where the fuzzer of ``test_stress_fuzz`` never reaches. Each Hypothesis
example is a batch of *openings* — random bytes, an upgrade request cut anywhere,
a wrong or missing token, plain GETs, huge headers, a good upgrade followed by
unmasked or garbage frames, a live session with a child — each ended by FIN or RST,
several at once. After each batch the server must be alive and serve a fresh
authenticated connection, and no child of an abandoned session may outlive the
detach timeout.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ._common import (
    LONG,
    await_no_survivors,
    child_env,
    describe,
    new_marker,
    pick,
    record,
    rss_mib,
    ws_server,
)
from ._wire import ws_peer

BATCH = 20
BATCHES = pick(5, 100)
DETACH = 0.5


@attrs.frozen
class Opening:
    kind: str
    data: bytes
    end: str  # "fin", "rst", or "read" (read what the server says, then FIN)


def _upgrade(port: int, token: str | None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{auth}{extra}\r\n"
    ).encode()


def _frame(payload: bytes, opcode: int = 1, masked: bool = True) -> bytes:
    """One client websocket frame (clients must mask; unmasked is a protocol error)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _rpc(obj: Any) -> bytes:
    return _frame(json.dumps(obj).encode())


@st.composite
def opening(draw: st.DrawFn, port: int, token: str, marker: str) -> Opening:
    end = draw(st.sampled_from(["fin", "rst", "read"]))
    kind = draw(
        st.sampled_from(
            [
                "bytes",
                "cut-upgrade",
                "wrong-token",
                "no-token",
                "plain-get",
                "readyz",
                "huge-header",
                "many-headers",
                "origin",
                "http10",
                "unmasked-frame",
                "garbage-after-upgrade",
                "cut-frame",
                "after-close",
                "ping-flood",
                "live-session",
            ]
        )
    )
    good = _upgrade(port, token)
    if kind == "bytes":
        data = draw(st.binary(max_size=2000))
    elif kind == "cut-upgrade":
        data = good[: draw(st.integers(0, len(good) - 1))]
    elif kind == "wrong-token":
        data = _upgrade(port, draw(st.sampled_from(["x", token[:-1], token + "x", "", "é"])))
    elif kind == "no-token":
        data = _upgrade(port, None)
    elif kind == "plain-get":
        data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == "readyz":
        data = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == "huge-header":
        data = _upgrade(
            port, token, "X-Big: " + "a" * draw(st.sampled_from([8000, 70000])) + "\r\n"
        )
    elif kind == "many-headers":
        data = _upgrade(port, token, "".join(f"X-{i}: v\r\n" for i in range(2000)))
    elif kind == "origin":
        data = _upgrade(port, token, "Origin: http://evil.example\r\n")
    elif kind == "http10":
        data = good.replace(b"HTTP/1.1", b"HTTP/1.0")
    elif kind == "unmasked-frame":
        data = good + _frame(b'{"id":1,"method":"initialize","params":{}}', masked=False)
    elif kind == "garbage-after-upgrade":
        data = good + draw(st.binary(min_size=1, max_size=500))
    elif kind == "cut-frame":
        frame = _rpc({"id": 1, "method": "initialize", "params": {"clientName": "x"}})
        data = good + frame[: draw(st.integers(1, len(frame) - 1))]
    elif kind == "after-close":  # requests after our own close frame
        init = {"id": 1, "method": "initialize", "params": {"clientName": "x"}}
        data = good + _frame(b"\x03\xe8", opcode=8) + _rpc(init) + _rpc({"id": 2, "method": "x"})
    elif kind == "ping-flood":  # pings the server must answer or drop, never choke on
        data = good + b"".join(_frame(os.urandom(16), opcode=9) for _ in range(500))
    else:  # a session with a live child, abandoned
        start = {
            "processId": "p",
            "argv": ["sh", "-c", "sleep 1000 & sleep 1000"],
            "cwd": "file:///tmp",
            "env": child_env(marker),
            "tty": draw(st.booleans()),
        }
        data = (
            good
            + _rpc({"id": 1, "method": "initialize", "params": {"clientName": "tcp"}})
            + _rpc({"method": "initialized"})
            + _rpc({"id": 2, "method": "process/start", "params": start})
        )
    return Opening(kind, data, end)


async def play(port: int, op: Opening) -> None:
    """One opening; whatever the server does to it is fine, as long as it lives."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError as exc:
        raise AssertionError(f"server refused a TCP connection: {exc!r}") from exc
    try:
        with trio.move_on_after(5):
            await stream.send_all(op.data)
            if op.end == "read" or op.kind == "live-session":
                with trio.move_on_after(0.3):
                    while await stream.receive_some(65536):
                        pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        if op.end == "rst":
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()


def test_fuzz_raw_tcp_openings() -> None:
    cases = 0
    kinds: dict[str, int] = {}
    problems: list[str] = []
    rss: list[float] = []
    started = time.monotonic()
    with ws_server(["--detach-timeout", str(DETACH)]) as server:
        port = urlsplit(server.url).port
        assert port is not None

        @settings(
            max_examples=BATCHES,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            derandomize=not LONG,  # make test replays the same batches; make stress explores
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            nonlocal cases
            marker = new_marker("tcp")
            ops = [data.draw(opening(port, server.token, marker)) for _ in range(BATCH)]
            found: list[str] = []

            async def main() -> None:
                with trio.fail_after(120):
                    limit = trio.CapacityLimiter(5)

                    async def one(op: Opening) -> None:
                        async with limit:
                            await play(port, op)

                    async with trio.open_nursery() as nursery:
                        for op in ops:
                            nursery.start_soon(one, op)
                    async with ws_peer(server.url, server.headers) as fresh:
                        reply = await fresh.handshake()
                        info = await fresh.call(2, "environment/info")
                        if (
                            reply is None
                            or "result" not in reply
                            or not info
                            or "result" not in info
                        ):
                            found.append(f"fresh connection not served: {reply!r} {info!r}")

            try:
                trio.run(main)
            except Exception as exc:
                found.append(f"could not talk to the server: {exc!r}")
            cases += len(ops)
            for op in ops:
                kinds[op.kind] = kinds.get(op.kind, 0) + 1
            if not server.alive():
                found.append(f"SERVER DIED (rc {server.proc.returncode}): {server.log()[-2000:]}")
            rss.append(rss_mib(server.pid))
            survivors, _ = await_no_survivors(marker, timeout=DETACH + 15)
            if survivors:
                found.append(f"children outlived an abandoned session: {describe(survivors)}")
            if found:
                problems.extend(found)
                raise AssertionError("\n".join(found) + "\n" + ", ".join(o.kind for o in ops))

        try:
            run()
            tracebacks = server.tracebacks()
        finally:
            record(
                "fuzz_tcp_openings",
                cases=cases,
                batches=BATCHES,
                kinds=dict(sorted(kinds.items())),
                failures=len(problems),
                problems=problems[:5],
                server_rss_mib_first=round(rss[0], 1) if rss else None,
                server_rss_mib_last=round(rss[-1], 1) if rss else None,
                seconds=round(time.monotonic() - started, 1),
            )
    assert not tracebacks, tracebacks[:5]


async def test_idle_connections_past_the_fd_limit() -> None:
    """200 idle TCP connections against a server limited to 128 fds: accept() fails with
    EMFILE for a while, but the server lives, drops idle peers (handshake timeout) and
    then serves a real client."""
    with ws_server(nofile=128) as server:
        port = urlsplit(server.url).port
        assert port is not None
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(200)]
        t0 = time.monotonic()
        served = False
        with trio.move_on_after(60):
            while not served:
                with trio.move_on_after(15):
                    async with ws_peer(server.url, server.headers) as peer:
                        reply = await peer.handshake()
                        served = reply is not None and "result" in reply
        waited = time.monotonic() - t0
        for stream in streams:
            await stream.aclose()
        alive = server.alive()
    record(
        "fd_exhaustion", idle_connections=200, server_nofile=128, served_after_s=round(waited, 1)
    )
    assert alive
    assert served, "no client was served within 60 s while idle peers held every fd"
