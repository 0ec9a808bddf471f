"""One table from exceptions to JSON-RPC errors, for every request the server answers.

Handlers raise; only the request runner turns an exception into ``(code, message)``,
so the same error gets the same code whichever method (or backend) raised it
(review observation 10: an ``InvalidRequestError`` from a relay's ``start()`` used to
fall through to -32603).
"""

from __future__ import annotations

import logging

from .._errors import InvalidRequestError, LaunchError, UnifiedExecError
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m

__all__ = ["Fail", "error_reply"]

log = logging.getLogger("unified_exec.server")


class Fail(Exception):
    """A request the server refuses on purpose, with the code and text the peer sees."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# First match wins: the most specific classes come first.
_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (m.ParamsError, rpc.INVALID_PARAMS),  # params that do not fit the method
    (InvalidRequestError, rpc.INVALID_PARAMS),  # values the backend refuses
    (LaunchError, rpc.INTERNAL_ERROR),  # codex answers a failed spawn with -32603
    (UnifiedExecError, rpc.INTERNAL_ERROR),  # a relay's upstream trouble, and the like
)


def error_reply(exc: Exception, method: str) -> tuple[int, str]:
    """The JSON-RPC error for ``exc`` raised while serving ``method``.

    Anything outside the table is a bug or a foreign backend's surprise: it is logged
    with its traceback and answered -32603, and the connection goes on.
    """
    if isinstance(exc, Fail):
        return exc.code, exc.message
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return code, str(exc) or type(exc).__name__
    log.error("request %s failed", method, exc_info=exc)
    return rpc.INTERNAL_ERROR, str(exc) or repr(exc)
