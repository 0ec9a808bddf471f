"""Defect 2: the state-changing requests of one process run in arrival order.

Pipelined requests that reach the server in one read used to be spawned in one
scheduler batch, which trio runs in either order: writes reached the child reversed
and a pipelined start+write answered `unknownProcess`. Here they are sent in one
write over the real stdio server (repro n07) and over a socketpair to an in-run
ExecServer, 20 rounds each. `process/read` long-polls and other processes must stay
concurrent.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .server_core_harness import connect, send_lines, served, start_params

SERVE_STDIO = [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]
ROUNDS = 20
WRITES = 8


def _write(rid: int, pid: str, data: bytes, write_id: str) -> dict[str, Any]:
    chunk = base64.b64encode(data).decode()
    params = {"processId": pid, "chunk": chunk, "writeId": write_id}
    return {"id": rid, "method": "process/write", "params": params}


class _Stdio:
    """The real `unified-exec serve --listen stdio`, driven synchronously (as n07)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(SERVE_STDIO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, *msgs: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in msgs))
        self.proc.stdin.flush()

    def until(self, pred: Any) -> dict[str, Any]:
        """The next message ``pred`` accepts; every message before it is dropped, so
        one call must accept all that a step can bring, in whatever order."""
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, "the stdio server hung up"
            msg = json.loads(line)
            if pred(msg):
                return msg  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            assert self.proc.wait(timeout=15) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()


def test_pipelined_writes_reach_the_child_in_order_over_stdio() -> None:
    srv = _Stdio()
    try:
        srv.send(
            {"id": 1, "method": "initialize", "params": {"clientName": "t"}},
            {"method": "initialized", "params": {}},
        )
        srv.until(lambda m: m.get("id") == 1)
        wrong: list[str] = []
        for r in range(ROUNDS):
            pid = f"cat{r}"
            start = start_params(pid, ["cat"], pipeStdin=True)
            srv.send({"id": 2, "method": "process/start", "params": start})
            srv.until(lambda m: m.get("id") == 2)
            srv.send(*[_write(100 + i, pid, b"%d," % i, f"w{i}") for i in range(WRITES)])
            got = b""
            while got.count(b",") < WRITES:
                note = srv.until(
                    lambda m, pid=pid: (
                        m.get("method") == "process/output" and m["params"]["processId"] == pid
                    )
                )
                got += base64.b64decode(note["params"]["chunk"])
            if got.decode() != "".join(f"{i}," for i in range(WRITES)):
                wrong.append(got.decode())
            srv.send({"id": 3, "method": "process/terminate", "params": {"processId": pid}})
            srv.until(lambda m: m.get("id") == 3)
        assert wrong == [], f"{len(wrong)} of {ROUNDS} rounds out of order: {wrong[:3]}"
    finally:
        srv.close()


def test_pipelined_start_write_close_stdin_run_in_order_over_stdio() -> None:
    srv = _Stdio()
    try:
        srv.send(
            {"id": 1, "method": "initialize", "params": {"clientName": "t"}},
            {"method": "initialized", "params": {}},
        )
        srv.until(lambda m: m.get("id") == 1)
        for r in range(ROUNDS):
            pid = f"sw{r}"
            srv.send(
                {
                    "id": 10,
                    "method": "process/start",
                    "params": start_params(pid, ["cat"], pipeStdin=True),
                },
                _write(11, pid, b"hi\n", "w"),
                {"id": 12, "method": "process/closeStdin", "params": {"processId": pid}},
            )
            # cat sees the line, then EOF, and exits by itself. Its output and
            # process/closed may come before the closeStdin answer (notifications and
            # answers interleave freely), so one loop takes them all.
            answers: dict[int, dict[str, Any]] = {}
            output = b""
            closed = False
            while len(answers) < 3 or not closed:
                msg = srv.until(
                    lambda m, pid=pid: (
                        m.get("id") in (10, 11, 12)
                        or (m.get("params") or {}).get("processId") == pid
                    )
                )
                if msg.get("id") in (10, 11, 12):
                    answers[msg["id"]] = msg
                elif msg.get("method") == "process/output":
                    output += base64.b64decode(msg["params"]["chunk"])
                elif msg.get("method") == "process/closed":
                    closed = True
            assert answers[11] == {"id": 11, "result": {"status": "accepted"}}, (r, answers)
            assert "result" in answers[12], (r, answers)
            assert output == b"hi\n", (r, output)
    finally:
        srv.close()


