"""What the server puts on the wire: failed processes (defect 11), the tail after a
terminate (31), reads on a closed process (6), limits (8, 12), writeId replays, URIs
(14), environment/status and capabilities (issue §4)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import trio

import unified_exec as ue
from unified_exec.server import Limits

from .server_core_harness import connect, send_lines, served, start_params

SERVE_STDIO = [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]


class _FailingHandle:
    """Fault injection: a process whose backend breaks after one chunk of output (a
    relay's upstream dying, a sandbox crashing) — no real child fails on demand."""

    def __init__(self, process_id: str) -> None:
        self._pid = process_id

    @property
    def process_id(self) -> str:
        return self._pid

    async def events(self) -> Any:
        yield ue.OutputEvent(1, "stdout", b"partial\n")
        await trio.sleep(0.05)
        raise RuntimeError("sandbox died: disk on fire")

    async def write(self, data: bytes) -> ue.WriteStatus:
        await trio.lowlevel.checkpoint()
        return ue.WriteStatus.ACCEPTED

    async def terminate(self) -> None:
        await trio.lowlevel.checkpoint()

    async def interrupt(self) -> None:
        await trio.lowlevel.checkpoint()

    async def resize(self, rows: int, cols: int) -> None:
        await trio.lowlevel.checkpoint()


class _FailingBackend:
    async def start(self, request: ue.ExecRequest) -> Any:
        await trio.lowlevel.checkpoint()
        return _FailingHandle(request.process_id or "p")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_failed_process_is_closed_without_an_exit_and_read_names_the_failure() -> None:
    """Wire contract: no process/exited (and never exitCode -1), process/closed with the
    seq after the last output, process/read: failure text, closed, exitCode null."""
    with trio.fail_after(10):
        async with served(_FailingBackend()) as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("p", ["anything"]))
            closed = await raw.wait_note("p", "process/closed")
            assert closed["params"]["seq"] == 2
            assert raw.notes("p", "process/exited") == []
            assert raw.output("p") == b"partial\n"
            read = await raw.call("process/read", {"processId": "p", "afterSeq": 0})
            assert read["closed"] is True
            assert read["exited"] is False
            assert read["exitCode"] is None
            assert "sandbox died: disk on fire" in read["failure"]
            assert [c["seq"] for c in read["chunks"]] == [1]


async def test_every_seq_is_pushed_after_terminating_a_flooding_process() -> None:
    """a31: terminate `head -c 4G /dev/zero` mid-flood; the pushed seqs run 1..closed
    without a hole (codex sends them all)."""
    with trio.fail_after(60):
        async with served() as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("z", ["head", "-c", "4G", "/dev/zero"]))
            await raw.wait_output("z", b"\0")
            await trio.sleep(0.5)
            await raw.call("process/terminate", {"processId": "z"})
            closed = await raw.wait_note("z", "process/closed")
            seqs = [m["params"]["seq"] for m in raw.notes("z")]
            missing = sorted(set(range(1, closed["params"]["seq"] + 1)) - set(seqs))
            assert missing == [], f"seqs never pushed: {missing}"
            assert seqs == sorted(seqs)


async def test_read_at_or_after_the_closed_seq_answers_at_once() -> None:
    """r03 / defect 6: afterSeq >= closed seq with waitMs=5000 must not sleep."""
    with trio.fail_after(20):
        async with served() as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("t", ["true"]))
            closed = (await raw.wait_note("t", "process/closed"))["params"]["seq"]
            for after in (closed, closed + 50):
                t0 = trio.current_time()
                read = await raw.call(
                    "process/read", {"processId": "t", "afterSeq": after, "waitMs": 5000}
                )
                assert read["closed"] is True
                assert trio.current_time() - t0 < 2.5  # not the 5 s wait


async def test_read_without_max_bytes_gets_the_default_budget() -> None:
    """Defect 8 (server): a read result always fits a message; the cursor goes on."""
    limits = Limits(max_read_bytes=4096)
    script = "for i in $(seq 40); do head -c 1000 /dev/zero | tr '\\0' x; sleep 0.01; done"
    with trio.fail_after(20):
        async with served(limits=limits) as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("f", ["sh", "-c", script]))
            await raw.wait_note("f", "process/closed")
            got, after = b"", 0
            for _ in range(100):
                read = await raw.call("process/read", {"processId": "f", "afterSeq": after})
                data = b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
                assert len(data) <= 4096 + 1000  # one chunk may cross the budget
                got += data
                after = read["nextSeq"] - 1
                if not read["chunks"]:
                    break
            assert got == b"x" * 40_000


async def test_messages_with_too_many_values_or_duplicate_keys_are_refused() -> None:
    with trio.fail_after(20):
        async with served() as server, connect(server) as raw:
            await raw.handshake()
            many = json.dumps({"id": "m", "method": "environment/info", "params": [0] * 300_000})
            await raw.send_raw(many)
            await raw.send_raw('{"id":"d","method":"environment/status","id":"e"}')
            errors = [m for _, m in await _until(raw, 2)]
            assert all(e["id"] == -1 and e["error"]["code"] == -32600 for e in errors)
            assert "more than 262144 JSON values" in errors[0]["error"]["message"]
            assert "duplicate field `id`" in errors[1]["error"]["message"]
            assert await raw.call("environment/status") == {"status": "ready"}


