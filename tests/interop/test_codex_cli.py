"""The real codex CLI runs a whole agent turn on our exec-server exactly as on its own (issue 8).

For each pinned codex version (0.169.0, 0.171.0): `codex exec`, driven by a scripted
model on loopback (tests/interop/_mock_model.py), runs one turn on codex's own
``codex exec-server`` and then on ours (``python -m unified_exec serve``), each behind a
recording websocket proxy. The turn: a command with output and an exit code, ``python3
-i`` on a tty driven by ``write_stdin``, a command that outlives its yield and is
polled, ``apply_patch`` creating a file a later command reads, ``view_image``, a
40,000-line output, Ctrl-C to a tty, and a command still running at the end. Then a
``-s read-only`` turn whose writes (a shell redirect, ``open()`` in ``python3 -i`` on a
tty) must not happen (both servers run its commands under bubblewrap).

Asserted: the model's first request (instructions with AGENTS.md, environment context,
tools) and every tool output are equal across the two servers, after normalising chunk
ids, wall times and session ids; the one intended difference is the exit code of the tty
child killed by Ctrl-C (ours keeps 130, codex reports 1). Every command ran on the
exec-server (a ``process/start`` per tool call), nothing outlives the turn, and the
read-only write did not happen.
"""

from __future__ import annotations

import json
import pathlib
import re
import struct
import zlib
from typing import Any

import pytest
import trio

from .._support import new_marker
from ._codex_turn import TurnResult, run_turn
from ._mock_model import (
    Reply,
    apply_patch_call,
    exec_call,
    function_call,
    last_output,
    tool_outputs,
    write_stdin_call,
)

# Two codex CLI turns at once (one per version) on a loaded 2-core machine are slow
# enough for codex's own end-of-turn cleanup to lag: one worker runs them in turn.
pytestmark = pytest.mark.xdist_group("codex-cli")

# on the command lines of the turn's long runners, to find survivors: one per worker
# process, since under pytest-xdist another worker may run the other codex version
MARK = new_marker("ue-issue8-marker")
PATCH = "*** Begin Patch\n*** Add File: made.txt\n+made by apply_patch\n*** End Patch\n"
# the intended difference: a tty child killed by Ctrl-C
CTRL_C_CALL = "k2"


def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))  # fmt: skip


def session_of(request: dict[str, Any]) -> int:
    found = re.search(r"session ID (\d+)", last_output(request))
    assert found, f"no session id in {last_output(request)!r}"
    return int(found.group(1))


def full_script() -> list[Reply]:
    return [
        # stdout and stderr are two pipes: pauses keep their order the same every run
        [exec_call("c1", "echo hello; sleep 0.2; echo to-err >&2; exit 3")],
        # generous yields: a loaded machine must not move output into the next call
        [exec_call("t1", "python3 -i -q", tty=True, yield_time_ms=3000)],
        lambda r: [write_stdin_call("t2", session_of(r), "print(6*7)\n", yield_time_ms=2000)],
        lambda r: [write_stdin_call("t3", session_of(r), "exit()\n", yield_time_ms=2000)],
        [exec_call("p1", "sleep 1; echo late", yield_time_ms=250)],
        lambda r: [write_stdin_call("p2", session_of(r), "", yield_time_ms=5000)],
        [apply_patch_call("a1", PATCH)],
        [exec_call("a2", "cat made.txt")],
        [function_call("v1", "view_image", {"path": "img.png"})],
        [exec_call("s1", "seq 1 40000")],
        [exec_call("k1", f"sleep 30; : {MARK}", tty=True, yield_time_ms=300)],
        lambda r: [write_stdin_call(CTRL_C_CALL, session_of(r), "\u0003", yield_time_ms=2000)],
        [exec_call("r1", f"sleep 60; : {MARK}", yield_time_ms=200)],
    ]


def read_only_script() -> list[Reply]:
    # the pause lets a login profile's complaints (on stderr) come first
    return [
        [exec_call("w1", "sleep 0.2; { echo x > ro.txt; } 2>&1; echo rc=$?")],
        [exec_call("w2", "python3 -i -q", tty=True, yield_time_ms=3000)],
        lambda r: [
            write_stdin_call("w3", session_of(r), "open('py.txt', 'w')\n", yield_time_ms=2000)
        ],
    ]


def workdir(base: pathlib.Path) -> pathlib.Path:
    work = base / "work"
    work.mkdir(parents=True)
    (work / "AGENTS.md").write_text("Follow the script. AGENTS-MARKER-8\n")
    (work / "img.png").write_bytes(png())
    return work


