"""ExecRequest validation, ProcessState transitions and WriteStatus wire values.

A bad request must fail before anything is spawned or sent, with InvalidRequestError
(also a ValueError) naming the field at fault; a good one is normalised so backends see
one shape only.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from unified_exec import (
    ExecRequest,
    InvalidRequestError,
    ProcessState,
    UnifiedExecError,
    WriteStatus,
)


class BytesPath(os.PathLike[bytes]):
    """A PathLike that yields bytes: the child's cwd must be text."""

    def __fspath__(self) -> bytes:
        return b"/tmp"


class TextPath(os.PathLike[str]):
    """A PathLike that is not a pathlib path."""

    def __fspath__(self) -> str:
        return "/srv/work"


# -- ExecRequest: good input -----------------------------------------------------------


def test_defaults() -> None:
    req = ExecRequest(["ls"])
    assert req.argv == ("ls",)
    assert req.cwd is None
    assert req.env is None
    assert req.tty is False
    assert req.pipe_stdin is False
    assert req.arg0 is None
    assert req.process_id is None
    assert req.size == (24, 80)


def test_good_input_is_normalised() -> None:
    """Backends get tuples and str paths whatever sequence or PathLike the caller used."""
    req = ExecRequest(
        ["sh", "-c", "echo hi"],
        cwd=pathlib.Path("/tmp"),
        env={"A": "1", "EMPTY": ""},
        tty=True,
        pipe_stdin=True,
        arg0="-sh",
        process_id="p-1",
        size=[50, 132],
    )
    assert req.argv == ("sh", "-c", "echo hi")
    assert type(req.argv) is tuple
    assert req.cwd == "/tmp"
    assert type(req.cwd) is str
    assert req.env == {"A": "1", "EMPTY": ""}
    assert req.tty is True
    assert req.pipe_stdin is True
    assert req.arg0 == "-sh"
    assert req.process_id == "p-1"
    assert req.size == (50, 132)
    assert type(req.size) is tuple


@pytest.mark.parametrize("cwd", [pathlib.PurePosixPath("/a/b"), TextPath(), "rel/dir"])
def test_cwd_accepts_str_and_text_pathlike(cwd: Any) -> None:
    assert ExecRequest(["ls"], cwd=cwd).cwd == os.fspath(cwd)


def test_argv_tuple_is_accepted() -> None:
    assert ExecRequest(("ls", "-l")).argv == ("ls", "-l")


def test_empty_env_is_a_whole_empty_environment() -> None:
    """``{}`` means "no variables at all", not "inherit": it must not collapse to None."""
    assert ExecRequest(["ls"], env={}).env == {}


def test_env_is_copied() -> None:
    """Mutating the caller's dict later must not change a validated request."""
    env = {"A": "1"}
    req = ExecRequest(["ls"], env=env)
    env["B=C"] = "sneaked in"
    env["A"] = "2"
    assert req.env == {"A": "1"}


@pytest.mark.parametrize("size", [(1, 1), (0xFFFF, 0xFFFF), (24, 80)])
def test_size_bounds_are_inclusive(size: tuple[int, int]) -> None:
    assert ExecRequest(["ls"], size=size).size == size


@given(
    argv=st.lists(
        st.text(st.characters(blacklist_characters="\0", codec="utf-8")), min_size=1, max_size=5
    ).filter(lambda a: a[0] != "")
)
def test_any_nul_free_argv_round_trips(argv: list[str]) -> None:
    assert ExecRequest(argv).argv == tuple(argv)


@given(
    argv=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=4),
    where=st.integers(0, 3),
    pos=st.integers(0, 5),
)
def test_nul_anywhere_in_argv_is_rejected(argv: list[str], where: int, pos: int) -> None:
    """C strings end at NUL: a silently truncated argument would run something else."""
    i = where % len(argv)
    arg = argv[i]
    argv[i] = arg[: pos % (len(arg) + 1)] + "\0" + arg[pos % (len(arg) + 1) :]
    with pytest.raises(InvalidRequestError, match="argv"):
        ExecRequest(argv)


