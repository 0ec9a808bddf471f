"""decode_frame: the fast path for big base64 chunks gives decode()'s answer, always."""

from __future__ import annotations

import os
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_exec._protocol import _jsonrpc as rpc
from unified_exec._protocol import _messages as m

DATA = os.urandom(12_000)


def _output(data: bytes = DATA, pid: str = "ue-1") -> bytes:
    params = m.output_params(pid, 5, "stdout", data)
    return rpc.encode_bytes(rpc.Notification(m.OUTPUT, params))


def _write(data: bytes = DATA) -> bytes:
    params = m.unstructure(m.WriteParams("p", data, write_id="3"))
    return rpc.encode_bytes(rpc.Request(7, m.PROCESS_WRITE, params))


def _normal(message: rpc.Message) -> Any:
    """The message with its chunk as the structure hook makes it: the bytes (what
    both ways hand on), or, where it is no base64, the text."""
    if isinstance(message, rpc.Request | rpc.Notification) and isinstance(message.params, dict):
        chunk = message.params.get("chunk")
        if isinstance(chunk, str):
            try:
                chunk = m._b64decode(chunk, bytes)
            except m.ParamsError:
                return message
            return attrs.evolve(message, params={**message.params, "chunk": chunk})
    return message


def _answers(frame: str | bytes, max_values: int) -> tuple[Any, Any]:
    try:
        want: Any = _normal(rpc.decode(frame, max_values=max_values))
    except rpc.MessageError as exc:
        want = ("refused", str(exc))
    try:
        got: Any = _normal(rpc.decode_frame(frame, max_values=max_values))
    except rpc.MessageError as exc:
        got = ("refused", str(exc))
    return got, want


def _same(frame: bytes, max_values: int = 1000) -> None:
    """The same answer both ways, for the frame as bytes (an ndjson line) and, where
    it is UTF-8, as text (a websocket text message)."""
    got, want = _answers(frame, max_values)
    assert got == want
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        return
    got, want_text = _answers(text, max_values)
    assert got == want_text


def test_a_big_output_chunk_comes_back_decoded() -> None:
    message = rpc.decode_frame(_output())
    assert isinstance(message, rpc.Notification)
    assert message.params["chunk"] == DATA
    assert m.structure(message.params, m.OutputParams).chunk == DATA
    request = rpc.decode_frame(_write())
    assert isinstance(request, rpc.Request)
    assert m.structure(request.params, m.WriteParams).chunk == DATA


def test_a_text_frame_takes_the_fast_path_too() -> None:
    """A websocket text message is a str: its chunk comes back as bytes as well, so
    the structure hook need not base64-decode it again."""
    message = rpc.decode_frame(_output().decode())
    assert isinstance(message, rpc.Notification)
    assert type(message.params["chunk"]) is bytes
    assert message.params["chunk"] == DATA


MUTATIONS = [
    lambda f: f,
    lambda f: f.replace(b'"seq":5', b'"seq":5,"seq":6'),  # duplicate key
    lambda f: f.replace(b'{"method"', b'{"method":"x","method"'),
    lambda f: f.replace(b'"stream"', b'"chunk":"","stream"'),  # the chunk key twice
    lambda f: f.replace(b'"seq":5', b'"seq":5,"x":"\\u0000"'),  # a U+0000 of its own
    lambda f: f.replace(b"/", b"\\/", 2),  # escapes in the chunk
    lambda f: f.replace(b'"chunk":"', b'"chunk":"!'),  # not base64
    lambda f: f.replace(b'"chunk":"', b'"chunk":"A'),  # bad length
    lambda f: f[:-2],  # cut off
    lambda f: f.replace(b'"seq":5', b'"seq":5,"n":[' + b"1," * 2000 + b"1]"),  # too many values
    lambda f: f.replace(b'"processId":"ue-1"', b'"processId":"\xff"'),  # not UTF-8
    lambda f: f.replace(b'"processId":"ue-1"', b'"x":{"chunk":"QUJD"},"processId":"ue-1"'),
    lambda f: f.replace(b'"params":{', b'"params":{"inner":{"chunk":"QUJD"},'),
    lambda f: f.replace(b'"chunk":"', b'"chunk" : "'),
    lambda f: f.replace(b'"params"', b'"result"'),
]


@pytest.mark.parametrize("mutate", MUTATIONS)
@pytest.mark.parametrize("make", [_output, _write])
def test_every_frame_gets_the_standard_answer(mutate: Any, make: Any) -> None:
    _same(mutate(make()))


@settings(max_examples=300, deadline=None)
@given(
    cut=st.integers(0, 200) | st.integers(-60, -1),
    junk=st.binary(max_size=4),
    tail=st.binary(max_size=8),
)
def test_spliced_frames_get_the_standard_answer(cut: int, junk: bytes, tail: bytes) -> None:
    frame = _output(DATA[:5000] + tail)
    _same(frame[:cut] + junk + frame[cut:])


@pytest.mark.parametrize("where", ["chunk", "processId"])
@pytest.mark.parametrize("make", [_output, _write])
def test_a_text_frame_with_a_lone_surrogate_gets_the_standard_answer(where: str, make: Any) -> None:
    """A str frame can hold what no UTF-8 can (a lone surrogate, from a peer's
    text message): the fast path must step aside, not raise UnicodeEncodeError."""
    text = make().decode()
    if where == "chunk":
        text = text.replace('"chunk":"', '"chunk":"\ud800', 1)
    else:
        text = text.replace('"p', '"\udc00p', 1)
    got, want = _answers(text, 1000)
    assert got == want
