"""Where a backend runs, as far as the tool layer needs to know it: the default
working directory, the base environment and the default shell for a new session.

This is the one place the tool layer still tells backends apart by type
(``LocalPtyBackend``) and by probing (``environment_info``), kept here so that
when ``ExecBackend`` describes itself (issue 9: cwd, home, platform, shell,
capabilities) only this module changes.
"""

from __future__ import annotations

import os
from typing import Any

from .._uri import uri_path
from ..backends._base import ExecBackend
from ..backends.local import LocalPtyBackend
from ..backends.remote import REMOTE_DEFAULT_ENV

__all__ = ["base_env", "default_cwd", "default_shell"]


def _info(backend: ExecBackend) -> dict[str, Any]:
    info = getattr(backend, "environment_info", None)
    return info if isinstance(info, dict) else {}


def _info_path(backend: ExecBackend, key: str) -> str | None:
    value = _info(backend).get(key)
    return uri_path(value) if isinstance(value, str) else None


def default_cwd(backend: ExecBackend) -> str:
    """Where a session runs when no workdir is given: this process's cwd locally;
    the server's announced cwd for a backend that announces one (the client's own
    cwd means nothing on another machine); else this process's cwd."""
    if isinstance(backend, LocalPtyBackend):
        return os.getcwd()
    return _info_path(backend, "cwd") or os.getcwd()


def base_env(backend: ExecBackend) -> dict[str, str]:
    """Ours for a local backend; ``REMOTE_DEFAULT_ENV`` plus the server's HOME otherwise."""
    if isinstance(backend, LocalPtyBackend):
        return dict(os.environ)
    env = dict(REMOTE_DEFAULT_ENV)
    home = _info_path(backend, "userHomeDir")
    if home:
        env["HOME"] = home
    return env


def default_shell(backend: ExecBackend) -> str:
    """``$SHELL`` locally; the server's announced shell otherwise; else /bin/bash."""
    if isinstance(backend, LocalPtyBackend):
        return os.environ.get("SHELL") or "/bin/bash"
    info = _info(backend).get("shell")
    path = info.get("path") if isinstance(info, dict) else None
    return path if isinstance(path, str) and path else "/bin/bash"
