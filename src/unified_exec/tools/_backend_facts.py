"""The defaults a front door (agent tools, ``unified-exec exec``, the MCP server)
takes from a backend's description: working directory, base environment, shell.

Every fact comes from ``describe_backend()`` — the backend says where it runs; no
caller tells backends apart by type or probes them with ``getattr``. What is left
here is the one policy for a fact the backend does not state:

- no ``cwd``: this process's own cwd when the backend runs here (``LOCAL``) or does
  not say where it runs (``UNKNOWN``, a third-party backend: what it always got);
  ``None`` for a remote machine or a pool, i.e. "the server's own" — our cwd means
  nothing over there.
- no ``shell``: ``/bin/bash`` (Codex's default).
"""

from __future__ import annotations

import os
from typing import Final

from .._errors import InvalidRequestError
from ..backends._description import BackendDescription, Location

__all__ = ["FALLBACK_SHELL", "base_env", "default_cwd", "default_shell", "resolve_workdir"]

FALLBACK_SHELL: Final = "/bin/bash"

_HERE_OR_UNSAID: Final = frozenset({Location.LOCAL, Location.UNKNOWN})


def default_cwd(description: BackendDescription) -> str | None:
    """Where a new process runs when the caller names no directory (None: the
    backend's own default, e.g. an exec-server's working directory)."""
    if description.cwd is not None:
        return description.cwd
    if description.location in _HERE_OR_UNSAID:
        return os.getcwd()
    return None


def base_env(description: BackendDescription) -> dict[str, str]:
    """A mutable copy of the environment a new process starts from."""
    return dict(description.default_env)


def default_shell(description: BackendDescription) -> str:
    return description.shell or FALLBACK_SHELL


def resolve_workdir(cwd: str | None, workdir: str | None) -> str | None:
    """``workdir`` against the session default ``cwd`` (None: the backend's own
    directory, which we do not know, so a relative workdir cannot be resolved)."""
    if not workdir:
        return cwd
    if cwd is None and not os.path.isabs(workdir):
        raise InvalidRequestError(
            f"workdir {workdir!r} is relative and this backend does not say its "
            "working directory: give an absolute workdir"
        )
    return os.path.normpath(os.path.join(cwd or "/", workdir))