async def _until(raw: Any, n: int) -> list[tuple[float, Any]]:
    while len([m for _, m in raw.messages if m.get("id") == -1]) < n:
        await raw._changed.park()
    return [(t, m) for t, m in raw.messages if m.get("id") == -1]


async def test_in_flight_requests_are_bounded_by_backpressure() -> None:
    """r09 / defect 12: past max_in_flight the server stops reading the connection, so
    a request sent behind long-polls is only read once one of them is answered."""
    with trio.fail_after(30):
        async with served(limits=Limits(max_in_flight=4)) as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("q", ["sleep", "30"]))
            reads = [
                {"id": f"r{i}", "method": "process/read",
                 "params": {"processId": "q", "afterSeq": 0, "waitMs": 1000}}
                for i in range(6)
            ]  # fmt: skip
            await send_lines(raw, [*reads, {"id": "s", "method": "environment/status"}])
            status = await raw.response("s")
            assert status["result"] == {"status": "ready"}
            order = [
                m["id"] for _, m in raw.messages if str(m.get("id", "")).startswith(("r", "s"))
            ]
            assert order.index("s") > 0, order  # not read before a slot was free
            for i in range(6):
                await raw.response(f"r{i}")
            await raw.call("process/terminate", {"processId": "q"})
            await raw.wait_note("q", "process/closed")


async def test_process_limits_per_session_and_per_server() -> None:
    limits = Limits(max_processes_per_connection=2, max_processes=3)
    with trio.fail_after(20):
        async with (
            served(limits=limits) as server,
            connect(server) as one,
            connect(server) as two,
        ):
            await one.handshake()
            await two.handshake()
            for name in ("a", "b"):
                await one.call("process/start", start_params(name, ["sleep", "30"]))
            code, text = await one.error("process/start", start_params("c", ["sleep", "30"]))
            assert code == -32600 and "limit 2" in text
            await two.call("process/start", start_params("d", ["sleep", "30"]))
            code, text = await two.error("process/start", start_params("e", ["sleep", "30"]))
            assert code == -32600 and "limit 3" in text
            await one.call("process/terminate", {"processId": "a"})
            await one.wait_note("a", "process/closed")
            await two.call("process/start", start_params("e", ["true"]))  # room again
            for raw, name in ((one, "b"), (two, "d")):
                await raw.call("process/terminate", {"processId": name})
                await raw.wait_note(name, "process/closed")


async def test_write_ids_are_bounded_in_length_and_count() -> None:
    limits = Limits(max_write_id_bytes=16, max_write_ids=2)
    with trio.fail_after(20):
        async with served(limits=limits) as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("c", ["cat"], pipeStdin=True))

            async def write(data: bytes, write_id: str) -> Any:
                params = {"processId": "c", "chunk": base64.b64encode(data).decode()}
                return await raw.request("process/write", params | {"writeId": write_id})

            assert (await write(b"x", "w" * 17))["error"]["code"] == -32602
            for wid, data in (("A", b"1"), ("B", b"2"), ("C", b"3"), ("A", b"4")):
                assert (await write(data, wid))["result"] == {"status": "accepted"}
            # only the newest 2 ids are remembered: "A" was forgotten, so "4" is written
            await raw.wait_output("c", b"1234")
            assert (await write(b"5", "C"))["result"] == {"status": "accepted"}  # a replay
            await raw.call("process/closeStdin", {"processId": "c"})
            await raw.wait_note("c", "process/closed")
            assert raw.output("c") == b"1234"


async def test_a_replayed_write_id_after_resume_gets_the_same_answer_and_is_not_rewritten() -> None:
    with trio.fail_after(20):
        async with served() as server:
            async with connect(server) as first:
                session = (await first.handshake())["sessionId"]
                await first.call("process/start", start_params("c", ["cat"], pipeStdin=True))
                await first.call("process/start", start_params("q", ["sleep", "30"]))
                chunk = base64.b64encode(b"once\n").decode()
                assert await first.call(
                    "process/write", {"processId": "c", "chunk": chunk, "writeId": "w1"}
                ) == {"status": "accepted"}
                assert await first.call(
                    "process/write", {"processId": "q", "chunk": chunk, "writeId": "w1"}
                ) == {"status": "stdinClosed"}
                await first.wait_output("c", b"once\n")
            async with connect(server) as second:
                await second.handshake(resumeSessionId=session)
                for pid, status in (("c", "accepted"), ("q", "stdinClosed")):
                    for _ in range(2):
                        got = await second.call(
                            "process/write", {"processId": pid, "chunk": chunk, "writeId": "w1"}
                        )
                        assert got == {"status": status}
                await second.call("process/closeStdin", {"processId": "c"})
                await second.call("process/terminate", {"processId": "q"})
                await second.wait_note("c", "process/closed")
                await second.wait_note("q", "process/closed")
                read = await second.call("process/read", {"processId": "c", "afterSeq": 0})
                text = b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
                assert text == b"once\n"


