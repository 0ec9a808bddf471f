"""Pure tests of the sans-IO codec: message params/results, the envelope, ndjson framing.

The wire shapes and error texts come from protocol-codex-0.169.md sections 1, 3 and 4:
camelCase keys, bytes as standard padded base64, serde-style -32602 messages, no
``"jsonrpc"`` member on output, ids echoed unchanged, one message per line.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_exec._protocol import _jsonrpc as rpc
from unified_exec._protocol import _messages as m

# --------------------------------------------------------------------------- strategies

TEXT = st.text()  # any unicode (no lone surrogates): ids, argv, env, paths
OPT_TEXT = st.none() | TEXT
U64 = st.integers(0, 2**64 - 1)
OPT_U64 = st.none() | U64
# Exit codes are i32 on the wire (codex), signed: a failed process never sends -1 any more,
# but a child can legitimately exit with any code a backend reports in that range.
I32 = st.integers(-(2**31), 2**31 - 1)
OPT_I32 = st.none() | I32
STREAM = st.sampled_from(["stdout", "stderr", "pty"])
CHUNK = st.binary(max_size=300)
JSON_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
JSON_OBJECT = st.dictionaries(TEXT, JSON, max_size=5)

# One entry per field of every attrs class in _messages (a test checks the coverage).
FIELDS: dict[type, dict[str, st.SearchStrategy[Any]]] = {
    m.InitializeParams: {"client_name": TEXT, "resume_session_id": OPT_TEXT},
    m.InitializeResult: {
        "session_id": TEXT,
        "environment_info": st.none() | JSON_OBJECT,
        "extensions": st.none() | st.lists(TEXT, max_size=5),
    },
    m.StartParams: {
        "process_id": TEXT,
        "argv": st.lists(TEXT, max_size=6),
        "cwd": TEXT,
        "env": st.dictionaries(TEXT, TEXT, max_size=6),
        "tty": st.booleans(),
        "pipe_stdin": st.booleans(),
        "arg0": OPT_TEXT,
        "tty_size": st.none() | st.lists(st.integers(0, 2**16 - 1), min_size=2, max_size=2),
    },
    m.StartResult: {"process_id": TEXT, "sandbox_type": TEXT},
    m.ReadParams: {
        "process_id": TEXT,
        "after_seq": OPT_U64,
        "max_bytes": OPT_U64,
        "wait_ms": OPT_U64,
    },
    m.ReadChunk: {"seq": U64, "stream": STREAM, "chunk": CHUNK},
    m.ReadResult: {
        "chunks": st.lists(st.builds(m.ReadChunk, seq=U64, stream=STREAM, chunk=CHUNK), max_size=4),
        "next_seq": U64,
        "exited": st.booleans(),
        "exit_code": OPT_I32,
        "closed": st.booleans(),
        "failure": OPT_TEXT,
        "sandbox_denied": st.booleans(),
    },
    m.WriteParams: {"process_id": TEXT, "chunk": CHUNK, "write_id": OPT_TEXT},
    m.WriteResult: {
        "status": st.sampled_from(["accepted", "unknownProcess", "stdinClosed", "starting"])
    },
    m.SignalParams: {"process_id": TEXT, "signal": st.just("interrupt")},
    m.TerminateParams: {"process_id": TEXT},
    m.TerminateResult: {"running": st.booleans()},
    m.ResizeParams: {"process_id": TEXT, "rows": U64, "cols": U64},
    m.CloseStdinParams: {"process_id": TEXT},
    m.OutputParams: {"process_id": TEXT, "seq": U64, "stream": STREAM, "chunk": CHUNK},
    m.ExitedParams: {
        "process_id": TEXT,
        "seq": U64,
        "exit_code": I32,
        "sandbox_denied": st.booleans(),
    },
    m.ClosedParams: {"process_id": TEXT, "seq": U64},
}
CLASSES = sorted(FIELDS, key=lambda c: c.__name__)


def instances(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **FIELDS[cls])


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


# Left off the wire while None: our extension fields, so codex never sees them, and
# the optional resumeSessionId, which a client sends only when it resumes.
EXTENSION_FIELDS = {
    (m.StartParams, "tty_size"),
    (m.InitializeResult, "extensions"),
    (m.InitializeParams, "resume_session_id"),
}


def wire_keys(cls: type, value: Any = None) -> set[str]:
    """The camelCase keys ``value`` (or any instance of ``cls``) may put on the wire."""
    return {
        camel(a.name)
        for a in attrs.fields(cls)
        if value is None
        or (cls, a.name) not in EXTENSION_FIELDS
        or getattr(value, a.name) is not None
    }


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------- coverage


def test_every_message_class_has_a_strategy_for_every_field() -> None:
    exported = {getattr(m, name) for name in m.__all__}
    message_classes = {obj for obj in exported if isinstance(obj, type) and attrs.has(obj)}
    assert message_classes == set(FIELDS)
    for cls, fields in FIELDS.items():
        assert set(fields) == {a.name for a in attrs.fields(cls)}, cls.__name__


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=60)
@given(data=st.data())
def test_round_trip_through_json(cls: type, data: st.DataObject) -> None:
    value = data.draw(instances(cls))
    wire = m.unstructure(value)
    assert isinstance(wire, dict)
    assert set(wire) == wire_keys(cls, value)
    assert all("_" not in key for key in wire)
    text = json.dumps(wire)
    back = m.structure(json.loads(text), cls)
    assert back == value
    assert type(back) is cls


@given(value=instances(m.OutputParams) | instances(m.WriteParams) | instances(m.ReadChunk))
def test_bytes_travel_as_standard_padded_base64(value: Any) -> None:
    wire = m.unstructure(value)
    assert wire["chunk"] == base64.b64encode(value.chunk).decode("ascii")
    assert base64.b64decode(wire["chunk"], validate=True) == value.chunk


@given(value=instances(m.ReadResult))
def test_read_result_chunks_on_the_wire(value: m.ReadResult) -> None:
    wire = m.unstructure(value)
    assert len(wire["chunks"]) == len(value.chunks)
    for raw, chunk in zip(wire["chunks"], value.chunks, strict=True):
        assert raw == {
            "seq": chunk.seq,
            "stream": chunk.stream,
            "chunk": base64.b64encode(chunk.chunk).decode("ascii"),
        }


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=25)
@given(data=st.data())
def test_unknown_extra_fields_are_ignored(cls: type, data: st.DataObject) -> None:
    value = data.draw(instances(cls))
    wire = m.unstructure(value)
    extra_keys = st.sampled_from(["x", "sandbox", "envPolicy", "process_id", "Seq"]) | TEXT
    extra = data.draw(
        st.dictionaries(extra_keys.filter(lambda k: k not in wire), JSON, min_size=1, max_size=3)
    )
    assert m.structure(through_json({**wire, **extra}), cls) == value


# --------------------------------------------------------------------------- concrete wire shapes


def test_start_params_wire_keys() -> None:
    params = m.StartParams(
        process_id="a/b cé",
        argv=["sh", "-c", "echo $0"],
        cwd="file:///tmp",
        env={"ONLY": "1"},
        tty=False,
        pipe_stdin=True,
        arg0="fancy",
    )
    assert m.unstructure(params) == {
        "processId": "a/b cé",
        "argv": ["sh", "-c", "echo $0"],
        "cwd": "file:///tmp",
        "env": {"ONLY": "1"},
        "tty": False,
        "pipeStdin": True,
        "arg0": "fancy",
    }  # no "ttySize": codex must never see our extension unless it is used


def test_extension_fields_only_on_the_wire_when_set() -> None:
    params = m.StartParams("p1", ["sh"], "file:///tmp", {}, tty=True, tty_size=[24, 80])
    wire = m.unstructure(params)
    assert wire["ttySize"] == [24, 80]
    assert m.structure(wire, m.StartParams) == params
    assert "extensions" not in m.unstructure(m.InitializeResult("s"))
    assert m.unstructure(m.InitializeResult("s", extensions=["process/resize"]))["extensions"] == [
        "process/resize"
    ]


def test_start_params_optional_fields_default() -> None:
    wire = {"processId": "p1", "argv": ["true"], "cwd": "file:///tmp", "env": {}, "tty": True}
    assert m.structure(wire, m.StartParams) == m.StartParams(
        process_id="p1", argv=["true"], cwd="file:///tmp", env={}, tty=True
    )


def test_read_result_wire_matches_the_doc() -> None:
    doc = {
        "chunks": [{"seq": 1, "stream": "stdout", "chunk": "Z290OmhlbGxvCg=="}],
        "nextSeq": 4,
        "exited": False,
        "exitCode": None,
        "closed": False,
        "failure": None,
        "sandboxDenied": False,
    }
    result = m.structure(doc, m.ReadResult)
    assert result == m.ReadResult(
        chunks=[m.ReadChunk(seq=1, stream="stdout", chunk=b"got:hello\n")],
        next_seq=4,
        exited=False,
        exit_code=None,
        closed=False,
    )
    assert m.unstructure(result) == doc
    assert set(m.unstructure(result)) == {
        "chunks",
        "nextSeq",
        "exited",
        "exitCode",
        "closed",
        "failure",
        "sandboxDenied",
    }


def test_write_params_wire_keys() -> None:
    params = m.WriteParams(process_id="p1", chunk=b"one\n", write_id="A")
    assert m.unstructure(params) == {"processId": "p1", "chunk": "b25lCg==", "writeId": "A"}


def test_write_params_write_id_is_optional_here() -> None:
    # codex requires writeId; ours accepts it missing (documented in _messages).
    assert m.structure({"processId": "p1", "chunk": ""}, m.WriteParams) == m.WriteParams(
        process_id="p1", chunk=b"", write_id=None
    )


def test_notification_wire_matches_the_doc() -> None:
    output = {"processId": "p1", "seq": 1, "stream": "stdout", "chunk": "Z290OmhlbGxvCg=="}
    exited = {"processId": "p1", "seq": 3, "exitCode": 3, "sandboxDenied": False}
    closed = {"processId": "p1", "seq": 4}
    assert m.unstructure(m.OutputParams("p1", 1, "stdout", b"got:hello\n")) == output
    assert m.unstructure(m.ExitedParams("p1", 3, 3)) == exited
    assert m.unstructure(m.ClosedParams("p1", 4)) == closed
    assert set(output) == {"processId", "seq", "stream", "chunk"}
    assert set(exited) == {"processId", "seq", "exitCode", "sandboxDenied"}
    assert set(closed) == {"processId", "seq"}
    assert m.structure(output, m.OutputParams) == m.OutputParams("p1", 1, "stdout", b"got:hello\n")
    assert m.structure(exited, m.ExitedParams) == m.ExitedParams("p1", 3, 3)
    assert m.structure(closed, m.ClosedParams) == m.ClosedParams("p1", 4)


def test_other_wire_shapes() -> None:
    assert m.unstructure(m.ReadParams("p1", after_seq=3, wait_ms=2000)) == {
        "processId": "p1",
        "afterSeq": 3,
        "maxBytes": None,
        "waitMs": 2000,
    }
    assert m.unstructure(m.StartResult("p1")) == {"processId": "p1", "sandboxType": "none"}
    assert m.unstructure(m.SignalParams("p1", "interrupt")) == {
        "processId": "p1",
        "signal": "interrupt",
    }
    assert m.unstructure(m.TerminateResult(running=True)) == {"running": True}
    assert m.unstructure(m.WriteResult("stdinClosed")) == {"status": "stdinClosed"}
    assert m.unstructure(m.InitializeParams("me")) == {"clientName": "me"}
    assert m.unstructure(m.InitializeParams("me", "s1")) == {
        "clientName": "me",
        "resumeSessionId": "s1",
    }


def test_initialize_result_from_the_doc() -> None:
    env_info = {
        "shell": {"name": "bash", "path": "/bin/bash"},
        "executorVersion": "0.169.0",
        "cwd": "file:///tmp",
        "prependPathDirs": ["file:///opt/codex-path"],
        "temporaryDirectories": [],
        "capabilities": {"networkProxyLaunch": True, "windowsMxc": False},
    }
    wire = {"sessionId": "51694e57-b41a-4cdb-bf5e-d29e1c4803a7", "environmentInfo": env_info}
    result = m.structure(wire, m.InitializeResult)
    assert result.session_id == "51694e57-b41a-4cdb-bf5e-d29e1c4803a7"
    assert result.environment_info == env_info
    assert result.extensions is None
    assert m.structure({"sessionId": "s"}, m.InitializeResult) == m.InitializeResult("s")


# --------------------------------------------------------------------------- errors

START_OK: dict[str, Any] = {
    "processId": "p1",
    "argv": ["true"],
    "cwd": "file:///tmp",
    "env": {},
    "tty": False,
}


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    ("params", "cls", "message"),
    [
        # missing fields
        ({}, m.InitializeParams, "missing field `clientName`"),
        (_without(START_OK, "env"), m.StartParams, "missing field `env`"),
        (_without(START_OK, "processId"), m.StartParams, "missing field `processId`"),
        ({"processId": "p1"}, m.WriteParams, "missing field `chunk`"),
        ({"chunk": ""}, m.WriteParams, "missing field `processId`"),
        ({"processId": "p1"}, m.SignalParams, "missing field `signal`"),
        ({"processId": "p1", "seq": 1, "stream": "stdout"}, m.OutputParams,
         "missing field `chunk`"),
        ({"processId": "p1", "seq": 3}, m.ExitedParams, "missing field `exitCode`"),
        # wrong scalar types
        ({**START_OK, "processId": 5}, m.StartParams,
         "invalid type: number, expected a string"),
        ({"processId": "p", "chunk": "", "writeId": 7}, m.WriteParams,
         "invalid type: number, expected a string"),
        ({**START_OK, "env": {"A": 1}}, m.StartParams,
         "invalid type: number, expected a string"),
        ({**START_OK, "argv": [1]}, m.StartParams, "invalid type: number, expected a string"),
        ({**START_OK, "argv": "ls"}, m.StartParams,
         'invalid type: string "ls", expected a sequence'),
        ({**START_OK, "tty": "yes"}, m.StartParams,
         'invalid type: string "yes", expected a boolean'),
        ({**START_OK, "tty": 1}, m.StartParams, "invalid type: number, expected a boolean"),
        ({**START_OK, "tty": None}, m.StartParams, "invalid type: null, expected a boolean"),
        ({**START_OK, "arg0": 0}, m.StartParams, "invalid type: number, expected a string"),
        ({"processId": "p", "afterSeq": True}, m.ReadParams,
         "invalid type: boolean `true`, expected u64"),
        ({"processId": "p", "afterSeq": 1.5}, m.ReadParams, "invalid number"),
        ({"processId": "p", "waitMs": "10"}, m.ReadParams,
         'invalid type: string "10", expected u64'),
        ({"running": "yes"}, m.TerminateResult, 'invalid type: string "yes", expected a boolean'),
        # negative integers
        ({"processId": "p", "afterSeq": -1}, m.ReadParams,
         "invalid number"),
        ({"processId": "p", "maxBytes": -5}, m.ReadParams,
         "invalid number"),
        ({"processId": "p", "seq": -2}, m.ClosedParams,
         "invalid number"),
        # enums
        ({"processId": "p", "signal": "kill"}, m.SignalParams,
         "unknown variant `kill`, expected `interrupt`"),
        ({"processId": "p", "signal": 9}, m.SignalParams,
         "invalid type: number, expected a string"),
        ({"status": "nope"}, m.WriteResult,
         "unknown variant `nope`, expected one of `accepted`, `unknownProcess`, `stdinClosed`, "
         "`starting`"),
        ({"processId": "p", "seq": 1, "stream": "tty", "chunk": ""}, m.OutputParams,
         "unknown variant `tty`, expected one of `stdout`, `stderr`, `pty`"),
        # serde names the unexpected kind without an article: "sequence", "map"
        ({**START_OK, "env": []}, m.StartParams, "invalid type: sequence, expected a map"),
        ({**START_OK, "argv": {}}, m.StartParams, "invalid type: map, expected a sequence"),
    ],
)  # fmt: skip
def test_structure_errors_are_serde_like(params: Any, cls: type, message: str) -> None:
    with pytest.raises(m.ParamsError) as info:
        m.structure(params, cls)
    assert str(info.value) == message


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_null_params_rejected(cls: type) -> None:
    with pytest.raises(m.ParamsError) as info:
        m.structure(None, cls)
    assert str(info.value) == f"invalid type: null, expected struct {cls.__name__}"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("x", 'invalid type: string "x", expected struct ReadParams'),
        (3, "invalid type: number, expected struct ReadParams"),
        (True, "invalid type: boolean `true`, expected struct ReadParams"),
        ([], "invalid type: sequence, expected struct ReadParams"),
        ([{"processId": "p"}], "invalid type: sequence, expected struct ReadParams"),
    ],
)
def test_non_object_params_rejected(params: Any, message: str) -> None:
    with pytest.raises(m.ParamsError) as info:
        m.structure(params, m.ReadParams)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "chunk",
    ["!!!!", "abc", "Z290OmhlbGxvCg", "QQ==QQ==", "QQ==\n", " QQ==", "QQ=", "é", "Z2=9"],
)
def test_bad_base64_rejected(chunk: str) -> None:
    with pytest.raises(m.ParamsError, match="base64"):
        m.structure({"processId": "p", "chunk": chunk, "writeId": "w"}, m.WriteParams)
    with pytest.raises(m.ParamsError, match="base64"):
        m.structure({"processId": "p", "seq": 1, "stream": "pty", "chunk": chunk}, m.OutputParams)


@pytest.mark.parametrize(
    ("chunk", "why"),
    [("!!!!", "Only base64 data is allowed"), ("QQ==QQ==", "Excess data after padding"),
     ("Z2=9", "Discontinuous padding not allowed"), ("abc", "Incorrect padding")],
)  # fmt: skip
def test_bad_base64_says_why_in_binasciis_words(chunk: str, why: str) -> None:
    """The fast decoder only says "invalid"; the error text stays what peers saw."""
    with pytest.raises(m.ParamsError) as info:
        m.structure({"processId": "p", "chunk": chunk, "writeId": "w"}, m.WriteParams)
    assert str(info.value) == f"invalid base64: {why}"


@given(data=st.binary(max_size=5000))
def test_base64_decode_matches_binascii_strict(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert m.structure({"processId": "p", "chunk": text}, m.WriteParams).chunk == data


@given(pid=TEXT, seq=U64, stream=STREAM, chunk=CHUNK)
def test_raw_unstructure_encodes_as_the_base64_one(
    pid: str, seq: int, stream: Any, chunk: bytes
) -> None:
    """bytes left raw are written as base64 by the encoder: the same frame, one pass."""
    params = m.OutputParams(pid, seq, stream, chunk)
    assert m.output_params(pid, seq, stream, chunk) == m.unstructure_raw(params)
    raw = rpc.Notification(m.OUTPUT, m.unstructure_raw(params))
    b64 = rpc.Notification(m.OUTPUT, m.unstructure(params))
    assert rpc.encode(raw) == rpc.encode(b64)
    assert rpc.encode_bytes(raw) == rpc.encode(b64).encode("utf-8")
    result = m.ReadResult([m.ReadChunk(seq, stream, chunk)], seq + 1, False, None, False)
    assert rpc.encode(rpc.Response(1, m.unstructure_raw(result))) == rpc.encode(
        rpc.Response(1, m.unstructure(result))
    )


def test_encode_matches_the_standard_library_text() -> None:
    """msgspec writes what json.dumps(separators=(",", ":"), ensure_ascii=False) wrote."""
    params = {"s": '\x7f\x00\x1f"\\\n\t\u2028é', "big": 2**70, "neg": -1, "f": 0.5, "n": None}
    text = rpc.encode(rpc.Notification("x", params))
    wire = {"method": "x", "params": params}
    assert text == json.dumps(wire, separators=(",", ":"), ensure_ascii=False)
    assert rpc.encode(rpc.Notification("x", {"c": b"\x00\xff"})) == (
        '{"method":"x","params":{"c":"AP8="}}'
    )
    # A lone surrogate takes the standard-library path, bytes included.
    assert rpc.encode(rpc.Notification("x", {"c": b"hi", "s": "\ud800"})) == (
        '{"method":"x","params":{"c":"aGk=","s":"\ufffd"}}'
    )


def test_non_string_base64_rejected() -> None:
    with pytest.raises(m.ParamsError, match=r"^invalid type: number, expected "):
        m.structure({"processId": "p", "chunk": 5}, m.WriteParams)
    with pytest.raises(m.ParamsError, match=r"^invalid type: null, expected "):
        m.structure({"processId": "p", "chunk": None}, m.WriteParams)


def test_empty_chunk_allowed() -> None:
    assert m.structure({"processId": "p", "chunk": ""}, m.WriteParams).chunk == b""


_READ_OK: dict[str, Any] = {"nextSeq": 1, "exited": False, "exitCode": None, "closed": False}


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        (None, "invalid type: null, expected a sequence"),
        ("abc", 'invalid type: string "abc", expected a sequence'),
        ({}, "invalid type: map, expected a sequence"),
        ("", 'invalid type: string "", expected a sequence'),
        ([5], "invalid type: number, expected struct ReadChunk"),
        ([{"seq": 1, "stream": "stdout"}], "missing field `chunk`"),
        ([{"seq": "1", "stream": "stdout", "chunk": ""}], 'invalid type: string "1", expected u64'),
        ([{"seq": 1, "stream": "tty", "chunk": ""}],
         "unknown variant `tty`, expected one of `stdout`, `stderr`, `pty`"),
    ],
)  # fmt: skip
def test_nested_chunk_errors_are_serde_like(chunks: Any, message: str) -> None:
    with pytest.raises(m.ParamsError) as info:
        m.structure({**_READ_OK, "chunks": chunks}, m.ReadResult)
    assert str(info.value) == message


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_any_wrong_field_value_gives_params_error_or_a_faithful_value(
    cls: type, data: st.DataObject
) -> None:
    """Swap one field for an arbitrary JSON value: structure() either raises ParamsError
    (never another exception) or accepts a value that unstructures back to the same JSON."""
    wire = through_json(m.unstructure(data.draw(instances(cls))))
    key = data.draw(st.sampled_from(sorted(wire)))
    wire[key] = data.draw(st.sampled_from([None, {}, [], "", 0, -1, True, 1.5]) | JSON)
    try:
        value = m.structure(wire, cls)
    except m.ParamsError:
        return
    assert through_json(m.unstructure(value)).get(key) == wire[key]


@pytest.mark.parametrize("env_info", [[], [1], 5, "x", True])
def test_initialize_result_bad_environment_info_rejected(env_info: Any) -> None:
    with pytest.raises(m.ParamsError):
        m.structure({"sessionId": "s", "environmentInfo": env_info}, m.InitializeResult)


# --------------------------------------------------------------------------- envelope

IDS = st.integers() | TEXT
METHODS = TEXT
PARAMS = st.none() | JSON_OBJECT | st.lists(JSON, max_size=3)
MESSAGES: st.SearchStrategy[rpc.Message] = st.one_of(
    st.builds(rpc.Request, id=IDS, method=METHODS, params=PARAMS),
    st.builds(rpc.Notification, method=METHODS, params=PARAMS),
    st.builds(rpc.Response, id=IDS, result=JSON),
    st.builds(rpc.ErrorResponse, id=IDS, code=st.integers(), message=TEXT),
)


@given(message=MESSAGES)
def test_encode_never_emits_jsonrpc_and_round_trips(message: rpc.Message) -> None:
    text = rpc.encode(message)
    assert "\n" not in text and "\r" not in text
    obj = json.loads(text)
    assert isinstance(obj, dict)
    assert "jsonrpc" not in obj
    assert rpc.decode(text) == message
    assert rpc.decode(text.encode("utf-8")) == message


@given(message=MESSAGES)
def test_encode_bytes_is_encode_as_utf8(message: rpc.Message) -> None:
    assert rpc.encode_bytes(message) == rpc.encode(message).encode("utf-8")


@given(message=MESSAGES)
def test_decode_accepts_jsonrpc_member(message: rpc.Message) -> None:
    obj = {"jsonrpc": "2.0", **rpc.to_wire(message)}
    assert rpc.decode(json.dumps(obj)) == message


@given(id_=IDS, data=st.data())
def test_ids_echo_unchanged(id_: int | str, data: st.DataObject) -> None:
    request = rpc.decode(json.dumps({"id": id_, "method": "process/read", "params": {}}))
    assert isinstance(request, rpc.Request)
    assert request.id == id_ and type(request.id) is type(id_)
    reply = data.draw(
        st.sampled_from(
            [rpc.Response(id=request.id, result={}), rpc.ErrorResponse(request.id, -32602, "x")]
        )
    )
    echoed = json.loads(rpc.encode(reply))["id"]
    assert echoed == id_ and type(echoed) is type(id_)


def test_wire_shapes_of_the_envelope() -> None:
    assert json.loads(rpc.encode(rpc.Request(7, "process/read", {"processId": "p"}))) == {
        "id": 7,
        "method": "process/read",
        "params": {"processId": "p"},
    }
    assert json.loads(rpc.encode(rpc.Response(7, {}))) == {"id": 7, "result": {}}
    assert json.loads(rpc.encode(rpc.ErrorResponse(-1, -32600, "bad"))) == {
        "error": {"code": -32600, "message": "bad"},
        "id": -1,
    }
    assert json.loads(rpc.encode(rpc.Notification("initialized"))) == {"method": "initialized"}
    assert rpc.encode(rpc.Response("abc", None)) == '{"id":"abc","result":null}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"id": 7, "method": "process/read", "params": {"processId": "p"}}',
         rpc.Request(7, "process/read", {"processId": "p"})),
        ('{"jsonrpc": "2.0", "id": "abc", "method": "initialize"}',
         rpc.Request("abc", "initialize", None)),
        ('{"id": 7, "result": {}}', rpc.Response(7, {})),
        ('{"id": 7, "result": null}', rpc.Response(7, None)),
        ('{"error": {"code": -32600, "message": "m"}, "id": -1}',
         rpc.ErrorResponse(-1, -32600, "m")),
        ('{"jsonrpc": "2.0", "error": {"code": -32601, "message": "no"}, "id": "x"}',
         rpc.ErrorResponse("x", -32601, "no")),
        ('{"method": "process/output", "params": {"seq": 1}}',
         rpc.Notification("process/output", {"seq": 1})),
        ('{"method": "initialized"}', rpc.Notification("initialized", None)),
        ('{"method": "initialized", "params": null}', rpc.Notification("initialized", None)),
    ],
)  # fmt: skip
def test_classification(text: str, expected: rpc.Message) -> None:
    decoded = rpc.decode(text)
    assert decoded == expected
    assert type(decoded) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "not json",
        '{"id": 1, "result": {}} x',
        '{"a": 1}\n{"b": 2}',
        '{"id": 1, "result": {}}\n{"id": 2, "result": {}}',
        b'{"id": 1, "result": "\xff"}',
    ],
)
def test_bad_json_raises_message_error(text: str | bytes) -> None:
    with pytest.raises(rpc.MessageError):
        rpc.decode(text)


@pytest.mark.parametrize(
    "text", ["[]", '[{"id": 1, "result": {}}]', "1", '"s"', "null", "true", "2.5"]
)
def test_batches_and_non_objects_rejected(text: str) -> None:
    with pytest.raises(rpc.MessageError) as info:
        rpc.decode(text)
    assert str(info.value) == "expected a JSON-RPC object"


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        '{"id": 1}',
        '{"result": 1}',
        '{"id": true, "result": 1}',
        '{"id": null, "result": 1}',
        '{"id": 1.5, "result": 1}',
        '{"id": [1], "method": "x"}',
        '{"id": {}, "method": "x"}',
        '{"method": 5}',
        '{"method": null, "id": 1}',
        '{"error": "boom", "id": 1}',
        '{"error": {"code": "x", "message": "m"}, "id": 1}',
        '{"error": {"code": 1}, "id": 1}',
        '{"error": {"message": "m"}, "id": 1}',
    ],
)
def test_malformed_messages_rejected(text: str) -> None:
    with pytest.raises(rpc.MessageError):
        rpc.decode(text)


# --------------------------------------------------------------------------- ndjson framing


def _pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def _feed_all(decoder: rpc.NdjsonDecoder, pieces: list[bytes]) -> list[bytes | rpc.MessageError]:
    out: list[bytes | rpc.MessageError] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return out


@settings(max_examples=150)
@given(
    messages=st.lists(MESSAGES, max_size=8),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    data=st.data(),
)
def test_ndjson_any_split_yields_the_lines_in_order(
    messages: list[rpc.Message], ending: bytes, data: st.DataObject
) -> None:
    lines = [rpc.encode(msg).encode("utf-8") for msg in messages]
    stream = b"".join(line + ending for line in lines)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    decoder = rpc.NdjsonDecoder()
    out = _feed_all(decoder, _pieces(stream, cuts))
    assert out == lines
    assert decoder.pending == 0
    assert [rpc.decode(line) for line in out] == messages


@given(messages=st.lists(MESSAGES, min_size=1, max_size=4), data=st.data())
def test_ndjson_holds_an_incomplete_last_line(
    messages: list[rpc.Message], data: st.DataObject
) -> None:
    lines = [rpc.encode(msg).encode("utf-8") for msg in messages]
    stream = b"\n".join(lines)  # no newline after the last one
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    decoder = rpc.NdjsonDecoder()
    assert _feed_all(decoder, _pieces(stream, cuts)) == lines[:-1]
    assert decoder.pending == len(lines[-1])
    assert decoder.feed(b"\n") == lines[-1:]
    assert decoder.pending == 0


MAX = 64
SHORT_LINE = (
    st.text(st.characters(codec="ascii", exclude_characters="\r\n", min_codepoint=32), min_size=1)
    .filter(lambda s: s.strip() != "")
    .map(str.encode)
    .filter(lambda b: len(b) <= MAX)
)


def _overlong_case(
    before: list[bytes], long_line: bytes, after: list[bytes], ending: bytes
) -> bytes:
    return b"".join(line + ending for line in [*before, long_line, *after])


def _check_overlong(out: list[bytes | rpc.MessageError], before: list[bytes], after: list[bytes]):
    errors = [i for i, item in enumerate(out) if isinstance(item, rpc.MessageError)]
    assert len(errors) == 1, out
    assert out[: errors[0]] == before
    assert out[errors[0] + 1 :] == after
    assert str(out[errors[0]]) == f"message longer than {MAX} bytes"


@given(
    before=st.lists(SHORT_LINE, max_size=3),
    after=st.lists(SHORT_LINE, max_size=3),
    long_size=st.integers(2 * MAX + 1, 5 * MAX),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    data=st.data(),
)
def test_ndjson_overlong_line_fed_in_small_pieces_resynchronises(
    before: list[bytes], after: list[bytes], long_size: int, ending: bytes, data: st.DataObject
) -> None:
    """Pieces of at most MAX bytes: the buffer must overflow while the long line is open."""
    stream = _overlong_case(before, b"x" * long_size, after, ending)
    sizes = data.draw(st.lists(st.integers(1, MAX), min_size=len(stream), max_size=len(stream)))
    cuts, pos = [], 0
    for size in sizes:
        pos += size
        if pos >= len(stream):
            break
        cuts.append(pos)
    decoder = rpc.NdjsonDecoder(max_line=MAX)
    _check_overlong(_feed_all(decoder, _pieces(stream, cuts)), before, after)
    assert decoder.pending == 0
    # still decoding afterwards
    assert decoder.feed(b'{"id":1,"result":{}}\n') == [b'{"id":1,"result":{}}']


def test_ndjson_overlong_line_byte_by_byte() -> None:
    stream = b"ok1\n" + b"y" * (3 * MAX) + b"\nok2\r\nok3\n"
    decoder = rpc.NdjsonDecoder(max_line=MAX)
    out = _feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))])
    _check_overlong(out, [b"ok1"], [b"ok2", b"ok3"])


@given(
    before=st.lists(SHORT_LINE, max_size=3),
    after=st.lists(SHORT_LINE, max_size=3),
    long_size=st.integers(MAX + 1, 4 * MAX),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    data=st.data(),
)
def test_ndjson_overlong_line_refused_however_split(
    before: list[bytes], after: list[bytes], long_size: int, ending: bytes, data: st.DataObject
) -> None:
    """The docstring's contract: a line longer than max_line is refused, one error, and
    the lines around it still come through, whatever the read sizes were."""
    stream = _overlong_case(before, b"x" * long_size, after, ending)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    decoder = rpc.NdjsonDecoder(max_line=MAX)
    _check_overlong(_feed_all(decoder, _pieces(stream, cuts)), before, after)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("size", [1, MAX - 1, MAX])
def test_ndjson_line_of_at_most_max_line_bytes_accepted_however_split(
    size: int, ending: bytes
) -> None:
    """Only lines *longer* than max_line are refused, whatever the line ending and split."""
    line = b"z" * size
    stream = line + ending + b"next" + ending
    splits = [[stream[:cut], stream[cut:]] for cut in range(len(stream) + 1)]
    splits.append([stream[i : i + 1] for i in range(len(stream))])
    for pieces in splits:
        decoder = rpc.NdjsonDecoder(max_line=MAX)
        assert _feed_all(decoder, pieces) == [line, b"next"], [len(p) for p in pieces]