# -- ExecRequest: bad input --------------------------------------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    # argv
    ({"argv": []}, r"argv must not be empty"),
    ({"argv": ()}, r"argv must not be empty"),
    ({"argv": "ls -l"}, r"argv must be a sequence of str, not str"),
    ({"argv": b"ls"}, r"argv must be a sequence of str, not bytes"),
    ({"argv": None}, r"argv must be a sequence"),
    ({"argv": 5}, r"argv must be a sequence"),
    ({"argv": iter(["ls"])}, r"argv must be a sequence"),
    ({"argv": {"ls"}}, r"argv must be a sequence"),
    ({"argv": ["ls", 1]}, r"argv items must be str"),
    ({"argv": [b"ls"]}, r"argv items must be str"),
    ({"argv": ["ls", None]}, r"argv items must be str"),
    ({"argv": [pathlib.Path("/bin/ls")]}, r"argv items must be str"),
    ({"argv": ["ls", "a\0b"]}, r"argv must not contain NUL"),
    ({"argv": [""]}, r"argv\[0\] must not be empty"),
    # cwd
    ({"cwd": ""}, r"cwd must not be empty"),
    ({"cwd": "/tmp\0x"}, r"cwd must not contain NUL"),
    ({"cwd": b"/tmp"}, r"cwd must be str or os.PathLike, not bytes"),
    ({"cwd": 3}, r"cwd must be str or os.PathLike"),
    ({"cwd": BytesPath()}, r"cwd must be a text path"),
    # env
    ({"env": [("A", "1")]}, r"env must be a mapping"),
    ({"env": "A=1"}, r"env must be a mapping"),
    ({"env": {"": "x"}}, r"invalid environment variable name ''"),
    ({"env": {"A=B": "x"}}, r"invalid environment variable name 'A=B'"),
    ({"env": {"=A": "x"}}, r"invalid environment variable name"),
    ({"env": {"A": 1}}, r"env entries must be str to str"),
    ({"env": {"A": None}}, r"env entries must be str to str"),
    ({"env": {"A": b"1"}}, r"env entries must be str to str"),
    ({"env": {1: "x"}}, r"env entries must be str to str"),
    ({"env": {b"A": "x"}}, r"env entries must be str to str"),
    ({"env": {"A\0B": "x"}}, r"env must not contain NUL"),
    ({"env": {"A": "x\0y"}}, r"env must not contain NUL"),
    # tty / pipe_stdin
    ({"tty": 1}, r"tty must be a bool"),
    ({"tty": 0}, r"tty must be a bool"),
    ({"tty": "yes"}, r"tty must be a bool"),
    ({"tty": None}, r"tty must be a bool"),
    ({"pipe_stdin": 1}, r"pipe_stdin must be a bool"),
    ({"pipe_stdin": None}, r"pipe_stdin must be a bool"),
    # arg0 / process_id
    ({"arg0": 5}, r"arg0 must be str or None"),
    ({"arg0": b"sh"}, r"arg0 must be str or None"),
    ({"arg0": "s\0h"}, r"arg0 must not contain NUL"),
    ({"process_id": ""}, r"process_id must not be empty"),
    ({"process_id": 7}, r"process_id must be str or None"),
    ({"process_id": "p\0"}, r"process_id must not contain NUL"),
    # size
    ({"size": (0, 80)}, r"rows must be an int in 1\.\.65535, got 0"),
    ({"size": (24, 0)}, r"cols must be an int in 1\.\.65535, got 0"),
    ({"size": (-1, 80)}, r"rows must be an int"),
    ({"size": (0x10000, 80)}, r"rows must be an int in 1\.\.65535, got 65536"),
    ({"size": (24, 0x10000)}, r"cols must be an int"),
    ({"size": (24.0, 80)}, r"rows must be an int"),
    ({"size": (True, 80)}, r"rows must be an int"),
    ({"size": (24, False)}, r"cols must be an int"),
    ({"size": ("24", "80")}, r"rows must be an int"),
    ({"size": (24,)}, r"size must be \(rows, cols\)"),
    ({"size": (24, 80, 1)}, r"size must be \(rows, cols\)"),
    ({"size": None}, r"size must be \(rows, cols\)"),
    ({"size": 24}, r"size must be \(rows, cols\)"),
]


# ids without object addresses: every pytest-xdist worker must collect the same names
IDS = [re.sub(r" at 0x[0-9a-f]+", "", repr(k)) for k, _ in BAD]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=IDS)
def test_bad_input_is_rejected(kwargs: dict[str, Any], message: str) -> None:
    """Each bad field gets InvalidRequestError with a message naming the field."""
    kwargs = {"argv": ["ls"], **kwargs}
    with pytest.raises(InvalidRequestError, match=message) as info:
        ExecRequest(**kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UnifiedExecError)