def normalise(value: Any, work: pathlib.Path) -> Any:
    text = json.dumps(value)
    text = text.replace(str(work), "<WORK>").replace(str(work.parent), "<BASE>")
    text = re.sub(r"Chunk ID: [0-9a-f]+", "Chunk ID: <ID>", text)
    text = re.sub(r"Wall time: [0-9.]+ seconds", "Wall time: <T> seconds", text)
    text = re.sub(r"session ID \d+", "session ID <SID>", text)
    text = re.sub(r'"id": "msg_[^"]*"', '"id": "<MSG>"', text)
    return json.loads(text)


def first_request(result: TurnResult, work: pathlib.Path) -> dict[str, Any]:
    req = result.model.requests[0]
    return normalise(
        {
            "instructions": req.get("instructions"),
            "input": req["input"],
            "tools": [t.get("name") or t.get("type") for t in req["tools"]],
        },
        work,
    )


def outputs(result: TurnResult, work: pathlib.Path) -> dict[str, Any]:
    return normalise(tool_outputs(result.model.requests[-1]), work)


def started_calls(result: TurnResult) -> set[str]:
    return {
        (params.get("metadata") or {}).get("toolCallId")
        for method, params, _ in result.proxy.calls()
        if method == "process/start"
    }


async def turn(
    codex: str, server: str, base: pathlib.Path, script: list[Reply], *args: str
) -> tuple[TurnResult, pathlib.Path]:
    work = workdir(base)
    result = await run_turn(
        codex, server, script, work, base / "home", extra_args=args, timeout=50, marker=MARK
    )
    assert result.returncode == 0, f"codex exec failed on {server}:\n{result.stderr[-3000:]}"
    return result, work


def check_turn(result: TurnResult, work: pathlib.Path, server: str) -> None:
    first = json.dumps(result.model.requests[0])
    assert "AGENTS-MARKER-8" in first, f"{server}: AGENTS.md is missing from the instructions"
    # every exec_command ran on the exec-server
    assert {"c1", "t1", "p1", "a2", "s1", "k1", "r1"} <= started_calls(result), server
    assert (work / "made.txt").read_text() == "made by apply_patch\n", server
    assert result.leftover == [], f"{server}: processes outlived the turn: {result.leftover}"
    methods = {m for m, _, _ in result.proxy.calls()}
    assert "fs/readFile" in methods and "fs/writeFile" in methods, (server, methods)
    errors = [
        (m, a) for m, _, a in result.proxy.calls()
        if isinstance(a, dict) and "error" in a and a["error"]["code"] == -32601
    ]  # fmt: skip
    assert errors == [], f"{server} does not implement what codex calls: {errors}"


async def test_codex_turn_same_on_both_servers(
    codex_release: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    version, codex = codex_release
    with trio.fail_after(110):
        theirs, twork = await turn(codex, "codex", tmp_path / "codex", full_script(),
                                   "-s", "danger-full-access")  # fmt: skip
        ours, owork = await turn(codex, "ours", tmp_path / "ours", full_script(),
                                 "-s", "danger-full-access")  # fmt: skip
    check_turn(theirs, twork, f"codex {version} exec-server")
    check_turn(ours, owork, "our exec-server")

    assert first_request(ours, owork) == first_request(theirs, twork)
    want, got = outputs(theirs, twork), outputs(ours, owork)
    assert "Process exited with code 3" in want["c1"] and "42" in want["t2"]
    assert "Process exited with code 1" in want[CTRL_C_CALL]
    assert "Process exited with code 130" in got[CTRL_C_CALL]
    got[CTRL_C_CALL] = got[CTRL_C_CALL].replace("exited with code 130", "exited with code 1")
    assert set(got) == set(want)
    for call_id in want:
        assert got[call_id] == want[call_id], call_id


async def test_codex_read_only_turn_writes_nothing(
    codex_release: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    _, codex = codex_release
    with trio.fail_after(60):
        theirs, twork = await turn(codex, "codex", tmp_path / "codex", read_only_script(),
                                   "-s", "read-only")  # fmt: skip
        ours, owork = await turn(codex, "ours", tmp_path / "ours", read_only_script(),
                                 "-s", "read-only")  # fmt: skip
    for result, work in ((theirs, twork), (ours, owork)):
        assert not (work / "ro.txt").exists() and not (work / "py.txt").exists()
        starts = [a for m, _, a in result.proxy.calls() if m == "process/start"]
        assert starts and starts[0]["sandboxType"] == "linuxSeccomp", starts
    want, got = outputs(theirs, twork), outputs(ours, owork)
    assert "Read-only file system" in want["w1"] and "rc=1" in want["w1"]
    assert "Read-only file system" in want["w3"]
    assert got == want
