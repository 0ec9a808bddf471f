"""The parts of `initialize.environmentInfo` codex reads beyond the basics.

- ``shell``: the user's *login* shell from the password database, as codex's server
  detects it (``$SHELL`` is what a terminal happened to export, and a server started
  by systemd or a container has none: codex then ran ``/bin/sh -lc`` and told the
  model ``<shell>sh</shell>``). ``$SHELL`` and ``/bin/sh`` are only fallbacks.
- ``providerId``: a stable opaque id of this executor (codex keys per-executor caches
  by it): a sha256 over the host, the user and our name, so two servers of the same
  user on one host share it and nothing secret is revealed.
- ``temporaryDirectories``: ``$TMPDIR`` when set (absolute, or made so against the
  cwd), as codex reports it; ``prependPathDirs``: none (we put no helpers on PATH).
- ``capabilities``: only what we implement: of codex's keys only ``fsWatchMissing``
  (`_fswatch`); ``environmentConfigRead``, ``sandboxedFileStreaming``,
  ``networkProxyLaunch``... stay out, so the client does not send what we would refuse.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import socket
from typing import Any

from .._uri import file_uri

__all__ = ["CODEX_CAPABILITIES", "codex_environment", "environment_info_extras", "login_shell"]

CODEX_CAPABILITIES = {"fsWatchMissing": True}

_KNOWN = ("bash", "zsh", "sh", "fish", "dash", "ksh", "tcsh", "csh", "nu", "pwsh")


def login_shell() -> tuple[str, str]:
    """(name, path) of the user's login shell: passwd, else ``$SHELL``, else /bin/sh."""
    candidates = []
    try:
        candidates.append(pwd.getpwuid(os.getuid()).pw_shell)
    except (KeyError, OSError):
        pass  # no passwd entry (a container with an arbitrary uid)
    candidates.append(os.environ.get("SHELL", ""))
    for path in candidates:
        if path and path.startswith("/") and os.access(path, os.X_OK):
            base = os.path.basename(path)
            if base in ("nologin", "false"):
                continue
            return base, path
    return "sh", "/bin/sh"


def _provider_id() -> str:
    try:
        host = socket.gethostname()
    except OSError:
        host = ""
    seed = f"unified_exec\0{host}\0{os.getuid()}".encode(errors="surrogateescape")
    return "sha256:" + hashlib.sha256(seed).hexdigest()


def _temporary_directories() -> list[str]:
    tmp = os.environ.get("TMPDIR")
    if not tmp:
        return []
    path = tmp if tmp.startswith("/") else os.path.join(os.getcwd(), tmp)
    try:
        return [file_uri(os.path.normpath(path))]
    except UnicodeEncodeError:
        return []


def environment_info_extras() -> dict[str, Any]:
    """Fields to lay over our base environmentInfo (``shell`` included)."""
    name, path = login_shell()
    return {
        "shell": {"name": name, "path": path},
        "providerId": _provider_id(),
        "prependPathDirs": [],
        "temporaryDirectories": _temporary_directories(),
    }


def codex_environment(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` (our base environmentInfo) with the extras and codex's capability
    keys we implement merged into its ``capabilities``."""
    out = {**info, **environment_info_extras()}
    out["capabilities"] = {**info.get("capabilities", {}), **CODEX_CAPABILITIES}
    return out
