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
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._request import FrozenEnv

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
    return value if isinstance(value, FrozenEnv) else FrozenEnv(dict(value))


def _frozen_caps(value: Iterable[Capability]) -> frozenset[Capability]:
    return frozenset(value)


@attrs.frozen(kw_only=True)
class BackendDescription:
    """Facts about where a backend runs its processes.

    ``None`` means "not known": callers fall back to what suits an unknown machine
    (for ``cwd``, the request must then name one or the backend picks its own).
    """

    location: Location
    cwd: str | None = None  # default working directory of a new process
    home: str | None = None
    shell: str | None = None  # path of the user's shell
    platform: str | None = None  # "linux", "macos", ... as the backend reports it
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
