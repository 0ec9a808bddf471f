"""The codec's integer types: exit codes are i32, seqs and sizes u64 (review observation 3).

codex (serde) types ``exitCode`` as i32 and every seq, size and wait as u64. One ``int``
hook for all of them made our client refuse the ``exitCode: -1`` our server sent for a
failed process (defect 11); these properties pin the two ranges apart.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unified_exec._protocol import _messages as m

I32 = st.integers(-(2**31), 2**31 - 1)
U64 = st.integers(0, 2**64 - 1)


def wire(value: object) -> object:
    return json.loads(json.dumps(m.unstructure(value)))


@given(seq=U64, code=I32)
def test_any_i32_exit_code_round_trips(seq: int, code: int) -> None:
    params = m.ExitedParams("p", seq, code)
    assert m.structure(wire(params), m.ExitedParams) == params
    result = m.ReadResult(chunks=[], next_seq=seq, exited=True, exit_code=code, closed=True)
    assert m.structure(wire(result), m.ReadResult) == result


@given(code=st.integers(2**31, 2**70) | st.integers(-(2**70), -(2**31) - 1))
def test_exit_codes_outside_i32_are_refused(code: int) -> None:
    with pytest.raises(m.ParamsError, match="invalid number"):
        m.structure({"processId": "p", "seq": 1, "exitCode": code}, m.ExitedParams)


@given(seq=st.integers(max_value=-1) | st.integers(min_value=2**64))
def test_seqs_outside_u64_are_refused(seq: int) -> None:
    with pytest.raises(m.ParamsError, match="invalid number"):
        m.structure({"processId": "p", "seq": seq, "exitCode": 0}, m.ExitedParams)
    with pytest.raises(m.ParamsError, match="invalid number"):
        m.structure({"processId": "p", "afterSeq": seq}, m.ReadParams)


@pytest.mark.parametrize("bad", [True, 1.0, "1", None, [1]])
def test_an_exit_code_must_be_an_integer(bad: object) -> None:
    with pytest.raises(m.ParamsError):
        m.structure({"processId": "p", "seq": 1, "exitCode": bad}, m.ExitedParams)


def test_a_failed_process_read_result_decodes() -> None:
    """The wire form of a process that failed on the server (no exit code, a failure)."""
    raw = {
        "chunks": [], "nextSeq": 3, "exited": False, "exitCode": None, "closed": True,
        "failure": "sandbox died", "sandboxDenied": False,
    }  # fmt: skip
    read = m.structure(raw, m.ReadResult)
    assert read.failure == "sandbox died" and read.exit_code is None and read.closed
