"""Differential test: the same raw JSON-RPC script to the real codex exec-server
0.169.0 and to ours, answers compared field by field.

Each scenario is one script (see ``_wire.Script``) run against a fresh
``codex exec-server --listen stdio`` and a fresh ``python -m unified_exec serve
--listen stdio`` at the same time. The transcripts are normalised (session id,
environment info, output chunk boundaries, arrival order of notifications vs
responses; notifications are compared per process in seq order, output as the
concatenated bytes of each stream, ``nextSeq`` as "after <the event before it>")
and must then be equal, except for the differences listed right below; an entry
there that names a scenario must show up in it exactly as recorded, so a stale
entry fails the test too.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import sys
from typing import Any

import pytest
import trio

from unified_exec.server._server import EXTENSIONS

from ._wire import MISSING, Script, apply_intended, diff, format_diff, normalise, run_script

# Every difference between codex 0.169.0 and our server that is on purpose, and the
# only ones the comparison lets through. scenario: a scenario name, or "*" (any
# scenario; such an entry need not show up). field: a path in the normalised
# transcript (see _wire.normalise; "*" = any key at that level). codex / ours: the
# exact normalised values there. An entry naming a scenario must show up in it.
_UNKNOWN = "exec-server does not implement `{}`"
_CODEX_UNKNOWN = "exec-server stub does not implement `{}` yet"
_PARSE = "failed to parse JSON-RPC message from exec-server stdio: "
INTENDED_DIFFERENCES: list[dict[str, Any]] = [
    {
        "scenario": "*",
        "field": ("responses", "*", "result", "extensions"),
        "codex": MISSING,
        "ours": list(EXTENSIONS),  # whatever the server declares it adds
        "why": "our initialize result announces what we add on top of 0.169.0 "
        "(extra methods and params); codex clients ignore unknown result fields",
    },
    *(
        {
            "scenario": "handshake",
            "field": ("responses", "*", "error", "message"),
            "codex": _CODEX_UNKNOWN.format(method),
            "ours": _UNKNOWN.format(method),
            "why": "unknown method: same code -32601, but ours is no stub that will "
            "implement it 'yet'",
        }
        for method in ("no/such/method", "process/resizePty")
    ),
    {
        "scenario": "write_statuses",
        "field": ("responses", "#3 process/write"),
        "codex": {"error": {"code": -32602, "message": "missing field `writeId`"}},
        "ours": {"result": {"status": "unknownProcess"}},
        "why": "ours accepts a write without writeId (no retry de-duplication then), "
        "for clients of the older protocol",
    },
    {
        "scenario": "write_statuses",
        "field": ("responses", "#17 process/write"),
        "codex": {"error": {"code": -32602, "message": "missing field `writeId`"}},
        "ours": {"result": {"status": "accepted"}},
        "why": "as above, on a live process with a writable stdin",
    },
    {
        "scenario": "write_statuses",
        "field": ("responses", "#9 process/write", "error", "message"),
        "codex": "Invalid symbol 33, offset 0.",
        "ours": "invalid base64: Only base64 data is allowed",
        "why": "bad base64: same code -32602; the text comes from Python's decoder, "
        "not Rust's base64 crate",
    },
    {
        "scenario": "write_statuses",
        "field": ("responses", "#19 process/write"),
        "codex_one_of": [
            {"error": {"code": -32603, "message": "failed to write to process stdin"}},
            {"result": {"status": "accepted"}},
        ],
        "ours": {"error": {"code": -32603, "message": "failed to write to process stdin"}},
        "why": "not a difference but a codex race: a write after process/terminate "
        "killed the (pipeStdin) child fails in codex nearly always, yet was once "
        "'accepted' (1 of ~20 runs of this suite, 0 of 160 codex-only probes); ours "
        "always gives codex's usual answer",
    },
    {
        "scenario": "terminate",
        "field": ("processes", "s2", "terminal", "0", "exitCode"),
        "codex": 1,
        "ours": 128 + 9,
        "why": "a tty child killed by a signal: codex reports 1, ours 128+N as for "
        "pipe children, so the kill stays visible",
    },
    {
        "scenario": "terminate",
        "field": ("responses", "#10 process/read", "result", "exitCode"),
        "codex": 1,
        "ours": 128 + 9,
        "why": "the same exit code, as process/read reports it",
    },
    *(
        {
            "scenario": "spawn_errors",
            "field": ("responses", key, "error", "message"),
            "codex": codex,
            "ours": ours,
            "why": "spawn failure: same code -32603; ours names the executable and "
            "the PATH it searched instead of the bare OS error",
        }
        for key, codex, ours in (
            (
                "#3 process/start",
                "No such file or directory (os error 2)",
                "executable not found: /nonexistent/binary",
            ),
            (
                "#6 process/start",
                "No such file or directory (os error 2)",
                "executable not found: no-such-command-xyz (searched PATH=/usr/bin:/bin)",
            ),
            (
                "#7 process/start",
                "Permission denied (os error 13)",
                "cannot execute /etc/passwd: Permission denied",
            ),
        )
    ),
    {
        "scenario": "cwd_forms",
        "field": ("responses", "#3 process/start"),
        "codex": {"error": {"code": -32602, "message": "invalid URI: relative URL without a base"}},
        "ours": {"result": {"processId": "c2", "sandboxType": "none"}},
        "why": "ours also takes a plain absolute path as cwd (the older protocol's form)",
    },
    {
        "scenario": "cwd_forms",
        "field": ("processes", "c2"),
        "codex": MISSING,
        "ours": {
            "output": {"stdout": "/tmp\n"},
            "terminal": [
                {"method": "process/exited", "exitCode": 0, "sandboxDenied": False},
                {"method": "process/closed"},
            ],
            "shapes": [
                "process/closed: ['processId', 'seq']",
                "process/exited: ['exitCode', 'processId', 'sandboxDenied', 'seq']",
                "process/output: ['chunk', 'processId', 'seq', 'stream']",
            ],
            "problems": [],
        },
        "why": "so the process started with cwd /tmp runs (and prints /tmp)",
    },
    {
        "scenario": "cwd_forms",
        "field": ("responses", "#7 process/start", "error", "message"),
        "codex": "No such file or directory (os error 2)",
        "ours": "working directory does not exist: /nonexistent-dir-xyz",
        "why": "missing cwd: same code -32603; ours says what is missing",
    },
    *(
        {
            "scenario": "malformed_json",
            "field": ("responses", key, "error", "message"),
            "codex": _PARSE + codex,
            "ours": _PARSE + ours,
            "why": "unparseable line: same code -32600, id -1 and prefix; the detail is "
            "Python's json wording, not serde_json's",
        }
        for key, codex, ours in (
            (
                "#-1 (no id) [1]",
                "expected ident at line 1 column 2",
                "Expecting value at line 1 column 1",
            ),
            (
                "#-1 (no id) [2]",
                "key must be a string at line 1 column 2",
                "Expecting property name enclosed in double quotes at line 1 column 2",
            ),
            (
                "#-1 (no id) [4]",
                "trailing characters at line 1 column 34",
                "Extra data at line 1 column 34",
            ),
        )
    ),
]

PATH = "/usr/bin:/bin"


def start(
    pid: str,
    argv: list[str],
    *,
    tty: bool = False,
    pipe_stdin: bool = False,
    cwd: str = "file:///tmp",
) -> dict[str, Any]:
    return {
        "processId": pid,
        "argv": argv,
        "cwd": cwd,
        "env": {"PATH": PATH},
        "tty": tty,
        "pipeStdin": pipe_stdin,
        "arg0": None,
    }


def write(pid: str, data: bytes, write_id: str | None = "w") -> dict[str, Any]:
    params: dict[str, Any] = {"processId": pid, "chunk": base64.b64encode(data).decode()}
    if write_id is not None:
        params["writeId"] = write_id
    return params


# -- scenarios -----------------------------------------------------------------------


async def handshake(s: Script) -> None:
    await s.call("process/read", {"processId": "x"})  # before initialize
    await s.call("no/such/method", {})  # unknown method before initialize
    await s.call("initialize", {})  # missing clientName; may be retried
    await s.call("initialize", None)
    await s.call("initialize", {"clientName": "differential-test"}, jsonrpc=True)
    await s.call("process/read", {"processId": "x"})  # before initialized
    await s.call("initialize", {"clientName": "again"})  # second initialize
    await s.notify("initialized", {})
    await s.notify("initialized")  # a second one is accepted silently
    await s.call("no/such/method", {})
    await s.call("process/resizePty", {"processId": "x"})
    await s.call("process/read", {"processId": "ghost"}, id="abc")  # string id echoed
    await s.call("process/read")  # no params
    await s.call("process/read", {"processId": "ghost", "afterSeq": -1})
    await s.call("process/terminate", {"processId": "ghost"})
    await s.call("process/signal", {"processId": "ghost", "signal": "interrupt"})
    await s.call("process/signal", {"processId": "ghost", "signal": "kill"})
    await s.call("process/start", {"processId": 5, "argv": ["true"]})
    await s.call("process/start", {"processId": "m", "argv": ["true"], "cwd": "file:///tmp"})


async def unexpected_notification(s: Script) -> None:
    await s.init()
    await s.notify("bogus/notification", {})
    await s.call("process/read", {"processId": "x"}, wait=1.0)  # no reply: closed


async def initialized_before_initialize(s: Script) -> None:
    await s.notify("initialized", {})
    await s.call("initialize", {"clientName": "differential-test"}, wait=1.0)


async def pipe_echo(s: Script) -> None:
    await s.init()
    # The sleep fixes the seq order of the two streams (else it is a race in codex).
    script = 'read line; echo "got:$line"; sleep .1; echo "to-stderr" >&2; exit 3'
    await s.call("process/start", start("p1", ["sh", "-c", script], pipe_stdin=True))
    await s.call("process/write", write("p1", b"hello\n", "w1"))
    await s.wait_done("p1")
    await s.call("process/read", {"processId": "p1"})
    await s.call("process/read", {"processId": "p1", "afterSeq": 1})
    await s.call("process/write", write("p1", b"late\n", "w2"))  # after natural exit
    await s.call("process/terminate", {"processId": "p1"})


async def tty_echo(s: Script) -> None:
    await s.init()
    script = 'echo out; echo err >&2; read x; echo "x=$x"; stty size; exit 5'
    await s.call("process/start", start("t1", ["sh", "-c", script], tty=True))
    await s.wait_output("t1", b"err\r\n")
    await s.call("process/write", write("t1", b"typed\n", "w1"))
    await s.wait_done("t1")
    await s.call("process/read", {"processId": "t1"})
    await s.call("process/write", write("t1", b"late\n", "w2"))


async def write_statuses(s: Script) -> None:
    await s.init()
    await s.call("process/write", write("ghost", b"x", "w0"))
    await s.call("process/write", write("ghost", b"x", None))  # missing writeId
    await s.call("process/start", start("nostdin", ["sleep", "100"]))
    await s.call("process/write", write("nostdin", b"x\n", "w1"))
    script = 'read a; read b; echo "$a,$b"'
    await s.call("process/start", start("dd", ["sh", "-c", script], pipe_stdin=True))
    await s.call("process/write", write("dd", b"", "e0"))  # empty chunk: a no-op
    await s.call("process/write", write("dd", b"x\n", ""))  # empty writeId
    await s.call("process/write", {"processId": "dd", "chunk": "!!!!", "writeId": "b"})
    await s.call("process/write", {"processId": "dd", "chunk": "eA==", "writeId": 7})
    await s.call("process/write", write("dd", b"one\n", "A"))
    await s.call("process/write", write("dd", b"two\n", "A"))  # repeated id: not rewritten
    await s.call("process/write", write("dd", b"three\n", "B"))
    await s.wait_done("dd")
    await s.call("process/write", write("dd", b"late\n", "C"))  # after natural exit
    await s.call("process/start", start("cat", ["cat"], pipe_stdin=True))
    await s.call("process/write", write("cat", b"meow\n", "w1"))
    await s.wait_output("cat", b"meow\n")
    await s.call("process/write", write("cat", b"", None))  # missing writeId, live process
    await s.call("process/terminate", {"processId": "cat"})
    await s.wait_done("cat")
    await s.call("process/write", write("cat", b"after\n", "w2"))  # after terminate
    await s.call("process/terminate", {"processId": "nostdin"})
    await s.wait_done("nostdin")
    await s.call("process/write", write("nostdin", b"x\n", "w2"))


async def read_cursor(s: Script) -> None:
    await s.init()
    # The background sleep holds stdout open for a while after the exit, so
    # exited and closed are well apart.
    script = (
        "printf aaaa; sleep .3; printf bbbbbb; sleep .3; printf cc; sleep 1; (sleep .5) & exit 7"
    )
    await s.call("process/start", start("r1", ["sh", "-c", script]))
    await s.wait_output("r1", b"aaaabbbbbbcc")
    await s.call("process/read", {"processId": "r1"})
    await s.call("process/read", {"processId": "r1", "afterSeq": 1})
    await s.call("process/read", {"processId": "r1", "maxBytes": 0})
    await s.call("process/read", {"processId": "r1", "maxBytes": 1})
    await s.call("process/read", {"processId": "r1", "maxBytes": 10})
    await s.call("process/read", {"processId": "r1", "maxBytes": 11})
    await s.call("process/read", {"processId": "r1", "afterSeq": 1, "maxBytes": 6})
    await s.call("process/read", {"processId": "r1", "afterSeq": 3, "waitMs": 300})
    await s.call("process/read", {"processId": "r1", "afterSeq": 3, "waitMs": 5000})
    await s.wait_done("r1")
    await s.call("process/read", {"processId": "r1", "afterSeq": 99, "waitMs": 2000})
    await s.call("process/read", {"processId": "r1", "maxBytes": 5})
    await s.call("process/read", {"processId": "r1", "afterSeq": 3})


async def terminate(s: Script) -> None:
    await s.init()
    await s.call("process/start", start("s1", ["sleep", "100"]))
    await s.call("process/terminate", {"processId": "s1"})
    await s.wait_done("s1")
    await s.call("process/terminate", {"processId": "s1"})
    await s.call("process/read", {"processId": "s1"})
    await s.call("process/terminate", {"processId": "never-existed"})
    await s.call("process/start", start("s2", ["sleep", "100"], tty=True))
    await s.call("process/terminate", {"processId": "s2"})
    await s.wait_done("s2")
    await s.call("process/terminate", {"processId": "s2"})
    await s.call("process/read", {"processId": "s2"})
    await s.call("process/write", write("s2", b"x", "w1"))


async def duplicate_process_id(s: Script) -> None:
    await s.init()
    await s.call("process/start", start("d1", ["sleep", "100"]))
    await s.call("process/start", start("d1", ["true"]))  # running
    await s.call("process/start", start("d2", ["true"]))
    await s.wait_done("d2")
    await s.call("process/start", start("d2", ["true"]))  # exited, retained
    await s.call("process/terminate", {"processId": "d1"})
    await s.wait_done("d1")
    await s.call("process/start", start("d1", ["true"]))  # killed, retained


async def spawn_errors(s: Script) -> None:
    await s.init()
    await s.call("process/start", start("a0", []))
    await s.call("process/start", start("a1", ["/nonexistent/binary"]))
    await s.call("process/read", {"processId": "a1"})
    await s.call("process/write", write("a1", b"x", "w"))
    await s.call("process/start", start("a1", ["no-such-command-xyz"]))
    await s.call("process/start", start("a1", ["/etc/passwd"]))  # not executable
    await s.call("process/start", start("a1", ["sh", "-c", "echo reused"]))
    await s.wait_done("a1")


async def cwd_forms(s: Script) -> None:
    await s.init()
    await s.call("process/start", start("c1", ["pwd"], cwd="file:///tmp"))
    await s.wait_done("c1")
    await s.call("process/start", start("c2", ["pwd"], cwd="/tmp"))
    await s.call("process/start", start("c3", ["pwd"], cwd="http://host/tmp"))
    await s.call("process/start", start("c4", ["pwd"], cwd="tmp"))
    await s.call("process/start", start("c5", ["pwd"], cwd="file://localhost/tmp/"))
    await s.wait_done("c5")
    await s.call("process/start", start("c6", ["pwd"], cwd="file:///nonexistent-dir-xyz"))
    await s.sleep(0.3)  # let c2 (if it started) finish


async def malformed_json(s: Script) -> None:
    await s.init()
    await s.raw("nope")
    await s.raw("{bad")
    await s.raw('[{"id":1,"method":"process/read","params":{"processId":"x"}}]')
    await s.raw('{"id":2,"method":"process/read"} {}')
    await s.call("process/read", {"processId": "x"})  # the connection is still fine


async def signal_interrupt(s: Script) -> None:
    await s.init()
    script = 'trap "echo got-INT; exit 43" INT; echo ready; while :; do sleep 0.05; done'
    await s.call("process/start", start("g1", ["sh", "-c", script]))
    await s.wait_output("g1", b"ready\n")
    await s.call("process/signal", {"processId": "g1", "signal": "interrupt"})
    await s.wait_done("g1")
    await s.call("process/signal", {"processId": "g1", "signal": "interrupt"})  # exited
    await s.call("process/start", start("g2", ["sh", "-c", script], tty=True))
    await s.wait_output("g2", b"ready\r\n")
    await s.call("process/signal", {"processId": "g2", "signal": "interrupt"})
    await s.wait_done("g2")
    await s.call("process/read", {"processId": "g2"})


SCENARIOS = {
    f.__name__: f
    for f in (
        handshake,
        unexpected_notification,
        initialized_before_initialize,
        pipe_echo,
        tty_echo,
        write_statuses,
        read_cursor,
        terminate,
        duplicate_process_id,
        spawn_errors,
        cwd_forms,
        malformed_json,
        signal_interrupt,
    )
}


# The only waits allowed to run out on codex: a vacuous run (both servers silent)
# must not pass as agreement.
EXPECTED_CODEX_TIMEOUTS = {
    "unexpected_notification": ["no reply to #2 process/read"],
    "initialized_before_initialize": ["no reply to #1 initialize"],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_differential(
    scenario: str, codex_bin: str, codex_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    script = SCENARIOS[scenario]
    servers = {
        "codex": ([codex_bin, "exec-server", "--listen", "stdio"], codex_env),
        "ours": ([sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"], None),
    }
    transcripts: dict[str, dict[str, Any]] = {}

    async def run(name: str) -> None:
        argv, env = servers[name]
        transcripts[name] = await run_script(argv, env or dict(os.environ), str(tmp_path), script)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for name in servers:
                nursery.start_soon(run, name)

    codex = normalise(transcripts["codex"])
    ours = normalise(transcripts["ours"])
    ours_adjusted, stale = apply_intended(scenario, codex, ours, INTENDED_DIFFERENCES)
    diffs = diff(codex, ours_adjusted)
    expected_timeouts = EXPECTED_CODEX_TIMEOUTS.get(scenario, [])
    if diffs or stale or codex["timeouts"] != expected_timeouts:
        report = [f"scenario {scenario}: our server differs from codex 0.169.0"]
        if diffs:
            report += ["unexpected differences:", format_diff(diffs)]
        if stale:
            report += ["stale INTENDED_DIFFERENCES entries:", *stale]
        if codex["timeouts"] != expected_timeouts:
            report += [f"the script itself misfired on codex: timeouts {codex['timeouts']}"]
        for name, tree in (("codex", codex), ("ours", ours)):
            report.append(f"--- {name}, normalised:\n{json.dumps(tree, indent=1)}")
            report.append(f"--- {name} stderr (tail):\n{transcripts[name]['stderr'][-1500:]}")
        pytest.fail("\n".join(report), pytrace=False)
