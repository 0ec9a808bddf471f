"""Where a backend runs, as far as the tool layer needs to know it: the base
environment and the default shell for a new session.

This is the one place the tool layer still tells backends apart by type
(``LocalPtyBackend``) and by probing (``environment_info``), kept here so that
when ``ExecBackend`` describes itself (issue 9: cwd, home, platform, shell,
capabilities) only this module changes.
"""

from __future__ import annotations

import os

from ..backends._base import ExecBackend
from ..backends.local import LocalPtyBackend
from ..backends.remote import REMOTE_DEFAULT_ENV

__all__ = ["base_env", "default_shell"]


def base_env(backend: ExecBackend) -> dict[str, str]:
    """Ours for a local backend; ``REMOTE_DEFAULT_ENV`` plus the server's HOME otherwise."""
    if isinstance(backend, LocalPtyBackend):
        return dict(os.environ)
    env = dict(REMOTE_DEFAULT_ENV)
    home = getattr(backend, "environment_info", {}).get("userHomeDir", "")
    if isinstance(home, str) and home.startswith("file://"):
        env["HOME"] = home[len("file://") :]
    return env


def default_shell(backend: ExecBackend) -> str:
    """``$SHELL`` locally; the server's announced shell otherwise; else /bin/bash."""
    if isinstance(backend, LocalPtyBackend):
        return os.environ.get("SHELL") or "/bin/bash"
    info = getattr(backend, "environment_info", {}).get("shell", {})
    path = info.get("path") if isinstance(info, dict) else None
    return path if isinstance(path, str) and path else "/bin/bash"
