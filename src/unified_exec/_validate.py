"""One set of validators for durations and sizes, used at construction time.

A bad value must be refused where it is given, not crash a task later (trio.sleep(-1)).
"""

from __future__ import annotations

import math

from ._errors import InvalidRequestError

__all__ = ["check_duration", "check_size"]


def check_duration(name: str, value: float | None, *, allow_none: bool = False) -> float | None:
    """A finite, non-negative number of seconds (or None where allowed)."""
    if value is None:
        if allow_none:
            return None
        raise InvalidRequestError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise InvalidRequestError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


def check_size(
    name: str, value: int | None, *, minimum: int = 0, allow_none: bool = False
) -> int | None:
    """An integer count of bytes/items, at least `minimum` (or None where allowed)."""
    if value is None:
        if allow_none:
            return None
        raise InvalidRequestError(f"{name} must be an integer, not None")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidRequestError(f"{name} must be >= {minimum}, got {value}")
    return value
