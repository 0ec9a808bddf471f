"""One exception tree for the whole library.

Backends translate trio, OS and transport errors into these at their boundary, so
callers never need to know which backend ran the process.
"""

from __future__ import annotations

__all__ = [
    "ExecTimeoutError",
    "InvalidRequestError",
    "LaunchError",
    "LocalProtocolError",
    "ProcessUnknownError",
    "ProtocolError",
    "RemoteProtocolError",
    "RpcError",
    "StdinClosedError",
    "TransportLostError",
    "UnifiedExecError",
]


class UnifiedExecError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidRequestError(UnifiedExecError, ValueError):
    """The caller asked for something malformed; nothing was started or sent."""


class LaunchError(UnifiedExecError):
    """The process could not be started (missing executable, missing cwd, ...).

    ``path`` names the file or directory at fault when it is known.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ProcessUnknownError(UnifiedExecError):
    """No process with that id exists (never started, or already forgotten)."""


class StdinClosedError(UnifiedExecError):
    """The process has no writable stdin."""


class TransportLostError(UnifiedExecError):
    """The link to an exec-server broke; ``__cause__`` says how."""


class ExecTimeoutError(UnifiedExecError, TimeoutError):
    """A peer or a process did not answer within the allotted time."""


class ProtocolError(UnifiedExecError):
    """An exchange broke the rules of the protocol."""


class LocalProtocolError(ProtocolError):
    """*We* (or our caller) broke the protocol: a bug on this side."""


class RemoteProtocolError(ProtocolError):
    """The peer (a backend or an exec-server) broke the protocol."""


class RpcError(UnifiedExecError):
    """An exec-server answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
