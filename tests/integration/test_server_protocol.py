"""Our exec-server spoken to in raw JSON-RPC, over a real websocket and real stdio.

Each test runs its own server: embedded (``serve_exec_server`` on 127.0.0.1 port 0)
for websockets, or a ``python -m unified_exec serve --listen stdio`` subprocess.
The texts of handshake errors are codex 0.169.0's (see protocol-codex-0.169.md).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_websocket

from .._support import embedded_server
from .helpers import alive

SERVE = [sys.executable, "-m", "unified_exec", "serve"]
TICK = "echo pid:$$; i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.1; done"
# Silent after its pid: a chatty child could die of SIGPIPE and hide a missing kill.
QUIET = "echo pid:$$; exec sleep 60"
PARSE_ERROR_PREFIX = "failed to parse JSON-RPC message from exec-server "
MAX_FRAME = 64 * 1024 * 1024

Msg = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def start_params(process_id: str, argv: list[str], **kw: Any) -> Msg:
    params: Msg = {
        "processId": process_id,
        "argv": argv,
        "cwd": "file:///tmp",
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        "tty": False,
    }
    params.update(kw)
    return params


class Raw:
    """A raw JSON-RPC peer. A reader task records every incoming message in order,
    with the time it arrived; tests wait for the messages they expect."""

    def __init__(self, send: Callable[[str | bytes], Awaitable[None]]) -> None:
        self._send = send
        self.messages: list[tuple[float, Msg]] = []
        self.closed = trio.Event()
        self._changed = trio.lowlevel.ParkingLot()
        self._ids = itertools.count(1)
        self._send_lock = trio.Lock()

    # fed by the reader
    def feed(self, frame: str | bytes) -> None:
        msg = json.loads(frame)
        assert isinstance(msg, dict), f"server sent a non-object: {frame!r}"
        assert "jsonrpc" not in msg  # codex's envelope omits it
        self.messages.append((trio.current_time(), msg))
        self._changed.unpark_all()

    def eof(self) -> None:
        self.closed.set()
        self._changed.unpark_all()

    # sending
    async def send_raw(self, frame: str | bytes) -> None:
        async with self._send_lock:
            await self._send(frame)

    async def send(self, obj: Any) -> None:
        await self.send_raw(json.dumps(obj))

    async def notify(self, method: str, params: Any = None) -> None:
        msg: Msg = {"method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)

    async def send_request(self, method: str, params: Any = None) -> int:
        request_id = next(self._ids)
        msg: Msg = {"id": request_id, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)
        return request_id

    # waiting
    async def wait_for(self, pred: Callable[[Msg], bool]) -> Msg:
        while True:
            for _, msg in self.messages:
                if pred(msg):
                    return msg
            if self.closed.is_set():
                raise AssertionError("connection closed while waiting for a message")
            await self._changed.park()

    async def wait_count(self, n: int) -> None:
        """Until at least n messages have arrived."""
        while len(self.messages) < n:
            if self.closed.is_set():
                raise AssertionError(f"connection closed after {len(self.messages)} messages")
            await self._changed.park()

    async def response(self, request_id: int | str) -> Msg:
        return await self.wait_for(
            lambda m: m.get("id") == request_id and ("result" in m or "error" in m)
        )

    def arrival(self, msg: Msg) -> float:
        for t, m in self.messages:
            if m is msg:
                return t
        raise KeyError(msg)

    async def request(self, method: str, params: Any = None) -> Msg:
        return await self.response(await self.send_request(method, params))

    async def call(self, method: str, params: Any = None) -> Any:
        reply = await self.request(method, params)
        assert "error" not in reply, reply
        return reply["result"]

    async def error(self, method: str, params: Any = None) -> tuple[int, str]:
        reply = await self.request(method, params)
        assert "error" in reply, reply
        assert set(reply["error"]) == {"code", "message"}
        return reply["error"]["code"], reply["error"]["message"]

    async def handshake(self, **params: Any) -> Msg:
        result = await self.call("initialize", {"clientName": "raw-test", **params})
        await self.notify("initialized", {})
        return result  # type: ignore[no-any-return]

    def notes(self, process_id: str | None = None, method: str | None = None) -> list[Msg]:
        return [
            m
            for _, m in self.messages
            if "method" in m
            and (method is None or m["method"] == method)
            and (process_id is None or m["params"]["processId"] == process_id)
        ]

    async def wait_note(self, process_id: str, method: str) -> Msg:
        return await self.wait_for(
            lambda m: m.get("method") == method and m["params"]["processId"] == process_id
        )

    def output(self, process_id: str) -> bytes:
        return b"".join(
            unb64(m["params"]["chunk"]) for m in self.notes(process_id, "process/output")
        )

    async def wait_output(self, process_id: str, needle: bytes) -> bytes:
        while needle not in self.output(process_id):
            if self.closed.is_set():
                raise AssertionError(f"connection closed before {needle!r} was seen")
            await self._changed.park()
        return self.output(process_id)


@asynccontextmanager
async def ws_raw(url: str) -> AsyncIterator[Raw]:
    async with trio_websocket.open_websocket_url(url, max_message_size=2 * MAX_FRAME) as ws:
        raw = Raw(ws.send_message)

        async def reader() -> None:
            while True:
                try:
                    frame = await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    raw.eof()
                    return
                raw.feed(frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            yield raw
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def stdio_server() -> AsyncIterator[tuple[Raw, trio.Process]]:
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--listen", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def send(frame: str | bytes) -> None:
        data = frame.encode() if isinstance(frame, str) else frame
        await stdin.send_all(data + b"\n")

    raw = Raw(send)

    async def reader() -> None:
        buf = b""
        while True:
            data = await stdout.receive_some(1 << 20)
            if not data:
                raw.eof()
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                raw.feed(line)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            yield raw, proc
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            try:
                await stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
                raise AssertionError("the stdio server did not exit at EOF on stdin")


@asynccontextmanager
async def open_raw(transport: str) -> AsyncIterator[Raw]:
    """A fresh server and one raw connection to it."""
    if transport == "ws":
        async with embedded_server() as url, ws_raw(url) as raw:
            yield raw
    else:
        async with stdio_server() as (raw, _):
            yield raw


TRANSPORTS = [pytest.param("ws", id="ws"), pytest.param("stdio", id="stdio")]


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while alive(pid):
            await trio.sleep(0.02)


async def first_pid(raw: Raw, process_id: str) -> int:
    out = await raw.wait_output(process_id, b"\n")
    line = out.split(b"\n", 1)[0].strip()
    assert line.startswith(b"pid:"), out
    return int(line[4:])


# -- handshake ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_handshake_rules(transport: str) -> None:
    with trio.fail_after(15):
        async with open_raw(transport) as raw:
            read = {"processId": "p"}
            assert await raw.error("process/read", read) == (
                -32600,
                "client must call initialize before using exec methods",
            )
            assert await raw.error("process/start", start_params("p", ["true"])) == (
                -32600,
                "client must call initialize before using exec methods",
            )
            result = await raw.call("initialize", {"clientName": "raw-test"})
            assert isinstance(result["sessionId"], str) and result["sessionId"]
            assert "process/resize" in result.get("extensions", [])
            assert await raw.error("process/read", read) == (
                -32600,
                "client must send initialized before using exec methods",
            )
            assert await raw.error("initialize", {"clientName": "again"}) == (
                -32600,
                "initialize may only be sent once per connection",
            )
            await raw.notify("initialized", {})
            await raw.notify("initialized")  # a second one is accepted silently
            assert await raw.error("process/read", read) == (-32600, "unknown process id p")
            code, _ = await raw.error("no/such/method", {})
            assert code == -32601
            # still in business after all that
            await raw.call("process/start", start_params("p", ["sh", "-c", "echo ok"]))
            await raw.wait_note("p", "process/closed")
            assert raw.output("p") == b"ok\n"
            assert not raw.closed.is_set()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_initialize_params_can_be_retried(transport: str) -> None:
    with trio.fail_after(15):
        async with open_raw(transport) as raw:
            code, _ = await raw.error("initialize", {})
            assert code == -32602
            code, _ = await raw.error("initialize")
            assert code == -32602
            await raw.handshake()
            assert await raw.call("process/terminate", {"processId": "x"}) == {"running": False}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "handshake", [pytest.param(False, id="before-initialize"), pytest.param(True, id="after")]
)
async def test_bad_notification_closes_connection(transport: str, handshake: bool) -> None:
    with trio.fail_after(15):
        async with open_raw(transport) as raw:
            if handshake:
                await raw.handshake()
                await raw.notify("bogus/notification", {})
            else:
                await raw.notify("initialized", {})
            with trio.fail_after(3):
                await raw.closed.wait()
            # no reply was sent before closing (the one message is initialize's answer)
            assert len(raw.messages) == (1 if handshake else 0), raw.messages


async def test_bad_notification_closes_only_that_connection() -> None:
    with trio.fail_after(15):
        async with embedded_server() as url, ws_raw(url) as good, ws_raw(url) as bad:
            await good.handshake()
            await bad.notify("initialized")
            with trio.fail_after(3):
                await bad.closed.wait()
            await good.call("process/start", start_params("p", ["true"]))
            await good.wait_note("p", "process/closed")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unparseable_input_gets_id_minus_one_and_connection_lives(transport: str) -> None:
    with trio.fail_after(15):
        async with open_raw(transport) as raw:
            bad_frames: list[str | bytes] = [
                "{not json",
                "[]",
                '[{"id": 1, "method": "initialize", "params": {"clientName": "x"}}]',
                '"just a string"',
                "42",
                '{"id": 1, "method": "initialize"} trailing',
                b"\xff\xfe\x00garbage",
            ]
            for frame in bad_frames:
                await raw.send_raw(frame)
            await raw.wait_count(len(bad_frames))
            errors = [m for _, m in raw.messages]
            for err in errors:
                assert err["id"] == -1, err
                assert err["error"]["code"] == -32600, err
                assert err["error"]["message"].startswith(PARSE_ERROR_PREFIX), err
            assert errors[1]["error"]["message"].endswith("expected a JSON-RPC object")
            assert errors[2]["error"]["message"].endswith("expected a JSON-RPC object")
            # nothing in a batch was executed, and the connection still works
            result = await raw.handshake()
            assert result["sessionId"]
            await raw.call("process/start", start_params("p", ["sh", "-c", "echo fine"]))
            await raw.wait_note("p", "process/closed")
            assert raw.output("p") == b"fine\n"


async def test_websocket_accepts_binary_frames_and_jsonrpc_member() -> None:
    with trio.fail_after(15):
        async with embedded_server() as url, ws_raw(url) as raw:
            frame = {"jsonrpc": "2.0", "id": "abc", "method": "initialize"}
            frame["params"] = {"clientName": "bin"}  # type: ignore[assignment]
            await raw.send_raw(json.dumps(frame).encode())
            reply = await raw.response("abc")
            assert reply["result"]["sessionId"]
            await raw.send_raw(b'{"method": "initialized"}')
            await raw.call("process/start", start_params("p", ["true"]))
            await raw.wait_note("p", "process/closed")


async def test_two_messages_in_one_websocket_frame_are_one_error() -> None:
    with trio.fail_after(15):
        async with embedded_server() as url, ws_raw(url) as raw:
            one = json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "x"}})
            two = json.dumps({"id": 2, "method": "initialize", "params": {"clientName": "y"}})
            await raw.send_raw(one + "\n" + two)
            err = await raw.response(-1)
            assert err["error"]["code"] == -32600
            await trio.sleep(0.2)
            assert len(raw.messages) == 1  # both ignored
            await raw.handshake()


async def test_huge_garbage_on_stdio() -> None:
    with trio.fail_after(60):
        async with stdio_server() as (raw, proc):
            await raw.send_raw(b"x" * (4 << 20))  # 4 MiB of garbage, one line
            first = await raw.response(-1)
            assert first["error"]["message"].startswith(PARSE_ERROR_PREFIX)
            await raw.send_raw(b"y" * (MAX_FRAME + (1 << 20)))  # beyond the message cap
            await raw.wait_count(2)
            second = raw.messages[1][1]
            assert second["id"] == -1 and second["error"]["code"] == -32600, second
            await raw.send_raw(b"{" * 1000)
            await raw.wait_count(3)
            result = await raw.handshake()
            assert result["sessionId"]
            await raw.call("process/start", start_params("p", ["sh", "-c", "echo alive"]))
            await raw.wait_note("p", "process/closed")
            assert raw.output("p") == b"alive\n"
            assert proc.returncode is None


async def test_huge_garbage_on_websocket() -> None:
    with trio.fail_after(60):
        async with embedded_server() as url:
            async with ws_raw(url) as raw:
                await raw.send_raw("z" * (8 << 20))
                err = await raw.response(-1)
                assert err["error"]["message"].startswith(PARSE_ERROR_PREFIX)
                await raw.handshake()
                await raw.call("process/start", start_params("p", ["true"]))
                await raw.wait_note("p", "process/closed")
            # a frame beyond the cap may cost that connection, never the server
            async with ws_raw(url) as raw:
                try:
                    await raw.send_raw(b"q" * (MAX_FRAME + (1 << 20)))
                except trio_websocket.ConnectionClosed:
                    pass
                with trio.fail_after(10):
                    await raw.closed.wait()
            async with ws_raw(url) as raw:
                await raw.handshake()
                await raw.call("process/start", start_params("p", ["sh", "-c", "echo up"]))
                await raw.wait_note("p", "process/closed")
                assert raw.output("p") == b"up\n"


# -- concurrency and ordering -------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_long_poll_read_does_not_delay_a_write(transport: str) -> None:
    with trio.fail_after(20):
        async with open_raw(transport) as raw:
            await raw.handshake()
            await raw.call(
                "process/start",
                start_params("sink", ["sh", "-c", "cat >/dev/null"], pipeStdin=True),
            )
            t0 = trio.current_time()
            read_id = await raw.send_request(
                "process/read", {"processId": "sink", "afterSeq": 0, "waitMs": 3000}
            )
            write_id = await raw.send_request(
                "process/write", {"processId": "sink", "chunk": b64(b"x\n"), "writeId": "w1"}
            )
            quick_id = await raw.send_request("process/read", {"processId": "sink"})
            write = await raw.response(write_id)
            assert write["result"] == {"status": "accepted"}
            quick = await raw.response(quick_id)
            assert quick["result"]["chunks"] == []
            read = await raw.response(read_id)
            assert read["result"]["chunks"] == [] and not read["result"]["exited"]
            t_write, t_quick = raw.arrival(write) - t0, raw.arrival(quick) - t0
            t_read = raw.arrival(read) - t0
            assert t_write < 1.0, t_write
            assert t_quick < 1.0, t_quick
            assert t_read >= 2.9, t_read
            assert await raw.call("process/terminate", {"processId": "sink"}) == {"running": True}
            await raw.wait_note("sink", "process/closed")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_notifications_arrive_in_seq_order_per_process(transport: str) -> None:
    bulk = "seq 1 60000 & seq 1 30000 >&2; wait; echo done"
    bulk_out = "".join(f"{i}\n" for i in range(1, 60001)).encode() + b"done\n"
    bulk_err = "".join(f"{i}\n" for i in range(1, 30001)).encode()
    # many small writes, alternating between the streams
    small = (
        "import os\nfor i in range(4000):\n os.write(1, b'o%d\\n' % i); os.write(2, b'e%d\\n' % i)"
    )
    small_out = b"".join(b"o%d\n" % i for i in range(4000))
    small_err = b"".join(b"e%d\n" % i for i in range(4000))
    argvs = {
        "b": ["sh", "-c", bulk],
        "s": [sys.executable, "-c", small],
        "t": ["sh", "-c", bulk],
    }
    with trio.fail_after(60):
        async with open_raw(transport) as raw:
            await raw.handshake()
            ids = [f"{kind}{i}" for kind, n in (("b", 8), ("s", 6), ("t", 4)) for i in range(n)]
            async with trio.open_nursery() as nursery:
                for pid in ids:
                    params = start_params(pid, argvs[pid[0]], tty=pid[0] == "t")
                    nursery.start_soon(raw.call, "process/start", params)
            for pid in ids:
                await raw.wait_note(pid, "process/closed")
            for pid in ids:
                notes = raw.notes(pid)
                seqs = [m["params"]["seq"] for m in notes]
                assert all(a < b for a, b in itertools.pairwise(seqs)), f"{pid}: {seqs}"
                assert seqs == list(range(1, len(seqs) + 1)), pid  # nothing dropped
                kinds = [m["method"] for m in notes]
                assert kinds[-2:] == ["process/exited", "process/closed"], (pid, kinds[-3:])
                assert kinds.count("process/exited") == 1
                assert notes[-2]["params"]["exitCode"] == 0, (pid, notes[-3:])
                streams: dict[str, bytes] = {}
                for m in notes[:-2]:
                    p = m["params"]
                    streams[p["stream"]] = streams.get(p["stream"], b"") + unb64(p["chunk"])
                if pid[0] == "b":
                    assert streams == {"stdout": bulk_out, "stderr": bulk_err}, pid
                elif pid[0] == "s":
                    assert streams == {"stdout": small_out, "stderr": small_err}, pid
                else:
                    assert set(streams) == {"pty"}
                    assert streams["pty"].endswith(b"done\r\n")


# -- parameters --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cwd_forms(transport: str, tmp_path: Any) -> None:
    spaced = tmp_path / "a dir"
    spaced.mkdir()
    with trio.fail_after(15):
        async with open_raw(transport) as raw:
            await raw.handshake()
            cases = {
                "uri": ("file:///tmp", "/tmp"),
                "uri-localhost": ("file://localhost/tmp", "/tmp"),
                "plain": (str(spaced), str(spaced)),
                "uri-escaped": ("file://" + str(spaced).replace(" ", "%20"), str(spaced)),
            }
            for name, (cwd, want) in cases.items():
                await raw.call("process/start", start_params(name, ["pwd"], cwd=cwd))
                await raw.wait_note(name, "process/closed")
                assert raw.output(name) == want.encode() + b"\n", name
            for i, bad in enumerate(["tmp", "", "relative/dir"]):
                code, message = await raw.error(
                    "process/start", start_params(f"bad{i}", ["pwd"], cwd=bad)
                )
                assert code == -32602, (bad, message)
            code, message = await raw.error(
                "process/start", start_params("http", ["pwd"], cwd="http://host/tmp")
            )
            assert code == -32602 and "http" in message
            code, _ = await raw.error(
                "process/start", start_params("gone", ["pwd"], cwd=str(tmp_path / "missing"))
            )
            assert code == -32603
            # a refused start leaves its id free
            await raw.call("process/start", start_params("bad0", ["true"]))
            await raw.wait_note("bad0", "process/closed")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_write_ids(transport: str) -> None:
    with trio.fail_after(15):
        async with open_raw(transport) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("c", ["cat"], pipeStdin=True))

            async def write(data: bytes, write_id: str | None) -> Any:
                params: Msg = {"processId": "c", "chunk": b64(data)}
                if write_id is not None:
                    params["writeId"] = write_id
                return await raw.call("process/write", params)

            assert await write(b"one\n", "A") == {"status": "accepted"}
            assert await raw.wait_output("c", b"one\n") == b"one\n"
            assert await write(b"two\n", "A") == {"status": "accepted"}  # a retry: not written
            assert await write(b"three\n", "B") == {"status": "accepted"}
            await raw.wait_output("c", b"three\n")
            assert await write(b"four\n", None) == {"status": "accepted"}  # no writeId
            assert await write(b"five\n", None) == {"status": "accepted"}
            await raw.wait_output("c", b"five\n")
            assert raw.output("c") == b"one\nthree\nfour\nfive\n"
            code, _ = await raw.error(
                "process/write", {"processId": "c", "chunk": "", "writeId": ""}
            )
            assert code == -32602
            assert await raw.call("process/terminate", {"processId": "c"}) == {"running": True}
            await raw.wait_note("c", "process/closed")


# -- sessions: detach, resume, expiry ---------------------------------------------------


async def test_detach_and_resume_on_websocket() -> None:
    with trio.fail_after(30):
        async with embedded_server() as url:
            async with ws_raw(url) as first:
                session_id = (await first.handshake())["sessionId"]
                await first.call("process/start", start_params("tick", ["sh", "-c", TICK]))
                pid = await first_pid(first, "tick")
                await first.wait_output("tick", b"tick2\n")
                seen = max(m["params"]["seq"] for m in first.notes("tick"))
            await trio.sleep(0.5)  # ticks go on while nobody is attached
            assert alive(pid)

            async with ws_raw(url) as second:
                result = await second.handshake(resumeSessionId=session_id)
                assert result["sessionId"] == session_id
                read = await second.call("process/read", {"processId": "tick", "afterSeq": 0})
                assert not read["exited"] and not read["closed"]
                assert read["chunks"], read
                assert read["nextSeq"] > seen + 1  # output made while detached is retained
                text = b"".join(unb64(c["chunk"]) for c in read["chunks"])
                assert text.startswith(b"pid:")
                # new output is pushed to the new connection
                note = await second.wait_for(
                    lambda m: (
                        m.get("method") == "process/output"
                        and m["params"]["seq"] >= read["nextSeq"]
                    )
                )
                assert note["params"]["processId"] == "tick"

                async with ws_raw(url) as third:
                    code, message = await third.error(
                        "initialize", {"clientName": "x", "resumeSessionId": session_id}
                    )
                    assert (code, message) == (
                        -32010,
                        f"session {session_id} is already attached to another connection",
                    )
                    code, message = await third.error(
                        "initialize", {"clientName": "x", "resumeSessionId": "no-such-session"}
                    )
                    assert (code, message) == (-32600, "unknown session id no-such-session")
                    other = await third.handshake()  # a failed initialize may be retried
                    assert other["sessionId"] != session_id
                    # sessions are separate: the other one cannot see "tick"
                    code, _ = await third.error("process/read", {"processId": "tick"})
                    assert code == -32600

                assert alive(pid)
                running = await second.call("process/terminate", {"processId": "tick"})
                assert running == {"running": True}
                await second.wait_note("tick", "process/closed")
                seqs = [m["params"]["seq"] for m in second.notes("tick")]
                assert all(a < b for a, b in itertools.pairwise(seqs))
            await wait_gone(pid)


async def test_resume_right_after_close() -> None:
    """A client that reconnects at once (no pause) can resume its session."""
    with trio.fail_after(20):
        async with embedded_server() as url:
            async with ws_raw(url) as first:
                session_id = (await first.handshake())["sessionId"]
                await first.call("process/start", start_params("tick", ["sh", "-c", TICK]))
                pid = await first_pid(first, "tick")
            async with ws_raw(url) as second:
                result = await second.handshake(resumeSessionId=session_id)
                assert result["sessionId"] == session_id
                await second.call("process/terminate", {"processId": "tick"})
                await second.wait_note("tick", "process/closed")
            await wait_gone(pid)


async def test_detached_session_expires_and_kills_children() -> None:
    with trio.fail_after(20):
        async with embedded_server(detach_timeout=1.0) as url:
            async with ws_raw(url) as first:
                session_id = (await first.handshake())["sessionId"]
                await first.call("process/start", start_params("tick", ["sh", "-c", TICK]))
                await first.call("process/start", start_params("quiet", ["sh", "-c", QUIET]))
                await first.call("process/start", start_params("tty", ["sh", "-c", TICK], tty=True))
                pids = [await first_pid(first, name) for name in ("tick", "quiet", "tty")]
            closed_at = trio.current_time()
            await trio.sleep(0.5)
            assert all(alive(pid) for pid in pids)  # detached, not ended
            for pid in pids:
                await wait_gone(pid, timeout=5)
            assert trio.current_time() - closed_at >= 0.9
            async with ws_raw(url) as late:
                code, message = await late.error(
                    "initialize", {"clientName": "late", "resumeSessionId": session_id}
                )
                assert (code, message) == (-32600, f"unknown session id {session_id}")


async def test_detach_timeout_restarts_after_a_resume() -> None:
    """Detach, resume, detach again: the second detach gets a full detach_timeout."""
    with trio.fail_after(20):
        async with embedded_server(detach_timeout=1.0) as url:
            async with ws_raw(url) as first:
                session_id = (await first.handshake())["sessionId"]
                await first.call("process/start", start_params("quiet", ["sh", "-c", QUIET]))
                pid = await first_pid(first, "quiet")
            await trio.sleep(0.6)
            async with ws_raw(url) as second:
                await second.handshake(resumeSessionId=session_id)
                await trio.sleep(0.2)
            detached_again = trio.current_time()
            await trio.sleep(0.6)  # 1.4 s after the first detach, 0.6 s after the second
            assert alive(pid), "killed by the timer of an earlier detach"
            await wait_gone(pid, timeout=5)
            assert trio.current_time() - detached_again >= 0.9


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_write_statuses(transport: str) -> None:
    with trio.fail_after(15):
        async with open_raw(transport) as raw:
            await raw.handshake()

            async def write(process_id: str, write_id: str) -> Msg:
                params = {"processId": process_id, "chunk": b64(b"x\n"), "writeId": write_id}
                return await raw.request("process/write", params)

            assert (await write("nobody", "1"))["result"] == {"status": "unknownProcess"}
            await raw.call("process/start", start_params("nopipe", ["sleep", "60"]))
            assert (await write("nopipe", "2"))["result"] == {"status": "stdinClosed"}
            await raw.call("process/start", start_params("c", ["cat"], pipeStdin=True))
            assert (await write("c", "3"))["result"] == {"status": "accepted"}
            for name in ("nopipe", "c"):
                running = await raw.call("process/terminate", {"processId": name})
                assert running == {"running": True}
                await raw.wait_note(name, "process/closed")
            exited = raw.notes("c", "process/exited")[0]["params"]
            assert exited["exitCode"] == 137
            reply = await write("c", "4")
            assert reply["error"] == {"code": -32603, "message": "failed to write to process stdin"}
            again = await raw.call("process/terminate", {"processId": "c"})
            assert again == {"running": False}


async def test_closed_entries_are_retained_then_forgotten() -> None:
    with trio.fail_after(20):
        async with embedded_server(retain_closed=0.5) as url, ws_raw(url) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("e1", ["sh", "-c", "echo hi; exit 4"]))
            await raw.wait_note("e1", "process/closed")
            assert await raw.error("process/start", start_params("e1", ["true"])) == (
                -32600,
                "process e1 already exists",
            )
            read = await raw.call("process/read", {"processId": "e1"})
            assert read["exited"] and read["closed"] and read["exitCode"] == 4
            assert [unb64(c["chunk"]) for c in read["chunks"]] == [b"hi\n"]
            await trio.sleep(1.0)
            assert await raw.error("process/read", {"processId": "e1"}) == (
                -32600,
                "unknown process id e1",
            )
            await raw.call("process/start", start_params("e1", ["sh", "-c", "echo again"]))
            await raw.wait_output("e1", b"again\n")
            (again,) = [
                m["params"]
                for m in raw.notes("e1", "process/output")
                if unb64(m["params"]["chunk"]) == b"again\n"
            ]
            assert again["seq"] == 1  # a new process under an old id starts again at 1


async def test_embedded_server_shutdown_kills_children() -> None:
    with trio.fail_after(20):
        async with embedded_server() as url, ws_raw(url) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("quiet", ["sh", "-c", QUIET]))
            pid = await first_pid(raw, "quiet")
        await wait_gone(pid, timeout=5)


async def test_stdio_eof_exits_zero_and_kills_children() -> None:
    with trio.fail_after(20):
        async with stdio_server() as (raw, proc):
            await raw.handshake()
            await raw.call("process/start", start_params("quiet", ["sh", "-c", QUIET]))
            await raw.call("process/start", start_params("tty", ["sh", "-c", QUIET], tty=True))
            pid = await first_pid(raw, "quiet")
            tty_pid = await first_pid(raw, "tty")
            assert proc.stdin is not None
            t0 = trio.current_time()
            await proc.stdin.aclose()
            with trio.fail_after(3):
                await proc.wait()
            assert proc.returncode == 0
            assert trio.current_time() - t0 < 2.0
            await wait_gone(pid, timeout=3)
            await wait_gone(tty_pid, timeout=3)


async def test_stdio_protocol_error_ends_the_server() -> None:
    with trio.fail_after(20):
        async with stdio_server() as (raw, proc):
            await raw.notify("initialized")
            with trio.fail_after(5):
                await raw.closed.wait()
                await proc.wait()
            assert proc.returncode == 0


# -- the command line --------------------------------------------------------------------


def _env_without_token() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("UNIFIED_EXEC_TOKEN", None)
    return env


@pytest.mark.parametrize("listen", ["ws://0.0.0.0:0", "ws://[::]:0"])
async def test_cli_refuses_public_listen_without_token(listen: str) -> None:
    with trio.fail_after(30):
        done = await trio.run_process(
            [*SERVE, "--listen", listen],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_env_without_token(),
        )
    assert done.returncode == 2, done
    assert done.stdout == b""
    assert b"refusing" in done.stderr and b"token" in done.stderr


async def test_cli_rejects_bad_listen() -> None:
    with trio.fail_after(30):
        done = await trio.run_process(
            [*SERVE, "--listen", "tcp://127.0.0.1:1"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_env_without_token(),
        )
    assert done.returncode == 2, done


async def test_cli_websocket_prints_url_first_and_serves() -> None:
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [*SERVE, "--listen", "ws://127.0.0.1:0", "--ws-auth", "none"],
            stdout=subprocess.PIPE,
            env=_env_without_token(),
        )
        try:
            assert proc.stdout is not None
            buf = b""
            while b"\n" not in buf:
                data = await proc.stdout.receive_some(4096)
                assert data, "server exited before printing its URL"
                buf += data
            url = buf.split(b"\n", 1)[0].decode()
            assert url.startswith("ws://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
            async with ws_raw(url) as raw:
                await raw.handshake()
                await raw.call("process/start", start_params("tick", ["sh", "-c", TICK]))
                pid = await first_pid(raw, "tick")
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(10):
                await proc.wait()
            await wait_gone(pid)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _cli_ws_server_with_child() -> tuple[trio.Process, int]:
    """A CLI websocket server with one silent child (a chatty one would die of SIGPIPE)."""
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--listen", "ws://127.0.0.1:0", "--ws-auth", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env_without_token(),
    )
    assert proc.stdout is not None
    buf = b""
    while b"\n" not in buf:
        data = await proc.stdout.receive_some(4096)
        assert data, "server exited before printing its URL"
        buf += data
    url = buf.split(b"\n", 1)[0].decode()
    async with ws_raw(url) as raw:
        await raw.handshake()
        await raw.call("process/start", start_params("quiet", ["sh", "-c", QUIET]))
        pid = await first_pid(raw, "quiet")
    return proc, pid


async def _stop(proc: trio.Process, sig: int) -> bytes:
    assert proc.stderr is not None
    stderr = proc.stderr
    err = bytearray()

    async def drain() -> None:
        while data := await stderr.receive_some(65536):
            err.extend(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        proc.send_signal(sig)
        with trio.fail_after(10):
            await proc.wait()
    return bytes(err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_cli_signal_kills_children(sig: int) -> None:
    """Stopping the server (Ctrl-C, or SIGTERM as from `docker stop`) reaps its children."""
    pid = 0
    try:
        with trio.fail_after(30):
            proc, pid = await _cli_ws_server_with_child()
            await _stop(proc, sig)
            await trio.sleep(0.3)
            assert not alive(pid), f"the server's child {pid} outlived it"
    finally:
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def test_cli_ctrl_c_exits_130_quietly() -> None:
    with trio.fail_after(30):
        proc, pid = await _cli_ws_server_with_child()
        err = await _stop(proc, signal.SIGINT)
        await wait_gone(pid)
    assert proc.returncode == 130, err.decode(errors="replace")[-2000:]
    assert b"Traceback" not in err
