"""Where a backend runs, said by the backend itself.

The layers above (agent tools, MCP server, terminal client) need a few facts about
the machine a process will run on: its default working directory, home, shell,
base environment, platform, and which optional handle methods work. Each backend
states them in a ``description`` attribute; ``describe_backend`` is the one reader,
so no caller tells backends apart by type or probes them with ``getattr``.

A backend written before descriptions existed still works: ``describe_backend``
answers for it with what is safe to assume of an unknown machine.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._errors import InvalidRequestError
from .._request import FrozenEnv, _to_env

__all__ = [
    "BASELINE_ENV",
    "BackendDescription",
    "Capability",
    "Location",
    "describe_backend",
]

#: The environment a process gets on a machine whose own is unknown (a remote
#: exec-server, a third-party backend): the protocol needs a whole environment and
#: the client cannot know the server's.
BASELINE_ENV: Mapping[str, str] = FrozenEnv(
    {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    }
)


class Capability(enum.Enum):
    """Optional process-handle abilities, declared rather than guessed.

    A handle lists the ones it implements in a ``capabilities`` attribute (a
    frozenset); a backend's description lists what its handles can do.
    ``interrupt``, ``terminate`` and ``resize`` are always callable on a handle;
    ``RESIZE`` and ``INTERRUPT`` say whether they take effect.
    """

    CLOSE_STDIN = "closeStdin"  # async close_stdin(): EOF on a pipe stdin
    RESIZE = "resize"  # resize() changes a terminal's size
    INTERRUPT = "interrupt"  # interrupt() delivers SIGINT to the process group


class Location(enum.Enum):
    """How far a backend's processes are from the caller."""

    LOCAL = "local"  # this machine, this user: our cwd, env and shell apply
    REMOTE = "remote"  # one other machine (an exec-server)
    POOL = "pool"  # one of several machines, chosen per process
    UNKNOWN = "unknown"  # a backend that does not describe itself


def _frozen_env(value: Mapping[str, str]) -> FrozenEnv:
    """Any str -> str mapping, as a read-only FrozenEnv checked like a request's env:
    an ExecRequest keeps a FrozenEnv without checking it again, so every one we
    make must already hold only what a request may."""
    if isinstance(value, FrozenEnv):
        return value
    if value is os.environ:  # valid by construction (putenv refuses NUL and "=")
        return FrozenEnv(dict(value))
    env = _to_env(value)
    assert env is not None
    return env


def _frozen_caps(value: Iterable[Capability | str]) -> frozenset[Capability]:
    """Capabilities (or their wire names, e.g. ``"closeStdin"``) as a frozenset."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidRequestError(
            f"capabilities must be an iterable of Capability, not {type(value).__name__}"
        )
    out = set()
    for cap in value:
        try:
            out.add(cap if isinstance(cap, Capability) else Capability(cap))
        except ValueError:
            raise InvalidRequestError(f"unknown capability {cap!r}") from None
    return frozenset(out)


def _location(value: Location | str) -> Location:
    try:
        return value if isinstance(value, Location) else Location(value)
    except ValueError:
        raise InvalidRequestError(f"unknown location {value!r}") from None


def _optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidRequestError(
            f"{attribute.name} must be a non-empty str or None, not {value!r}"
        )


def _absolute_cwd(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _optional_text(instance, attribute, value)
    if isinstance(value, str) and not value.startswith("/"):
        raise InvalidRequestError(f"a described cwd must be an absolute path, not {value!r}")


@attrs.frozen(kw_only=True)
class BackendDescription:
    """Facts about where a backend runs its processes.

    ``None`` means "not known": callers fall back to what suits an unknown machine
    (for ``cwd``, the request must then name one or the backend picks its own).

    A value, like ``ExecRequest``: frozen, hashable, compared by content, nothing
    reachable from it mutable. The converters normalise what they are given (any
    str -> str mapping becomes a ``FrozenEnv``; any iterable of capabilities or
    their wire names a ``frozenset``; a location's value its ``Location``) and
    refuse what is malformed with ``InvalidRequestError`` (a relative ``cwd``, a
    non-str env entry, an unknown capability).
    """

    location: Location = attrs.field(converter=_location)
    #: default working directory of a new process (absolute)
    cwd: str | None = attrs.field(default=None, validator=_absolute_cwd)
    home: str | None = attrs.field(default=None, validator=_optional_text)
    #: path of the user's shell
    shell: str | None = attrs.field(default=None, validator=_optional_text)
    #: "linux", "macos", ... as the backend reports it
    platform: str | None = attrs.field(default=None, validator=_optional_text)
    default_env: FrozenEnv = attrs.field(
        factory=lambda: FrozenEnv(BASELINE_ENV), converter=_frozen_env
    )
    capabilities: frozenset[Capability] = attrs.field(factory=frozenset, converter=_frozen_caps)


UNDESCRIBED = BackendDescription(location=Location.UNKNOWN)


def describe_backend(backend: Any) -> BackendDescription:
    """``backend.description`` when it has one; else what holds for an unknown machine."""
    described = getattr(backend, "description", None)
    if isinstance(described, BackendDescription):
        return described
    return UNDESCRIBED