async def test_environment_status_and_capabilities() -> None:
    with trio.fail_after(10):
        async with served() as server, connect(server) as raw:
            init = await raw.handshake()
            caps = init["environmentInfo"]["capabilities"]
            assert caps["unifiedExecProcessResize"] is True
            assert init["extensions"]  # kept: our own client reads it
            assert await raw.call("environment/status") == {"status": "ready"}
            assert await raw.call("environment/status", {}) == {"status": "ready"}
            info = await raw.call("environment/info")
            assert info["capabilities"] == caps
            code, _ = await raw.error("environment/status", {"x": 1})
            assert code == -32602


def test_announced_uris_are_percent_encoded_and_parsed(tmp_path: Any) -> None:
    """r06 / defect 14: the server's cwd has a space and a '%'; the announced URI is
    encoded, and a process started with it as cwd runs there."""
    odd = tmp_path / "sp ace%25"
    odd.mkdir()
    proc = subprocess.Popen(SERVE_STDIO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=odd)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b'{"id":1,"method":"initialize","params":{"clientName":"t"}}\n')
        proc.stdin.write(b'{"method":"initialized"}\n')
        proc.stdin.flush()
        cwd = json.loads(proc.stdout.readline())["result"]["environmentInfo"]["cwd"]
        assert cwd == "file://" + str(odd).replace("%", "%25").replace(" ", "%20")
        start = start_params("pwd", ["pwd"], cwd=cwd)
        proc.stdin.write(json.dumps({"id": 2, "method": "process/start", "params": start}).encode())
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        out = b""
        for line in iter(proc.stdout.readline, b""):
            msg = json.loads(line)
            assert "error" not in msg, msg
            if msg.get("method") == "process/output":
                out += base64.b64decode(msg["params"]["chunk"])
            if msg.get("method") == "process/closed":
                break
        assert out.decode().strip() == os.path.realpath(odd)
    finally:
        proc.stdin.close()
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


async def test_terminate_answers_before_the_exit_arrives() -> None:
    """Issue 8 item: the answer goes out first, then the kill (the exit follows as a
    notification)."""
    with trio.fail_after(20):
        async with served() as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("s", ["sleep", "30"]))
            rid = await raw.send_request("process/terminate", {"processId": "s"})
            await raw.wait_note("s", "process/closed")
            kinds = [
                "answer" if m.get("id") == rid else m.get("method")
                for _, m in raw.messages
                if m.get("id") == rid or m.get("method") in ("process/exited", "process/closed")
            ]
            assert kinds == ["answer", "process/exited", "process/closed"]


async def test_read_results_are_capped_in_chunks_and_always_fit_a_message() -> None:
    """codex #33013: at most max_read_chunks chunks per read; and the byte budget never
    exceeds a quarter of a message, whatever max_read_bytes says."""
    limits = Limits(max_read_chunks=3, max_message_bytes=1 << 20, max_read_bytes=8 << 20)
    assert limits.read_budget == 256 * 1024
    script = "for i in $(seq 10); do echo line$i; sleep 0.02; done; head -c 3000000 /dev/zero"
    with trio.fail_after(20):
        async with served(limits=limits, retention_bytes=8 << 20) as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("c", ["sh", "-c", script]))
            await raw.wait_note("c", "process/closed")
            read = await raw.call("process/read", {"processId": "c", "afterSeq": 0})
            assert len(read["chunks"]) == 3
            assert read["nextSeq"] == read["chunks"][-1]["seq"] + 1
            after, total = 0, 0
            while True:
                reply = await raw.request("process/read", {"processId": "c", "afterSeq": after})
                assert "result" in reply, reply  # never "exceeds the message limit"
                chunks = reply["result"]["chunks"]
                if not chunks:
                    break
                total += sum(len(base64.b64decode(c["chunk"])) for c in chunks)
                after = reply["result"]["nextSeq"] - 1
            assert total == 3_000_000 + sum(len(f"line{i}\n") for i in range(1, 11))


async def test_a_message_too_big_for_the_peer_is_never_sent() -> None:
    """Frames are checked where they are built: a response that would not fit becomes a
    -32603 error, a notification that would not fit is dropped (the client sees the seq
    gap), and the connection goes on — it used to be closed with 1009 by the peer."""
    limits = Limits(max_message_bytes=4096)
    script = "head -c 3500 /dev/zero | tr '\\0' y; sleep 0.2; echo small"
    with trio.fail_after(20):
        async with served(limits=limits) as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("big", ["sh", "-c", script]))
            await raw.wait_note("big", "process/closed")
            seqs = [m["params"]["seq"] for m in raw.notes("big")]
            assert 1 not in seqs and seqs[0] == 2  # the 3500-byte chunk was not pushed
            assert raw.output("big") == b"small\n"
            reply = await raw.request("process/read", {"processId": "big", "afterSeq": 0})
            assert reply["error"]["code"] == -32603
            assert "exceeds the 4096-byte message limit" in reply["error"]["message"]
            assert await raw.call("environment/status") == {"status": "ready"}
