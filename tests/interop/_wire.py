"""Raw-wire driver and transcript normaliser for the differential exec-server test.

A *script* is an async function of one :class:`Script`; it sends raw JSON-RPC lines
and waits for answers or for process events, never branching on what it got, so the
same script sends the same bytes to every server. Afterwards :func:`normalise`
turns the transcript into a plain JSON-like tree in which run-to-run noise is gone
(session ids, environment info, chunk boundaries, arrival order), and :func:`diff`
compares two trees leaf by leaf.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = [
    "MISSING",
    "Script",
    "apply_intended",
    "diff",
    "format_diff",
    "normalise",
    "run_script",
]

MISSING = "<absent>"
WAIT_S = 10.0  # bound on any one wait inside a script
Path = tuple[str, ...]


class Wire:
    """One server process spoken to over stdio, every received message recorded."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.received: list[dict[str, Any]] = []  # arrival order
        self.stderr = bytearray()
        self.eof = False
        self._changed = trio.Event()

    async def send_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        try:
            await self.proc.stdin.send_all(text.encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server hung up; what it answered so far is the observation

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        try:
            await self.proc.stdin.aclose()
        except trio.BrokenResourceError:
            pass

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def read_stdout(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while True:
            data = await self.proc.stdout.receive_some(65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = {"<unparseable line>": line.decode("utf-8", "backslashreplace")}
                if not isinstance(msg, dict):
                    msg = {"<not an object>": msg}
                self.received.append(msg)
            self._poke()
        self.eof = True
        self._poke()

    async def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while data := await self.proc.stderr.receive_some(65536):
            self.stderr += data

    async def wait_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not pred():
                if self.eof:
                    return pred()
                await self._changed.wait()
            return True
        return False


class Script:
    """What a scenario script may do. Every wait is bounded and records a timeout."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.sent: dict[Any, tuple[str, Any]] = {}  # request id -> (method, params)
        self.timeouts: list[str] = []
        self._next_id = 0

    # -- sending -----------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Any = MISSING,
        *,
        id: Any = None,
        jsonrpc: bool = False,
        wait: float = WAIT_S,
    ) -> None:
        """Send a request and wait up to ``wait`` s for its response (else record that)."""
        if id is None:
            self._next_id += 1
            id = self._next_id
        assert id not in self.sent, f"request id {id!r} used twice in one script"
        msg: dict[str, Any] = {"id": id, "method": method}
        if jsonrpc:
            msg = {"jsonrpc": "2.0", **msg}
        if params is not MISSING:
            msg["params"] = params
        self.sent[id] = (method, params)
        await self.wire.send_line(json.dumps(msg))

        def answered() -> bool:
            return any(m.get("id") == id and "method" not in m for m in self.wire.received)

        if not await self.wire.wait_until(answered, wait):
            self.timeouts.append(f"no reply to #{id} {method}")

    async def notify(self, method: str, params: Any = MISSING) -> None:
        msg: dict[str, Any] = {"method": method}
        if params is not MISSING:
            msg["params"] = params
        await self.wire.send_line(json.dumps(msg))

    async def raw(self, line: str) -> None:
        """Send one raw line that is not a valid message; wait for one more id -1 reply."""
        before = self._count_id(-1)
        await self.wire.send_line(line)
        if not await self.wire.wait_until(lambda: self._count_id(-1) > before, WAIT_S):
            self.timeouts.append(f"no reply to raw line {line!r}")

    def _count_id(self, id: Any) -> int:
        return sum(1 for m in self.wire.received if m.get("id") == id and "method" not in m)

    async def init(self) -> None:
        await self.call("initialize", {"clientName": "differential-test"})
        await self.notify("initialized", {})

    # -- waiting -----------------------------------------------------------------

    def _events(self, pid: str) -> list[dict[str, Any]]:
        out = []
        for m in self.wire.received:
            params = m.get("params")
            if "id" not in m and isinstance(params, dict) and params.get("processId") == pid:
                out.append({"method": m.get("method"), **params})
        return out

    async def wait_done(self, pid: str) -> None:
        """Until exited and closed arrived, and every seq below closed's."""

        def done() -> bool:
            events = self._events(pid)
            closed = [e["seq"] for e in events if e["method"] == "process/closed"]
            if not closed or not any(e["method"] == "process/exited" for e in events):
                return False
            return {e.get("seq") for e in events} >= set(range(1, max(closed) + 1))

        if not await self.wire.wait_until(done, WAIT_S):
            self.timeouts.append(f"{pid} did not finish")

    async def wait_output(self, pid: str, needle: bytes) -> None:
        """Until the process's pushed output (all streams, seq order) contains needle."""

        def seen() -> bool:
            events = sorted(
                (e for e in self._events(pid) if e["method"] == "process/output"),
                key=lambda e: e.get("seq", 0),
            )
            return needle in b"".join(_b64(e.get("chunk")) for e in events)

        if not await self.wire.wait_until(seen, WAIT_S):
            self.timeouts.append(f"{pid} never printed {needle!r}")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


ScriptFn = Callable[[Script], Awaitable[None]]


async def run_script(
    argv: list[str], env: dict[str, str], cwd: str, script: ScriptFn, *, limit: float = 60.0
) -> dict[str, Any]:
    """Run script against a fresh stdio server; return the raw transcript."""
    proc = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    wire = Wire(proc)
    s = Script(wire)
    try:
        with trio.fail_after(limit):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wire.read_stdout)
                nursery.start_soon(wire.read_stderr)
                await script(s)
                await wire.close_stdin()
                # stdio EOF: the server exits and kills its children.
                with trio.move_on_after(10):
                    await proc.wait()
                nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
    return {
        "received": wire.received,
        "sent": s.sent,
        "timeouts": s.timeouts,
        "returncode": proc.returncode,
        "stderr": wire.stderr.decode("utf-8", "backslashreplace"),
    }


# -- normalisation -----------------------------------------------------------------


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b"<bad base64>"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _process_trees(received: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Notifications per process, in seq order -> (tree, seq labels per process)."""
    by_pid: dict[str, list[dict[str, Any]]] = {}
    other: list[Any] = []
    for m in received:
        params = m.get("params")
        if "id" in m or not isinstance(params, dict) or "processId" not in params:
            if "id" not in m:
                other.append(m)
            continue
        by_pid.setdefault(str(params["processId"]), []).append(m)

    trees: dict[str, Any] = {}
    labels: dict[str, dict[int, str]] = {}
    for pid, msgs in by_pid.items():
        problems: list[str] = []
        shapes = sorted({f"{m.get('method')}: {sorted(m['params'])}" for m in msgs})
        ordered = sorted(msgs, key=lambda m: _seq(m["params"]))
        seqs = [_seq(m["params"]) for m in ordered]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"seqs are not 1..N without gaps or repeats: {seqs}")
        output: dict[str, bytes] = {}
        lab: dict[int, str] = {}
        terminal: list[Any] = []
        for m in ordered:
            p = m["params"]
            method = m.get("method")
            if method == "process/output":
                stream = str(p.get("stream"))
                data = _b64(p.get("chunk"))
                if not data:
                    problems.append(f"empty output chunk at seq {p.get('seq')}")
                output[stream] = output.get(stream, b"") + data
                lab[_seq(p)] = f"{stream}@{len(output[stream])}"
            else:
                rest = {k: v for k, v in p.items() if k not in ("processId", "seq")}
                terminal.append({"method": method, **rest})
                lab[_seq(p)] = str(method).removeprefix("process/")
        kinds = [t["method"] for t in terminal]
        if kinds != ["process/exited", "process/closed"]:
            problems.append(f"terminal events in seq order are {kinds}, not [exited, closed]")
        elif seqs and _seq(ordered[-1]["params"]) != max(seqs):
            problems.append("closed does not carry the largest seq")
        trees[pid] = {
            "output": {k: _text(v) for k, v in sorted(output.items())},
            "terminal": terminal,
            "shapes": shapes,
            "problems": problems,
        }
        labels[pid] = lab
    tree = {"processes": trees, "other_notifications": other}
    return tree, labels


def _seq(params: dict[str, Any]) -> int:
    seq = params.get("seq")
    return seq if isinstance(seq, int) else -1


def _seq_label(labels: dict[int, str], next_seq: Any) -> Any:
    """nextSeq as 'after <the event before it>', independent of chunk boundaries."""
    if not isinstance(next_seq, int):
        return next_seq
    if next_seq == 1:
        return "start"
    if next_seq - 1 in labels:
        return f"after {labels[next_seq - 1]}"
    top = max(labels, default=0)
    return f"unassigned (last known seq + {next_seq - top})"


def _read_result(
    result: Any, labels: dict[int, str], pushed: dict[int, bytes], problems: list[str]
) -> Any:
    if not isinstance(result, dict) or not isinstance(result.get("chunks"), list):
        return result
    out = dict(result)
    joined: dict[str, bytes] = {}
    for c in result["chunks"]:
        if not isinstance(c, dict):
            problems.append(f"chunk is not an object: {c!r}")
            continue
        stream = str(c.get("stream"))
        data = _b64(c.get("chunk"))
        joined[stream] = joined.get(stream, b"") + data
        seq = c.get("seq")
        if isinstance(seq, int) and seq in pushed and pushed[seq] != data:
            problems.append(f"read chunk seq {seq} differs from the pushed notification")
        extra = sorted(set(c) - {"seq", "stream", "chunk"})
        if extra:
            problems.append(f"chunk has extra fields {extra}")
    out["chunks"] = {k: _text(v) for k, v in sorted(joined.items())}
    out["nextSeq"] = _seq_label(labels, result.get("nextSeq"))
    return out


def normalise(transcript: dict[str, Any]) -> dict[str, Any]:
    received = transcript["received"]
    sent = transcript["sent"]
    tree, labels = _process_trees(received)
    pushed: dict[str, dict[int, bytes]] = {}
    for m in received:
        p = m.get("params")
        if m.get("method") == "process/output" and isinstance(p, dict):
            pushed.setdefault(str(p.get("processId")), {})[_seq(p)] = _b64(p.get("chunk"))

    responses: dict[str, Any] = {}
    problems: list[str] = []
    parse_errors = 0
    for m in received:
        if "id" not in m or "method" in m:
            continue
        rid = m["id"]
        body = {k: v for k, v in m.items() if k != "id"}
        if rid in sent:
            method, params = sent[rid]
            key = f"#{rid} {method}"
        elif rid == -1:
            parse_errors += 1
            method, params = "", None
            key = f"#-1 (no id) [{parse_errors}]"
        else:
            method, params = "", None
            key = f"#{rid!r} (never sent)"
        if key in responses:
            key += " (again)"
        result = body.get("result")
        if method == "initialize" and isinstance(result, dict):
            result = dict(result)
            if isinstance(result.get("sessionId"), str) and result["sessionId"]:
                result["sessionId"] = "<session id>"
            if isinstance(result.get("environmentInfo"), dict):
                result["environmentInfo"] = "<environment info>"
            body["result"] = result
        elif method == "process/read" and "result" in body and isinstance(params, dict):
            pid = str(params.get("processId"))
            body["result"] = _read_result(
                result, labels.get(pid, {}), pushed.get(pid, {}), problems
            )
        responses[key] = body
    for rid, (method, _) in sent.items():
        key = f"#{rid} {method}"
        responses.setdefault(key, MISSING)
    return {
        "responses": dict(sorted(responses.items(), key=lambda kv: _key_order(kv[0]))),
        **tree,
        "read_problems": problems,
        "timeouts": transcript["timeouts"],
        "exit_status_after_stdin_eof": transcript["returncode"],
    }


def _key_order(key: str) -> tuple[int, str]:
    head = key.split(" ", 1)[0].lstrip("#")
    try:
        return (int(head), key)
    except ValueError:
        return (10**9, key)


# -- comparison --------------------------------------------------------------------


def diff(a: Any, b: Any, path: Path = ()) -> list[tuple[Path, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[Path, Any, Any]] = []
        for k in list(a) + [k for k in b if k not in a]:
            out += diff(a.get(k, MISSING), b.get(k, MISSING), (*path, str(k)))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += diff(x, y, (*path, str(i)))
        return out
    return [] if a == b else [(path, a, b)]


def _get(tree: Any, path: Path) -> Any:
    for key in path:
        if isinstance(tree, dict) and key in tree:
            tree = tree[key]
        elif isinstance(tree, list) and key.isdigit() and int(key) < len(tree):
            tree = tree[int(key)]
        else:
            return MISSING
    return tree


def _set(tree: Any, path: Path, value: Any) -> None:
    *head, last = path
    for key in head:
        tree = tree[int(key)] if isinstance(tree, list) else tree[key]
    if isinstance(tree, list):
        tree[int(last)] = value
    elif value == MISSING:
        tree.pop(last, None)
    else:
        tree[last] = value


def _expand(codex: Any, ours: Any, field: Path, prefix: Path = ()) -> list[Path]:
    """Concrete paths for a field that may hold "*" (any key at that level)."""
    if not field:
        return [prefix]
    head, rest = field[0], field[1:]
    if head != "*":
        return _expand(_get(codex, (head,)), _get(ours, (head,)), rest, (*prefix, head))
    keys: list[str] = []
    for tree in (codex, ours):
        if isinstance(tree, dict):
            keys += [str(k) for k in tree if str(k) not in keys]
    out: list[Path] = []
    for k in keys:
        out += _expand(_get(codex, (k,)), _get(ours, (k,)), rest, (*prefix, k))
    return out


def apply_intended(
    scenario: str, codex: dict[str, Any], ours: dict[str, Any], intended: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """Ours with each intended difference replaced by codex's value, and the
    entries naming this scenario that did not show up exactly as recorded.

    An entry applies where codex's value and ours are exactly the recorded ones.
    Its ``scenario`` is a name, a list of names, or "*" (any scenario, and then
    it need not show up). ``codex_one_of`` instead of ``codex`` lists the answers
    of a codex race; ours must then give the one recorded.
    """
    ours = copy.deepcopy(ours)
    stale = []
    for d in intended:
        names = d["scenario"]
        if names != "*" and scenario not in ([names] if isinstance(names, str) else names):
            continue
        field = tuple(d["field"])
        hits = 0
        codex_ok = d["codex_one_of"] if "codex_one_of" in d else [d["codex"]]
        for path in _expand(codex, ours, field):
            got_codex = _get(codex, path)
            if got_codex in codex_ok and _get(ours, path) == d["ours"]:
                _set(ours, path, got_codex)
                hits += 1
        if not hits and names != "*":
            shown = _expand(codex, ours, field)
            actual = [
                f"    at {' > '.join(p)}: codex {_get(codex, p)!r}, ours {_get(ours, p)!r}"
                for p in shown
            ] or ["    (no such field in either transcript)"]
            stale.append(
                f"intended difference at {' > '.join(field)} did not show up as recorded "
                f"(codex {' or '.join(map(repr, codex_ok))}, ours {d['ours']!r}); actual:\n"
                + "\n".join(actual)
            )
    return ours, stale


def format_diff(diffs: list[tuple[Path, Any, Any]]) -> str:
    lines = []
    for path, a, b in diffs:
        lines.append(f"  {' > '.join(path)}\n    codex: {a!r}\n    ours:  {b!r}")
    return "\n".join(lines)
