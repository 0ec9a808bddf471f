"""Hypothesis strategies for hostile exec-server input: one frame at a time.

A *frame* is what one websocket message or one stdio line carries. Most frames are
requests built from valid params with one thing broken (a wrong type, a missing or
extra field, a bad base64 chunk, a huge argv); the rest is garbage of every kind
(random bytes, invalid UTF-8, truncated, deeply nested or oversized JSON, odd ids,
batches, responses, notifications). Valid ``process/start`` requests do run
children, and they carry the batch's marker so that a leak can be seen.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
from hypothesis import strategies as st

from ._common import CHILD_PATH, MARKER_VAR

PROCESS_METHODS = [
    "process/start",
    "process/read",
    "process/write",
    "process/signal",
    "process/terminate",
    "process/resize",
    "process/closeStdin",
]
METHODS = [*PROCESS_METHODS, "initialize", "environment/info", "environment/status"]
PIDS = ["t0", "t1", "t2", "p0", "p1", "p2", "", "é/ü x", "\ud800", "p" * 300]
ARGVS = [
    ["sleep", "1000"],
    ["cat"],
    ["sh", "-c", "echo hi; echo err >&2; exit 3"],
    ["sh", "-c", "sleep 1000 & sleep 1000"],
    ["sh", "-c", "trap '' INT TERM HUP; sleep 1000"],
    ["setsid", "sleep", "1000"],
    ["head", "-c", "200000", "/dev/zero"],
    ["true"],
    ["/nonexistent/binary"],
    ["/etc/passwd"],
    ["sh", "-c", "printf '\\377\\376 bad utf8 \\355\\240\\200'; sleep 1000"],
]
CWDS = [
    "file:///tmp",
    "/tmp",
    "tmp",
    "file:tmp",
    "http://host/tmp",
    "file://remotehost/tmp",
    "file:///nonexistent-dir",
    "file:///tmp%00x",
    "file:///tmp/%ZZ",
    "",
    "\ud800",
]
CHUNKS = ["", "aGkK", "eA==", "!!!!", "abc", "YQ", "é", "====", "aGkK\n", "a" * 5]


def targets(marker: str) -> list[dict[str, Any]]:
    """Three live children every handshaken batch starts first, for the frames to hit:
    a tty, a pipe child with a background grandchild, and a reader of its stdin."""
    env = {"PATH": CHILD_PATH, MARKER_VAR: marker}
    common = {"cwd": "file:///tmp", "env": env}
    return [
        {"processId": "t0", "argv": ["sleep", "1000"], "tty": True, **common},
        {
            "processId": "t1",
            "argv": ["sh", "-c", "sleep 1000 & sleep 1000"],
            "tty": False,
            **common,
        },
        {"processId": "t2", "argv": ["cat"], "tty": False, "pipeStdin": True, **common},
    ]


@attrs.frozen
class Frame:
    """One frame and what the oracle needs to know about it."""

    data: bytes
    kind: str
    rid: int | None = None  # a unique id we expect an answer to
    method: str | None = None
    process_id: Any = None
    may_close: bool = False  # a notification: the server may hang up (codex does)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["\ud800", "\udfff\ud800", "\x00", "é" * 3]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
odd_ids = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**30, -(10**30), 2**63, 2**64, -1, 0, "", "\ud800", "x" * 10_000]),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
    st.lists(scalars, max_size=2),
)
small_ints = st.one_of(
    st.integers(min_value=0, max_value=20),
    st.sampled_from([-1, 2**31, 2**63, 2**64, 2**64 + 1, -(2**63), 10**40]),
)


def _env(marker: str) -> st.SearchStrategy[dict[str, str]]:
    base = {"PATH": CHILD_PATH, MARKER_VAR: marker}
    extra = st.one_of(
        st.just({}),
        st.just({}),
        st.just({}),
        st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=4),
        st.sampled_from(
            [
                {"A=B": "1"},
                {"NUL": "a\x00b"},
                {"": "empty"},
                {f"K{i}": "v" * 40 for i in range(5000)},  # ~250 KB of environment
            ]
        ),
    )
    return extra.map(lambda e: {**e, **base})


def _argv() -> st.SearchStrategy[list[str]]:
    return st.one_of(
        st.sampled_from(ARGVS),
        st.sampled_from(ARGVS).map(lambda a: a[:1] + ["x" * 100_000] * 3),  # 300 KB argv
        st.sampled_from([10_000, 40_000]).map(lambda n: ["true", *(["arg"] * n)]),
        st.just(["true", "x" * 3_000_000]),  # over ARG_MAX: a spawn error, not a crash
        st.just(["sh\x00", "-c", "true"]),
        st.just([]),
        st.lists(st.text(max_size=8), min_size=1, max_size=3),
    )


def params_for(method: str, marker: str) -> st.SearchStrategy[Any]:
    pid = st.sampled_from(PIDS)
    if method == "initialize":
        return st.fixed_dictionaries(
            {"clientName": st.text(max_size=10)},
            optional={"resumeSessionId": st.text(max_size=40)},
        )
    if method == "process/start":
        return st.fixed_dictionaries(
            {
                "processId": pid,
                "argv": _argv(),
                "cwd": st.one_of(st.just("file:///tmp"), st.sampled_from(CWDS)),
                "env": _env(marker),
                "tty": st.booleans(),
            },
            optional={
                "pipeStdin": st.booleans(),
                "arg0": st.one_of(st.none(), st.text(max_size=8)),
                "ttySize": st.one_of(
                    st.just([24, 80]), st.lists(small_ints, min_size=0, max_size=3)
                ),
            },
        )
    if method == "process/read":
        return st.fixed_dictionaries(
            {"processId": pid},
            optional={
                "afterSeq": st.one_of(st.none(), small_ints),
                "maxBytes": st.one_of(st.none(), small_ints),
                "waitMs": st.one_of(st.none(), st.sampled_from([0, 1, 50, 500, 2000])),
            },
        )
    if method == "process/write":
        chunk = st.one_of(
            st.sampled_from(CHUNKS),
            st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
            st.just(base64.b64encode(b"y" * 300_000).decode()),
        )
        return st.fixed_dictionaries(
            {"processId": pid, "chunk": chunk},
            optional={"writeId": st.one_of(st.text(max_size=8), st.just("w" * 5000))},
        )
    if method == "process/signal":
        return st.fixed_dictionaries(
            {"processId": pid, "signal": st.sampled_from(["interrupt", "kill", "", "INT"])}
        )
    if method == "process/resize":
        return st.fixed_dictionaries({"processId": pid, "rows": small_ints, "cols": small_ints})
    if method in ("process/terminate", "process/closeStdin"):
        return st.fixed_dictionaries({"processId": pid})
    return st.sampled_from([None, {}, {"x": 1}, [], 0])


@st.composite
def _mutated(draw: st.DrawFn, params: Any) -> Any:
    """Valid params (most of the time) with one thing broken."""
    how = draw(st.sampled_from(["keep"] * 5 + ["type", "type", "drop", "extra", "whole"]))
    if how == "whole" or not isinstance(params, dict) or not params:
        return draw(json_values) if how != "keep" else params
    out = dict(params)
    key = draw(st.sampled_from(sorted(out)))
    if how == "type":
        out[key] = draw(json_values)
    elif how == "drop":
        del out[key]
    elif how == "extra":
        out[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return out


@st.composite
def request_frame(draw: st.DrawFn, rid: int, marker: str) -> Frame:
    # process/start weighs three: hostile input should meet live children.
    method = draw(st.sampled_from(["process/start", "process/start", *METHODS]))
    params = draw(_mutated(draw(params_for(method, marker))))
    msg: dict[str, Any] = {"id": rid, "method": method}
    if params is not None or draw(st.booleans()):
        msg["params"] = params
    if draw(st.integers(0, 4)) == 0:
        msg["jsonrpc"] = "2.0"
    pid = params.get("processId") if isinstance(params, dict) else None
    data = _dumps(msg)
    # A frame that a smaller message cap might refuse is answered with id -1: no rid.
    expect = rid if len(data) < 512 * 1024 else None
    return Frame(data, "request", rid=expect, method=method, process_id=pid)


@st.composite
def garbage_frame(draw: st.DrawFn, rid: int, marker: str) -> Frame:
    kind = draw(
        st.sampled_from(
            [
                "bytes",
                "bad-utf8",
                "truncated",
                "nested",
                "oversized",
                "values",
                "unknown-method",
                "odd-id",
                "batch",
                "response",
                "non-object",
                "duplicate-keys",
                "blank",
                "notification",
            ]
        )
    )
    if kind in ("bad-utf8", "truncated", "batch"):
        valid = draw(request_frame(rid, marker)).data
    if kind == "bytes":
        return Frame(draw(st.binary(max_size=300)), kind)
    if kind == "bad-utf8":
        at = draw(st.integers(0, len(valid)))
        bad = draw(
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80", b"\x80"])
        )
        return Frame(valid[:at] + bad + valid[at:], kind)
    if kind == "truncated":
        return Frame(valid[: draw(st.integers(0, max(0, len(valid) - 1)))], kind)
    if kind == "nested":
        depth = draw(st.sampled_from([100, 999, 1001, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = opener * depth + ("1" if opener != "[" else "") + closer * depth
        if draw(st.booleans()):
            inner = f'{{"id":{rid},"method":"process/read","params":{inner}}}'
        return Frame(inner.encode(), kind)
    if kind == "oversized":
        size = draw(st.sampled_from([70_000, 1 << 20, 4 << 20]))
        field = draw(st.sampled_from(["processId", "writeId", "chunk", "method"]))
        if field == "method":
            msg: dict[str, Any] = {"id": rid, "method": "m" * size}
        else:
            msg = {"id": rid, "method": "process/write", "params": {field: "A" * size}}
        return Frame(_dumps(msg), kind)
    if kind == "values":
        n = draw(st.sampled_from([300_000, 1_000_000]))
        text = f'{{"id":{rid},"method":"environment/info","params":[' + ",".join(["0"] * n) + "]}"
        return Frame(text.encode(), kind)
    if kind == "unknown-method":
        name = draw(
            st.one_of(
                st.text(max_size=30), st.sampled_from(["\ud800", "", "process/", "x" * 100_000])
            )
        )
        return Frame(_dumps({"id": rid, "method": name}), kind, rid=rid, method="unknown")
    if kind == "odd-id":
        method = draw(st.sampled_from(METHODS))
        return Frame(_dumps({"id": draw(odd_ids), "method": method, "params": {}}), kind)
    if kind == "batch":
        return Frame(b"[" + valid + b"," + valid + b"]", kind)
    if kind == "response":
        body = draw(
            st.sampled_from([{"result": {}}, {"error": {"code": 1, "message": "x"}}, {"error": 5}])
        )
        return Frame(_dumps({"id": draw(st.one_of(st.integers(), odd_ids)), **body}), kind)
    if kind == "non-object":
        return Frame(_dumps(draw(scalars)), kind)
    if kind == "duplicate-keys":
        return Frame(
            f'{{"id":{rid},"id":"dup","method":"environment/info","method":"process/read"}}'.encode(),
            kind,
        )
    if kind == "blank":
        return Frame(draw(st.sampled_from([b"", b" ", b"\t", b"\r"])), kind)
    # A notification: codex closes the connection on an unexpected one.
    method = draw(
        st.one_of(st.sampled_from(["initialized", "bogus/x", "\ud800"]), st.text(max_size=10))
    )
    return Frame(_dumps({"method": method, "params": draw(json_values)}), kind, may_close=True)


class Frames(list[Frame]):
    """A batch's frames; a short repr, since Hypothesis prints what it drew."""

    def __repr__(self) -> str:
        return f"<{len(self)} frames: " + ", ".join(f.kind for f in self) + ">"


@st.composite
def batch(draw: st.DrawFn, size: int, marker: str) -> tuple[bool, list[Frame]]:
    """(handshake first?, frames): ids 1..size are unique, so answers can be matched."""
    # Hypothesis starts from the simplest draw (all zeros): make that a handshake and
    # valid requests, so that short runs exercise live processes too.
    handshake = draw(st.integers(0, 9)) < 9
    frames = Frames()
    for rid in range(1, size + 1):
        # Notifications are rare: they (legitimately) end the connection.
        if draw(st.integers(0, 2)) == 2:
            frame = draw(garbage_frame(rid, marker))
            if frame.may_close and draw(st.integers(0, 3)) < 3:
                frame = draw(request_frame(rid, marker))
        else:
            frame = draw(request_frame(rid, marker))
        frames.append(frame)
    return handshake, frames
