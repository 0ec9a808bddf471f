"""BackendDescription is a value (issue 9): immutable, hashable, equal by content,
and its converters normalise what they are given or refuse it."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import unified_exec as ue
from unified_exec.backends._description import BASELINE_ENV, UNDESCRIBED

env_keys = st.text(st.characters(codec="utf-8", exclude_characters="=\0"), min_size=1)
env_values = st.text(st.characters(codec="utf-8", exclude_characters="\0"))
envs = st.dictionaries(env_keys, env_values, max_size=8)
paths = st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20).map(
    lambda p: "/" + p
)
texts = st.none() | st.text(min_size=1, max_size=10)
caps = st.sets(st.sampled_from(list(ue.Capability)))


@st.composite
def descriptions(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "location": draw(st.sampled_from(list(ue.Location))),
        "cwd": draw(paths),
        "home": draw(paths),
        "shell": draw(paths),
        "platform": draw(texts),
        "default_env": draw(envs),
        "capabilities": draw(caps),
    }


@given(descriptions())
def test_equal_content_is_equal_and_hashes_alike(fields: dict[str, Any]) -> None:
    a = ue.BackendDescription(**fields)
    b = ue.BackendDescription(**{**fields, "default_env": dict(fields["default_env"])})
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert pickle.loads(pickle.dumps(a)) == a


@given(descriptions(), descriptions())
def test_different_content_is_not_equal(one: dict[str, Any], two: dict[str, Any]) -> None:
    a, b = ue.BackendDescription(**one), ue.BackendDescription(**two)
    same = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in attrs.asdict(a).items()}
    other = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in attrs.asdict(b).items()}
    assert (a == b) == (same == other)


@given(descriptions())
def test_immutable_and_nothing_reachable_is_mutable(fields: dict[str, Any]) -> None:
    desc = ue.BackendDescription(**fields)
    for name in attrs.fields_dict(ue.BackendDescription):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(desc, name, None)
    with pytest.raises(TypeError):
        desc.default_env["X"] = "1"  # type: ignore[index]
    assert isinstance(desc.capabilities, frozenset)
    before = hash(desc)
    fields["default_env"]["CHANGED_AFTER"] = "yes"  # the caller's dict is not shared
    fields["capabilities"].add(ue.Capability.RESIZE)
    assert "CHANGED_AFTER" not in desc.default_env and hash(desc) == before


@given(envs)
def test_the_env_converter_takes_any_str_mapping(env: dict[str, str]) -> None:
    desc = ue.BackendDescription(location=ue.Location.REMOTE, default_env=env)
    assert isinstance(desc.default_env, ue.FrozenEnv)
    assert desc.default_env == env and dict(desc.default_env) == env
    again = ue.BackendDescription(location=ue.Location.REMOTE, default_env=desc.default_env)
    assert again.default_env is desc.default_env  # already frozen: kept, not copied


@given(caps)
def test_the_capability_converter_takes_members_or_wire_names(chosen: set[ue.Capability]) -> None:
    by_member = ue.BackendDescription(location="pool", capabilities=list(chosen))
    by_name = ue.BackendDescription(location="pool", capabilities=(c.value for c in chosen))
    assert by_member.capabilities == by_name.capabilities == frozenset(chosen)
    assert type(by_member.capabilities) is frozenset
    assert by_member.location is ue.Location.POOL


def test_defaults_are_an_unknown_machine() -> None:
    desc = ue.BackendDescription(location=ue.Location.UNKNOWN)
    assert desc == UNDESCRIBED
    assert (desc.cwd, desc.home, desc.shell, desc.platform) == (None, None, None, None)
    assert desc.default_env == BASELINE_ENV and desc.capabilities == frozenset()


def test_os_environ_is_taken_as_a_snapshot() -> None:
    desc = ue.BackendDescription(location=ue.Location.LOCAL, default_env=os.environ)
    assert desc.default_env == dict(os.environ)
    assert desc.default_env is not os.environ


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cwd": "relative/dir"}, "absolute path"),
        ({"cwd": ""}, "non-empty"),
        ({"shell": 3}, "non-empty str"),
        ({"home": ""}, "non-empty"),
        ({"default_env": {"A": 1}}, "str to str"),
        ({"default_env": {"A=B": "1"}}, "invalid environment variable name"),
        ({"default_env": {"A": "x\0y"}}, "NUL"),
        ({"default_env": ["A"]}, "mapping"),
        ({"capabilities": {"teleport"}}, "unknown capability"),
        ({"capabilities": "closeStdin"}, "iterable of Capability"),
        ({"location": "moon"}, "unknown location"),
    ],
)
def test_malformed_fields_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ue.InvalidRequestError, match=message):
        ue.BackendDescription(**{"location": ue.Location.LOCAL, **fields})


class _NoDescription:
    async def start(self, request: ue.ExecRequest) -> Any: ...

    async def aclose(self) -> None: ...


class _WrongDescription(_NoDescription):
    description = "somewhere"  # not a BackendDescription


def test_describe_backend_falls_back_to_an_unknown_machine() -> None:
    assert ue.describe_backend(_NoDescription()) is UNDESCRIBED
    assert ue.describe_backend(_WrongDescription()) is UNDESCRIBED
    local = ue.describe_backend(ue.LocalPtyBackend())
    assert local.location is ue.Location.LOCAL and local.cwd == os.getcwd()


def test_a_servers_unusable_paths_are_not_known_rather_than_an_error() -> None:
    """A peer announcing a NUL in its home, cwd or shell must not stop a manager opening."""
    from unified_exec.backends._remote_description import describe_remote

    info = {
        "userHomeDir": "file:///home/a%00b",
        "cwd": "file:///work%00",
        "shell": {"name": "bash", "path": "/bin/ba\0sh"},
        "platformOs": "linux",
    }
    described = describe_remote(info, [])
    assert (described.home, described.cwd, described.shell) == (None, None, None)
    assert described.platform == "linux"
    assert "HOME" not in described.default_env
