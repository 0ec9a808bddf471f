"""ExecRequest: what to run, validated before anything is spawned or sent.

A request is a value: frozen, hashable, and nothing reachable from it can change
(its env is a FrozenEnv, not the caller's dict), so a backend or a retry loop can
keep one, compare two, or use one as a key without copying it defensively.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from ._errors import InvalidRequestError

__all__ = ["ExecRequest", "FrozenEnv"]

_MAX_TTY_DIM = 0xFFFF


def _no_nul(what: str, value: str) -> None:
    """A str that can become a C string for exec: no NUL, encodable as a path."""
    if "\0" in value:
        raise InvalidRequestError(f"{what} must not contain NUL characters: {value!r}")
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{what} cannot be encoded for the OS: {value!r}") from None


def _to_argv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequestError(f"argv must be a sequence of str, not {type(value).__name__}")
    argv = tuple(value)
    if not argv:
        raise InvalidRequestError("argv must not be empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise InvalidRequestError(f"argv items must be str, got {arg!r}")
        _no_nul("argv", arg)
    if not argv[0]:
        raise InvalidRequestError("argv[0] must not be empty")
    return argv


def _to_cwd(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise InvalidRequestError(f"cwd must be str or os.PathLike, not {type(value).__name__}")
    cwd = os.fspath(value)
    if not isinstance(cwd, str):
        raise InvalidRequestError("cwd must be a text path")
    if not cwd:
        raise InvalidRequestError("cwd must not be empty (use None for the current directory)")
    _no_nul("cwd", cwd)
    return cwd


class FrozenEnv(Mapping[str, str]):
    """A read-only, hashable str -> str mapping (an ExecRequest's environment).

    Compares equal to any mapping with the same items (``req.env == {"A": "1"}``);
    ``dict(env)`` gives a mutable copy.
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items) if items is not None else {}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenEnv):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenEnv({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenEnv], tuple[dict[str, str]]]:
        return (FrozenEnv, (dict(self._items),))


def _to_env(value: Any) -> FrozenEnv | None:
    if value is None:
        return None
    if isinstance(value, FrozenEnv):
        return value  # already checked, and immutable
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            f"env must be a mapping of str to str, not {type(value).__name__}"
        )
    env: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise InvalidRequestError(f"env entries must be str to str, got {key!r}: {val!r}")
        if not key or "=" in key:
            raise InvalidRequestError(f"invalid environment variable name {key!r}")
        _no_nul("env", key)
        _no_nul("env", val)
        env[key] = val
    return FrozenEnv(env)


def _to_size(value: Any) -> tuple[int, int]:
    try:
        rows, cols = value
    except (TypeError, ValueError):
        raise InvalidRequestError(f"size must be (rows, cols), got {value!r}") from None
    check_tty_size(rows, cols)
    return (rows, cols)


def check_tty_size(rows: object, cols: object) -> None:
    """Raise InvalidRequestError unless rows and cols are usable terminal dimensions."""
    for name, dim in (("rows", rows), ("cols", cols)):
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= _MAX_TTY_DIM:
            raise InvalidRequestError(f"{name} must be an int in 1..{_MAX_TTY_DIM}, got {dim!r}")


def _check_bool(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{attribute.name} must be a bool, got {value!r}")


def _check_opt_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRequestError(f"{attribute.name} must be str or None, got {value!r}")
    _no_nul(attribute.name, value)
    if attribute.name == "process_id" and not value:
        raise InvalidRequestError("process_id must not be empty (use None to generate one)")


@attrs.frozen
class ExecRequest:
    """A process to start.

    ``env=None`` inherits this process's environment at start time; a mapping is the
    child's *entire* environment, as with the exec-server. ``pipe_stdin`` only
    matters without a tty: it keeps stdin writable instead of ``/dev/null``.
    ``arg0`` is the ``argv[0]`` the child sees; ``argv[0]`` is still what is run.
    Requests are hashable and truly immutable: ``env`` is a read-only FrozenEnv.
    """

    argv: tuple[str, ...] = attrs.field(converter=_to_argv)
    cwd: str | None = attrs.field(default=None, converter=_to_cwd)
    env: Mapping[str, str] | None = attrs.field(default=None, converter=_to_env)
    """A FrozenEnv (read-only) whatever mapping was given, or None."""
    tty: bool = attrs.field(default=False, validator=_check_bool)
    pipe_stdin: bool = attrs.field(default=False, validator=_check_bool)
    arg0: str | None = attrs.field(default=None, validator=_check_opt_str)
    process_id: str | None = attrs.field(default=None, validator=_check_opt_str)
    size: tuple[int, int] = attrs.field(default=(24, 80), converter=_to_size)
