"""Where a front end's commands run: a local PTY backend, or an exec-server.

Shared by ``unified-exec exec`` and ``unified-exec mcp``. The client token comes
from a file (``--token-file``) or ``$UNIFIED_EXEC_TOKEN``, never from the command
line, where every local user could read it in /proc/PID/cmdline.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from .._errors import InvalidRequestError
from ..backends import LocalPtyBackend, RemoteExecBackend
from ..backends._base import ExecBackend

__all__ = ["backend_factory", "read_client_token"]


def read_client_token(path: str | None) -> str | None:
    """The token in ``path`` (one trailing newline stripped), else $UNIFIED_EXEC_TOKEN."""
    if path is None:
        return os.environ.get("UNIFIED_EXEC_TOKEN") or None
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as exc:
        raise InvalidRequestError(f"cannot read --token-file {path}: {exc.strerror}") from None
    if len(data) > 64 * 1024:
        raise InvalidRequestError(f"--token-file {path} is too large to be a token")
    text = data.decode("ascii", errors="replace").removesuffix("\n").removesuffix("\r")
    if not text or "\ufffd" in text:
        raise InvalidRequestError(f"--token-file {path} does not hold an ASCII token")
    return text


def backend_factory(
    server: str | None, token_file: str | None
) -> Callable[[], AbstractAsyncContextManager[ExecBackend]]:
    """A factory opening the backend: local without ``server``, else that exec-server.

    The token file is read now, so a bad one fails before anything starts.
    """
    if server is None:
        if token_file is not None:
            raise InvalidRequestError("--token-file needs an exec-server URL")

        @asynccontextmanager
        async def local() -> AsyncIterator[ExecBackend]:
            async with LocalPtyBackend() as backend:
                yield backend

        return local
    token = read_client_token(token_file)

    @asynccontextmanager
    async def remote() -> AsyncIterator[ExecBackend]:
        async with RemoteExecBackend.connect(server, token=token) as backend:
            yield backend

    return remote
