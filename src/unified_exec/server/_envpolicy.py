"""`process/start.envPolicy`: the child's environment as codex's exec-server builds it.

The codex CLI sends ``envPolicy`` (``inherit: "all"`` minus an exclude list) plus an
``env`` that holds only what it adds (``TERM``, ``PAGER``, ``CODEX_*``...), no ``PATH``
or ``HOME``. Taking ``env`` as the whole environment (what we did before) runs every
``bash -lc`` without ``HOME``: ``.bashrc``/``.profile`` print errors before the real
output and tools under ``$HOME`` are not found. So, as codex's server does:

1. a base from the *server's* environment: ``inherit`` ``all`` (everything), ``core``
   (``PATH``, ``SHELL``, ``HOME``, ``LANG``... only) or ``none`` (empty);
2. unless ``ignoreDefaultExcludes``, drop names matching ``*KEY*``, ``*SECRET*``,
   ``*TOKEN*``; then drop names matching any ``exclude`` pattern;
3. lay ``set`` over it; if ``includeOnly`` is non-empty keep only names matching it;
4. lay the request's ``env`` over that.

Patterns are shell globs matched case-insensitively. Whatever the request says, names
that carry the server's own credentials never reach a child (codex's list of
non-inheritable variables, plus our ``UNIFIED_EXEC_TOKEN``). Without ``envPolicy`` the
request's ``env`` is the whole environment, as before and as codex does.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from typing import Any

from .._protocol._messages import ParamsError

__all__ = ["CORE_VARS", "NON_INHERITABLE", "apply_env_policy", "child_env"]

CORE_VARS = frozenset(
    {"PATH", "SHELL", "TMPDIR", "TEMP", "TMP", "HOME", "LANG", "LC_ALL", "LC_CTYPE",
     "LOGNAME", "USER"}
)  # fmt: skip
DEFAULT_EXCLUDES = ("*KEY*", "*SECRET*", "*TOKEN*")
NON_INHERITABLE = frozenset(
    {"CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN", "NODE_REPL_AUTH_TOKEN", "OPENAI_FEDERATION_RULE_ID",
     "OPENAI_IDENTITY_TOKEN_FILE", "OPENAI_WORKLOAD_IDENTITY_CONTEXT", "UNIFIED_EXEC_TOKEN",
     "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE"}
)  # fmt: skip
_INHERIT = ("core", "all", "none")
_FIELDS = ("inherit", "ignoreDefaultExcludes", "exclude", "set", "includeOnly")


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, p.upper()) for p in patterns)


def _str_list(policy: Mapping[str, Any], key: str) -> list[str]:
    value = policy[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ParamsError(f"envPolicy.{key}: invalid type, expected a sequence of strings")
    return value


def apply_env_policy(policy: Any, base_env: Mapping[str, str]) -> dict[str, str]:
    """The environment ``policy`` (the wire ``envPolicy`` object) builds from
    ``base_env``, before the request's ``env`` is laid on top. Raises ParamsError
    (answered -32602) for a policy that does not fit codex's type."""
    if not isinstance(policy, dict):
        raise ParamsError("envPolicy: invalid type, expected struct ExecEnvPolicy")
    for key in _FIELDS:
        if key not in policy:
            raise ParamsError(f"envPolicy: missing field `{key}`")
    inherit = policy["inherit"]
    if inherit not in _INHERIT:
        raise ParamsError(
            f"envPolicy.inherit: unknown variant `{inherit}`, expected one of `core`, `all`, `none`"
        )
    if not isinstance(policy["ignoreDefaultExcludes"], bool):
        raise ParamsError("envPolicy.ignoreDefaultExcludes: invalid type, expected a boolean")
    exclude = _str_list(policy, "exclude")
    include_only = _str_list(policy, "includeOnly")
    overrides = policy["set"]
    if not isinstance(overrides, dict) or not all(isinstance(v, str) for v in overrides.values()):
        raise ParamsError("envPolicy.set: invalid type, expected a map of strings")

    if inherit == "all":
        env = dict(base_env)
    elif inherit == "core":
        env = {k: v for k, v in base_env.items() if k.upper() in CORE_VARS}
    else:
        env = {}
    if not policy["ignoreDefaultExcludes"]:
        env = {k: v for k, v in env.items() if not _matches(k, DEFAULT_EXCLUDES)}
    if exclude:
        env = {k: v for k, v in env.items() if not _matches(k, exclude)}
    env.update(overrides)
    if include_only:
        env = {k: v for k, v in env.items() if _matches(k, include_only)}
    return env


def child_env(
    params: Mapping[str, Any], env: Mapping[str, str], base_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of a child started with the raw ``process/start``
    ``params`` whose (already validated) ``env`` is ``env``; ``base_env`` defaults to
    the server's own environment."""
    policy = params.get("envPolicy")
    if policy is None:
        out = dict(env)
    else:
        out = apply_env_policy(policy, os.environ if base_env is None else base_env)
        out.update(env)
    return {k: v for k, v in out.items() if k.upper() not in NON_INHERITABLE}
