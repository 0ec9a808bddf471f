"""The environment Codex forces on every unified-exec child: no colours, no pagers,
a dumb terminal and UTF-8, so output stays plain text for the model."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .._request import FrozenEnv, _to_env

__all__ = ["UNIFIED_EXEC_ENV", "apply_unified_exec_env", "checked_env"]

UNIFIED_EXEC_ENV: Mapping[str, str] = MappingProxyType(
    {
        "NO_COLOR": "1",
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "LC_CTYPE": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "COLORTERM": "",
        "PAGER": "cat",
        "GIT_PAGER": "cat",
        "GH_PAGER": "cat",
        "CODEX_CI": "1",
    }
)


def apply_unified_exec_env(
    base: Mapping[str, str], forced: Mapping[str, str] = UNIFIED_EXEC_ENV
) -> dict[str, str]:
    """``base`` with ``forced`` laid over it (forced values win, the rest is kept)."""
    env = dict(base)
    env.update(forced)
    return env


def checked_env(base: Mapping[str, str], forced: Mapping[str, str]) -> FrozenEnv:
    """``base`` with ``forced`` over it, as the FrozenEnv an ExecRequest keeps as is.

    Each part is checked once, like a request's env: a FrozenEnv (a backend's
    described ``default_env``) already was, so a call pays only for what it adds.
    """
    return FrozenEnv(apply_unified_exec_env(_to_env(base) or {}, _to_env(forced) or {}))
