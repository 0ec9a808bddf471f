"""The sans-IO decoder's bounds (codex #33013) and the encoder's UTF-8 guarantee."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_exec import InvalidRequestError
from unified_exec._protocol import _jsonrpc as rpc
from unified_exec._protocol._limits import Limits

TEXT = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(',[]{}":\\ '))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=40,
)


def _count(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(_count(v) for v in value.values())
    return 1


@settings(max_examples=300)
@given(value=JSON, indent=st.sampled_from([None, 1]))
def test_count_json_values_is_exact(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    assert rpc.count_json_values(text) == _count(value)


def test_too_many_values_are_refused_before_parsing() -> None:
    message = {"id": 1, "method": "m", "params": [0] * 100}
    text = json.dumps(message)
    assert isinstance(rpc.decode(text, max_values=200), rpc.Request)
    with pytest.raises(rpc.MessageError, match="more than 50 JSON values"):
        rpc.decode(text, max_values=50)


def test_a_big_string_is_one_value() -> None:
    text = json.dumps({"id": 1, "method": "process/write", "params": {"chunk": "A" * 10**6}})
    assert isinstance(rpc.decode(text, max_values=10), rpc.Request)


@pytest.mark.parametrize(
    "text",
    [
        '{"id":1,"id":2,"method":"m"}',
        '{"id":1,"method":"m","params":{"processId":"a","processId":"b"}}',
        b'{"id":1,"method":"m","params":[{"k":1,"k":1}]}',
    ],
)
def test_duplicate_keys_are_refused(text: str | bytes) -> None:
    with pytest.raises(rpc.MessageError, match="duplicate field"):
        rpc.decode(text)


def test_invalid_utf8_is_a_message_error() -> None:
    with pytest.raises(rpc.MessageError, match="invalid UTF-8"):
        rpc.decode(b'{"id":1,"method":"\xff"}')


@given(text=st.text())
def test_encode_is_always_utf8_encodable(text: str) -> None:
    """r16: a lone surrogate (from a \\ud800 escape a peer sent) becomes U+FFFD."""
    out = rpc.encode(rpc.ErrorResponse(id=1, code=-32601, message=text))
    out.encode("utf-8")  # never raises
    decoded = rpc.decode(out)
    assert isinstance(decoded, rpc.ErrorResponse)
    expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    assert decoded.message == expected


@pytest.mark.parametrize("field", ["max_message_bytes", "max_in_flight", "max_write_ids"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_limits_refuse_non_positive_values(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequestError, match=field):
        Limits(**{field: value})