async def test_pipelined_writes_in_order_in_one_batch_to_an_embedded_server() -> None:
    with trio.fail_after(60):
        async with served() as server, connect(server, kind="stdio") as raw:
            await raw.handshake()
            for r in range(ROUNDS):
                pid = f"c{r}"
                base = 1000 * (r + 1)
                await send_lines(
                    raw,
                    [
                        {
                            "id": base,
                            "method": "process/start",
                            "params": start_params(pid, ["cat"], pipeStdin=True),
                        },
                        *[_write(base + 1 + i, pid, b"%d," % i, f"w{i}") for i in range(WRITES)],
                        {
                            "id": base + 99,
                            "method": "process/closeStdin",
                            "params": {"processId": pid},
                        },
                    ],
                )
                await raw.wait_note(pid, "process/closed")
                assert raw.output(pid) == b"".join(b"%d," % i for i in range(WRITES))
                for i in range(WRITES):
                    reply = await raw.response(base + 1 + i)
                    assert reply["result"] == {"status": "accepted"}


async def test_a_long_poll_read_does_not_hold_back_a_later_write() -> None:
    """The read waits behind the start (same lane), then runs on its own."""
    with trio.fail_after(20):
        async with served() as server, connect(server) as raw:
            await raw.handshake()
            read = {"processId": "c", "afterSeq": 0, "waitMs": 10_000}
            await send_lines(
                raw,
                [
                    {
                        "id": "s",
                        "method": "process/start",
                        "params": start_params("c", ["cat"], pipeStdin=True),
                    },
                    {"id": "r", "method": "process/read", "params": read},
                    _write(0, "c", b"ping\n", "w0") | {"id": "w"},
                ],
            )
            write = await raw.response("w")
            assert write["result"] == {"status": "accepted"}
            result = (await raw.response("r"))["result"]  # woken by cat's echo
            assert base64.b64decode(result["chunks"][0]["chunk"]) == b"ping\n"
            order = [m.get("id") for _, m in raw.messages if m.get("id") in ("s", "r", "w")]
            assert order == ["s", "w", "r"]
            await raw.call("process/terminate", {"processId": "c"})
            await raw.wait_note("c", "process/closed")


async def test_a_blocked_write_to_one_process_does_not_hold_back_another() -> None:
    """Lanes are per process: `sleep` never reads its stdin, so a 1 MiB write to it
    blocks on the full pipe; a write to `cat` behind it is answered regardless, and a
    terminate of `sleep` is not stuck behind its blocked write (control lane)."""
    with trio.fail_after(20):
        async with served() as server, connect(server) as raw:
            await raw.handshake()
            await raw.call("process/start", start_params("stuck", ["sleep", "30"], pipeStdin=True))
            await raw.call("process/start", start_params("cat", ["cat"], pipeStdin=True))
            await send_lines(
                raw,
                [
                    _write(0, "stuck", b"x" * (1 << 20), "big") | {"id": "big"},
                    _write(0, "cat", b"free\n", "w") | {"id": "free"},
                ],
            )
            assert (await raw.response("free"))["result"] == {"status": "accepted"}
            await raw.wait_output("cat", b"free\n")
            assert not [m for _, m in raw.messages if m.get("id") == "big"]
            await raw.call("process/terminate", {"processId": "stuck"})
            big = await raw.response("big")  # the terminate ends the blocked write
            assert "error" in big or big["result"]["status"] in ("accepted", "stdinClosed")
            await raw.call("process/terminate", {"processId": "cat"})
            await raw.wait_note("stuck", "process/closed")
            await raw.wait_note("cat", "process/closed")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(st.sampled_from("abc"), st.binary(min_size=1, max_size=40)),
        min_size=1,
        max_size=30,
    )
)
def test_any_interleaving_of_pipelined_requests_keeps_each_process_in_order(
    plan: list[tuple[str, bytes]],
) -> None:
    """Property: start, writes and closeStdin of several processes, interleaved at
    random and sent in one write, reach each child in that process's own order."""

    async def main() -> None:
        with trio.fail_after(30):
            async with served() as server, connect(server, kind="stdio") as raw:
                await raw.handshake()
                names = sorted({name for name, _ in plan})
                batch: list[dict[str, Any]] = []
                started: set[str] = set()
                expected = {name: b"" for name in names}
                for i, (name, data) in enumerate(plan):
                    if name not in started:
                        started.add(name)
                        params = start_params(name, ["cat"], pipeStdin=True)
                        batch.append(
                            {"id": f"s{name}", "method": "process/start", "params": params}
                        )
                    batch.append(_write(0, name, data, f"w{i}") | {"id": f"w{i}"})
                    expected[name] += data
                for name in names:
                    batch.append(
                        {
                            "id": f"c{name}",
                            "method": "process/closeStdin",
                            "params": {"processId": name},
                        }
                    )
                await send_lines(raw, batch)
                for name in names:
                    await raw.wait_note(name, "process/closed")
                    assert raw.output(name) == expected[name], name
                for i in range(len(plan)):
                    assert (await raw.response(f"w{i}"))["result"] == {"status": "accepted"}

    trio.run(main)
