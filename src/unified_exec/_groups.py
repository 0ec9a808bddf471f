"""Keep trio's exception groups an internal matter.

A nursery wraps whatever crosses it in an ExceptionGroup; when a user's own
exception (or one of ours) is the only thing that happened, callers should get it
as it is, so ``except LaunchError`` keeps working around our context managers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["unwrap_single"]


def _sole_leaf(exc: BaseException) -> BaseException | None:
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@contextmanager
def unwrap_single() -> Iterator[None]:
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = _sole_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__
