"""process/start.envPolicy (server/_envpolicy.py) with codex's semantics.

The first case is what codex 0.169.0 sent on the wire (recorded): inherit all, minus
an exclude list, ``env`` laid on top, and no PATH or HOME in ``env``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unified_exec._protocol._messages import ParamsError
from unified_exec.server._codex_start import codex_start
from unified_exec.server._envpolicy import apply_env_policy, child_env

BASE = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/u",
    "LANG": "C.UTF-8",
    "CODEX_VERSION": "old",
    "AWS_SECRET_ACCESS_KEY": "s",
    "GITHUB_TOKEN": "t",
    "UNIFIED_EXEC_TOKEN": "ours",
    "OTHER": "o",
}


def policy(**kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"inherit": "all", "ignoreDefaultExcludes": True, "exclude": [],
                         "set": {}, "includeOnly": []}  # fmt: skip
    p.update(kw)
    return p


def test_codex_recorded_policy() -> None:
    params = {
        "envPolicy": policy(exclude=["CODEX_PERMISSION_PROFILE", "CODEX_VERSION"]),
        "env": {"TERM": "dumb", "CODEX_VERSION": "0.169.0", "PAGER": "cat"},
    }
    env = child_env(params, params["env"], BASE)
    assert env["PATH"] == BASE["PATH"] and env["HOME"] == BASE["HOME"]
    assert env["CODEX_VERSION"] == "0.169.0"  # env goes on top of the excludes
    assert env["TERM"] == "dumb" and env["OTHER"] == "o"
    assert env["GITHUB_TOKEN"] == "t"  # ignoreDefaultExcludes: true
    assert "UNIFIED_EXEC_TOKEN" not in env  # the server's own credential never leaks


def test_default_excludes_and_patterns() -> None:
    env = apply_env_policy(policy(ignoreDefaultExcludes=False, exclude=["oth*"]), BASE)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "GITHUB_TOKEN" not in env
    assert "OTHER" not in env  # patterns match case-insensitively
    assert env["PATH"] == BASE["PATH"]


def test_core_none_set_include_only() -> None:
    core = apply_env_policy(policy(inherit="core"), BASE)
    assert set(core) == {"PATH", "HOME", "LANG"}
    none = apply_env_policy(policy(inherit="none", set={"A": "1"}), BASE)
    assert none == {"A": "1"}
    only = apply_env_policy(policy(includeOnly=["PATH", "L*"], set={"LX": "2"}), BASE)
    assert only == {"PATH": BASE["PATH"], "LANG": "C.UTF-8", "LX": "2"}


def test_without_env_policy_env_is_the_whole_environment() -> None:
    assert child_env({"env": {"A": "1"}}, {"A": "1"}, BASE) == {"A": "1"}


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (policy(inherit="bogus"), "unknown variant `bogus`, expected one of `core`, `all`, `none`"),
        ({"inherit": "all"}, "missing field"),
        (policy(exclude="PATH"), "envPolicy.exclude"),
        (policy(set={"A": 1}), "envPolicy.set"),
        (policy(ignoreDefaultExcludes="yes"), "ignoreDefaultExcludes"),
        ("all", "expected struct"),
    ],
)
def test_malformed_policies_are_params_errors(bad: Any, text: str) -> None:
    with pytest.raises(ParamsError, match=text.replace("(", r"\(").replace("`", "`")):
        apply_env_policy(bad, BASE)


names = st.text(alphabet="ABCKEYTOKNSR_", min_size=1, max_size=8)


@given(st.dictionaries(names, st.text(max_size=3), max_size=12), st.lists(names, max_size=3),
       st.dictionaries(names, st.text(max_size=3), max_size=3))  # fmt: skip
def test_env_always_wins_and_excludes_hold(
    base: dict[str, str], exclude: list[str], env: dict[str, str]
) -> None:
    out = child_env({"envPolicy": policy(exclude=exclude, ignoreDefaultExcludes=False)}, env, base)
    for k, v in env.items():
        if k != "UNIFIED_EXEC_TOKEN":
            assert out[k] == v
    for k in out:
        if k not in env:
            assert k in base and k.upper() not in exclude
            assert not any(w in k.upper() for w in ("KEY", "SECRET", "TOKEN"))


async def test_codex_start_rewrites_env_and_refuses_sandboxes() -> None:
    seen: list[Any] = []

    async def start(state: Any, session: Any, params: Any) -> Any:
        seen.append(params)
        return {"processId": params["processId"]}

    wrapped = codex_start(start, local=True, bwrap=lambda: None)  # no bwrap: refuse
    params = {"processId": "p", "envPolicy": policy(), "env": {"X": "1"}, "sandbox": None}
    assert await wrapped(None, None, params) == {"processId": "p"}
    assert seen[0]["env"]["X"] == "1" and seen[0]["env"]["PATH"] == os.environ["PATH"]
    ro = {"permissions": {"type": "managed", "network": "restricted", "file_system": {
        "type": "restricted", "entries": [{"path": {"type": "special", "value": {"kind": "root"}},
                                           "access": "read"}]}}}  # fmt: skip
    with pytest.raises(Exception, match="was not run"):
        await wrapped(None, None, {**params, "sandbox": ro})
    assert len(seen) == 1  # the refused start never reached the backend
