"""Hypothesis-driven hostile input against our exec-server, over stdio and websocket.

Each Hypothesis example is a *batch*: an optional handshake, then N frames (see
``_cases``) pipelined on one connection, then a sentinel request. After each batch:

- the server answers the sentinel on that connection (unless the batch held a
  notification, after which codex, and we, may hang up);
- every request with a plain unique id was answered (writes, reads and anything on a
  process that has a write pending are exempt: a write to a child that does not read
  legitimately waits);
- the server sent nothing but JSON objects, logged no traceback, and never answered
  -32603 with a Python exception's text;
- websocket: a fresh connection completes a handshake and ``environment/info``;
  stdio: the server exits 0 at EOF;
- no child carrying the batch's marker survives; server RSS stays under a bound.

Long mode: 10,000 frames (5,000 per transport); short mode: 500.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import attrs
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from . import _cases
from ._common import (
    LONG,
    await_no_survivors,
    describe,
    new_marker,
    pick,
    record,
    rss_mib,
    tracebacks_in,
    ws_server,
)
from ._wire import Peer, frame_key, stdio_peer, ws_peer

BATCH = 50
BATCHES_PER_TRANSPORT = pick(5, 100)
RSS_BOUND_MIB = 512  # peak server RSS during fuzzing
RSS_GROWTH_MIB = 150  # websocket server: last batch vs first batch
DETACH = 0.5
PYTHON_ERROR = re.compile(
    r"Traceback|NoneType|has no attribute|not subscriptable|unhashable|"
    r"positional argument|(Type|Key|Attribute|Value|Recursion|Overflow|Unicode\w*)Error"
)

SETTINGS = settings(
    max_examples=BATCHES_PER_TRANSPORT,
    deadline=None,
    database=None,
    phases=[Phase.generate],  # no shrinking: a failing batch is printed whole instead
    derandomize=not LONG,  # make test replays the same batches; make stress explores
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@attrs.define
class Stats:
    cases: int = 0
    batches: int = 0
    answers: int = 0
    notifications: int = 0
    children_started: int = 0
    errors_by_code: dict[str, int] = attrs.Factory(dict)
    kinds: dict[str, int] = attrs.Factory(dict)
    rss_mib: list[float] = attrs.Factory(list)
    peak_rss_mib: float = 0.0
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "batches": self.batches,
            "answers": self.answers,
            "notifications": self.notifications,
            "children_started": self.children_started,
            "errors_by_code": dict(sorted(self.errors_by_code.items())),
            "frame_kinds": dict(sorted(self.kinds.items())),
            "server_rss_mib_first": round(self.rss_mib[0], 1) if self.rss_mib else None,
            "server_rss_mib_last": round(self.rss_mib[-1], 1) if self.rss_mib else None,
            "server_rss_mib_peak": round(self.peak_rss_mib, 1),
            "server_rss_mib_every_10_batches": [round(r, 1) for r in self.rss_mib[::10]],
            "seconds": round(self.seconds, 1),
            "crashes": 0,
        }


def _show(frames: list[_cases.Frame]) -> str:
    return "\n".join(f"  #{i + 1} {f.kind}: {f.data[:160]!r}" for i, f in enumerate(frames))


async def drive(
    peer: Peer, handshake: bool, frames: list[_cases.Frame], stats: Stats, marker: str
) -> list[str]:
    """Send one batch and check what came back; returns the problems found."""
    problems: list[str] = []
    if handshake:
        reply = await peer.handshake()
        if reply is None or "result" not in reply:
            return [f"handshake failed before the batch: {reply!r}"]
        for i, params in enumerate(_cases.targets(marker)):
            got = await peer.call(f"target-{i}", "process/start", params)
            if got is None or "result" not in got:
                return [f"could not start target child {params['argv']}: {got!r}"]
            stats.children_started += 1
    sent = 0
    for frame in frames:
        if not await peer.send(frame.data):
            break
        sent += 1
        stats.kinds[frame.kind] = stats.kinds.get(frame.kind, 0) + 1
    stats.cases += len(frames)
    may_close = any(f.may_close for f in frames[: sent + 1])
    sentinel = await peer.call("sentinel", "stress/sentinel", timeout=30)
    if sentinel is None and not may_close:
        problems.append(f"sentinel unanswered (connection closed: {peer.closed}, sent {sent})")
    elif sentinel is not None and sentinel.get("error", {}).get("code") != -32601:
        problems.append(f"sentinel got {sentinel!r}")
    if sentinel is not None:
        # Everything that cannot legitimately be waiting must have been answered.
        busy: set[str] = set()
        expected: list[int] = []
        for f in frames:
            key = frame_key(f.process_id)
            if f.method == "process/write":
                busy.add(key)
            if f.rid is None or f.method in ("process/write", "process/read") or key in busy:
                continue
            expected.append(f.rid)
        done = await peer.wait_for(
            lambda: all(frame_key(r) in peer.responses for r in expected), timeout=10
        )
        if not done:
            missing = [r for r in expected if frame_key(r) not in peer.responses]
            detail = [f"#{r} {frames[r - 1].data[:120]!r}" for r in missing[:5]]
            problems.append(f"requests never answered: {missing} e.g. {detail}")
    starts = {frame_key(f.rid) for f in frames if f.rid and f.method == "process/start"}
    for msg in peer.received:
        if "id" in msg and "result" in msg and frame_key(msg["id"]) in starts:
            stats.children_started += 1
        if "id" in msg:
            stats.answers += 1
            err = msg.get("error")
            if err is not None:
                if not isinstance(err, dict) or not isinstance(err.get("code"), int):
                    problems.append(f"malformed error: {msg!r}"[:300])
                    continue
                code = str(err["code"])
                stats.errors_by_code[code] = stats.errors_by_code.get(code, 0) + 1
                text = err.get("message")
                if not isinstance(text, str):
                    problems.append(f"error without a message: {msg!r}"[:300])
                elif err["code"] == -32603 and PYTHON_ERROR.search(text):
                    problems.append(f"internal error leaks a Python exception: {text[:200]!r}")
        else:
            stats.notifications += 1
    problems += [f"server sent {b}" for b in peer.bad[:3]]
    return problems


def test_fuzz_stdio(tmp_path: Any) -> None:
    """Each batch is one stdio server: a stdio server is exactly one connection."""
    stats = Stats()
    crashes: list[str] = []
    started = time.monotonic()

    @SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        marker = new_marker("fuzz-stdio")
        handshake, frames = data.draw(_cases.batch(BATCH, marker), label="batch")
        stats.batches += 1
        stderr = str(tmp_path / f"stderr-{stats.batches}.log")
        problems: list[str] = []
        rc: list[int | None] = []

        async def main() -> None:
            with trio.fail_after(120):
                async with stdio_peer(stderr) as peer:
                    problems.extend(await drive(peer, handshake, frames, stats, marker))
                    peak = rss_mib(peer.proc.pid, "VmHWM")
                    stats.rss_mib.append(peak)
                    stats.peak_rss_mib = max(stats.peak_rss_mib, peak)
                rc.append(peer.proc.returncode)

        trio.run(main)
        if rc != [0]:
            problems.append(f"stdio server exit status {rc} (expected 0 at EOF)")
        survivors, _ = await_no_survivors(marker, timeout=15)
        if survivors:
            problems.append(f"children survived the server: {describe(survivors)}")
        log = Path(stderr).read_text(errors="replace")
        problems += [f"server logged a traceback: {t}" for t in tracebacks_in(log)]
        if stats.rss_mib[-1] > RSS_BOUND_MIB:
            problems.append(f"server peak RSS {stats.rss_mib[-1]:.0f} MiB > {RSS_BOUND_MIB}")
        if problems:
            crashes.extend(problems)
            raise AssertionError("\n".join(problems) + "\nbatch:\n" + _show(frames))

    try:
        run()
    finally:
        stats.seconds = time.monotonic() - started
        figures = stats.figures()
        figures["crashes"] = len(crashes)
        figures["problems"] = crashes[:10]
        record("fuzz_stdio", **figures)


def test_fuzz_websocket() -> None:
    """One long-lived websocket server; each batch is a fresh connection to it."""
    stats = Stats()
    crashes: list[str] = []
    started = time.monotonic()
    with ws_server(["--detach-timeout", str(DETACH)]) as server:

        @SETTINGS
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            marker = new_marker("fuzz-ws")
            handshake, frames = data.draw(_cases.batch(BATCH, marker), label="batch")
            stats.batches += 1
            problems: list[str] = []

            async def main() -> None:
                with trio.fail_after(120):
                    async with ws_peer(server.url, server.headers) as peer:
                        problems.extend(await drive(peer, handshake, frames, stats, marker))
                    # A fresh connection is served normally afterwards.
                    async with ws_peer(server.url, server.headers) as fresh:
                        reply = await fresh.handshake()
                        info = await fresh.call(2, "environment/info", timeout=30)
                        if (
                            reply is None
                            or "result" not in reply
                            or not info
                            or "result" not in info
                        ):
                            problems.append(f"fresh connection refused: {reply!r} {info!r}")

            try:
                trio.run(main)
            except Exception as exc:  # a connection refused: the server is gone
                problems.append(f"could not talk to the server: {exc!r}")
            if not server.alive():
                problems.append(
                    f"SERVER DIED (rc {server.proc.returncode}): {server.log()[-2000:]}"
                )
            rss = rss_mib(server.pid)
            stats.rss_mib.append(rss)
            stats.peak_rss_mib = max(stats.peak_rss_mib, rss_mib(server.pid, "VmHWM"))
            survivors, _ = await_no_survivors(marker, timeout=DETACH + 15)
            if survivors:
                problems.append(f"children outlived their detached session: {describe(survivors)}")
            problems += [f"server logged a traceback: {t}" for t in server.tracebacks()]
            if problems:
                crashes.extend(problems)
                raise AssertionError("\n".join(problems) + "\nbatch:\n" + _show(frames))

        try:
            run()
            assert stats.peak_rss_mib < RSS_BOUND_MIB, (
                f"server peak RSS {stats.peak_rss_mib:.0f} MiB"
            )
            growth = stats.rss_mib[-1] - stats.rss_mib[0]
            assert growth < RSS_GROWTH_MIB, f"server RSS grew {growth:.0f} MiB over the run"
        finally:
            stats.seconds = time.monotonic() - started
            figures = stats.figures()
            figures["crashes"] = len(crashes)
            figures["problems"] = crashes[:10]
            record("fuzz_websocket", **figures)


async def test_frames_over_the_message_cap(tmp_path: Path) -> None:
    """One frame just over the message cap, on each transport: it may cost that frame
    (stdio: an id -1 error, then the next line is served) or that connection (ws:
    close 1009), never the server."""
    from unified_exec._protocol._limits import DEFAULT_LIMITS

    cap = DEFAULT_LIMITS.max_message_bytes
    big = b'{"id":1,"method":"environment/info","params":"' + b"A" * cap + b'"}'
    with trio.fail_after(180):
        async with stdio_peer(str(tmp_path / "stderr.log")) as peer:
            assert (await peer.handshake()) is not None
            assert await peer.send(big)
            sentinel = await peer.call("sentinel", "stress/sentinel", timeout=60)
            assert sentinel is not None, "the stdio server stopped serving after one big line"
            assert any(m.get("id") == -1 for m in peer.received), "no parse error for the line"
        assert peer.proc.returncode == 0
        with ws_server() as server:
            async with ws_peer(server.url, server.headers) as peer:
                assert (await peer.handshake()) is not None
                await peer.send(big)
                await peer.call("sentinel", "stress/sentinel", timeout=60)
            async with ws_peer(server.url, server.headers) as fresh:
                assert (await fresh.handshake()) is not None
                info = await fresh.call(2, "environment/info")
                assert info is not None and "result" in info, info
            assert server.alive()
            assert not server.tracebacks(), server.tracebacks()
    record("over_cap_frames", cap_bytes=cap, frame_bytes=len(big), server_survived=True)