def test_evolve_revalidates() -> None:
    """A frozen request cannot be turned into a bad one by evolve either."""
    req = ExecRequest(["ls"])
    with pytest.raises(InvalidRequestError, match="argv must not be empty"):
        attrs.evolve(req, argv=[])
    with pytest.raises(InvalidRequestError, match="tty must be a bool"):
        attrs.evolve(req, tty="no")


def test_request_is_frozen() -> None:
    req = ExecRequest(["ls"])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        req.argv = ("rm",)  # type: ignore[misc]


# -- ProcessState ------------------------------------------------------------------------


def test_fresh_state_knows_nothing() -> None:
    state = ProcessState()
    assert (state.has_exited, state.exit_code, state.failure_message) == (False, None, None)


def test_exited_sets_only_the_exit_code() -> None:
    before = ProcessState()
    after = before.exited(0)
    assert after == ProcessState(has_exited=True, exit_code=0)
    assert before == ProcessState(), "transitions must not mutate the snapshot"


def test_failed_sets_only_the_failure() -> None:
    state = ProcessState().failed("launch failed")
    assert state == ProcessState(has_exited=True, failure_message="launch failed")


def test_first_failure_wins() -> None:
    state = ProcessState().failed("transport lost").failed("pump cancelled")
    assert state.failure_message == "transport lost"


def test_first_failure_wins_even_if_empty() -> None:
    """ "" is a message, not "no failure": a falsy check here would be a bug."""
    assert ProcessState().failed("").failed("later").failure_message == ""


def test_exit_after_failure_keeps_the_failure() -> None:
    state = ProcessState().failed("transport lost").exited(137)
    assert state == ProcessState(has_exited=True, exit_code=137, failure_message="transport lost")


def test_failure_after_exit_keeps_the_exit_code() -> None:
    state = ProcessState().exited(3).failed("backend error")
    assert state == ProcessState(has_exited=True, exit_code=3, failure_message="backend error")


@pytest.mark.parametrize(
    "kwargs",
    [{"exit_code": 0}, {"exit_code": 1}, {"failure_message": ""}, {"failure_message": "x"}],
)
def test_not_exited_cannot_have_an_outcome(kwargs: dict[str, Any]) -> None:
    """has_exited=False with an exit code or a failure is a contradiction."""
    with pytest.raises(ValueError, match="has not exited"):
        ProcessState(has_exited=False, **kwargs)


def test_exited_without_known_code_is_valid() -> None:
    assert ProcessState(has_exited=True).exit_code is None


def test_state_is_frozen() -> None:
    state = ProcessState()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        state.has_exited = True  # type: ignore[misc]


@given(
    ops=st.lists(
        st.one_of(
            st.integers(-1, 255).map(lambda c: ("exit", c)), st.text().map(lambda m: ("fail", m))
        ),
        max_size=6,
    ).filter(lambda ops: sum(kind == "exit" for kind, _ in ops) <= 1)
)
def test_state_follows_any_sequence(ops: list[tuple[str, Any]]) -> None:
    """has_exited iff anything happened; code only from the exit; the first failure only."""
    state = ProcessState()
    for kind, value in ops:
        state = state.exited(value) if kind == "exit" else state.failed(value)
    codes = [v for k, v in ops if k == "exit"]
    messages = [v for k, v in ops if k == "fail"]
    assert state.has_exited == bool(ops)
    assert state.exit_code == (codes[0] if codes else None)
    assert state.failure_message == (messages[0] if messages else None)


# -- WriteStatus -------------------------------------------------------------------------


def test_write_status_wire_values() -> None:
    """These strings are the exec-server protocol: changing one breaks the wire."""
    assert {s.name: s.value for s in WriteStatus} == {
        "ACCEPTED": "accepted",
        "UNKNOWN_PROCESS": "unknownProcess",
        "STDIN_CLOSED": "stdinClosed",
        "STARTING": "starting",
    }
    assert WriteStatus("stdinClosed") is WriteStatus.STDIN_CLOSED
    with pytest.raises(ValueError):
        WriteStatus("stdin_closed")
