"""ExecRequest is a value (review, "ExecRequest truly immutable"): its env cannot be
changed through the request, equal requests hash equal, and it survives pickling.
Before, ``req.env`` was the plain dict the converter built: mutable in place, and
``hash(req)`` raised TypeError."""

from __future__ import annotations

import pickle
from collections.abc import Mapping

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from unified_exec import ExecRequest

names = st.text(st.characters(blacklist_characters="\0=", codec="utf-8"), min_size=1, max_size=8)
values = st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=8)
envs = st.dictionaries(names, values, max_size=6)


@given(env=envs)
def test_env_equals_what_was_given_and_requests_hash_by_value(env: dict[str, str]) -> None:
    a = ExecRequest(["ls"], env=env)
    b = ExecRequest(["ls"], env=dict(reversed(list(env.items()))))
    assert a.env == env and env == a.env
    assert isinstance(a.env, Mapping)
    assert dict(a.env) == env
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


@given(env=envs, other=envs)
def test_different_envs_make_different_requests(env: dict[str, str], other: dict[str, str]) -> None:
    if env != other:
        assert ExecRequest(["ls"], env=env) != ExecRequest(["ls"], env=other)


def test_env_cannot_be_changed_through_the_request() -> None:
    req = ExecRequest(["ls"], env={"A": "1"})
    with pytest.raises(TypeError):
        req.env["B"] = "2"  # type: ignore[index]
    with pytest.raises((TypeError, AttributeError)):
        del req.env["A"]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        req.env.update({"B": "2"})  # type: ignore[union-attr]
    assert req.env == {"A": "1"}


def test_a_copy_is_mutable_and_independent() -> None:
    req = ExecRequest(["ls"], env={"A": "1"})
    assert req.env is not None
    copy = dict(req.env)
    copy["B"] = "2"
    assert req.env == {"A": "1"}


def test_repr_pickle_and_evolve() -> None:
    req = ExecRequest(["ls"], env={"A": "1"}, cwd="/tmp")
    assert "'A': '1'" in repr(req)
    back = pickle.loads(pickle.dumps(req))
    assert back == req and hash(back) == hash(req)
    moved = attrs.evolve(req, cwd="/srv")
    assert moved.env == {"A": "1"} and moved != req
    assert hash(ExecRequest(["ls"])) == hash(ExecRequest(("ls",)))


def test_no_env_stays_none() -> None:
    assert ExecRequest(["ls"]).env is None
    assert ExecRequest(["ls"], env={}).env == {}
    assert ExecRequest(["ls"], env={}) != ExecRequest(["ls"])
