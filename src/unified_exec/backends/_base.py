"""The pluggable seam. Protocols, not base classes: a third-party backend satisfies
them structurally and never imports our implementation classes."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable
from typing import Protocol, cast, runtime_checkable

from .._events import ProcessEvent, WriteStatus
from .._request import ExecRequest
from ._description import Capability

__all__ = [
    "Capability",
    "DirectEvents",
    "ExecBackend",
    "ProcessHandle",
    "Sink",
    "capabilities_of",
    "direct_events",
]

Sink = Callable[[ProcessEvent], bool]
"""Takes an event (True) or leaves it to be iterated (False); must not raise."""


def capabilities_of(handle: object) -> frozenset[Capability]:
    """What ``handle`` declares; for a handle written before declarations existed,
    what its methods show (so third-party backends keep working)."""
    declared = getattr(handle, "capabilities", None)
    if isinstance(declared, frozenset | set):
        return frozenset(c for c in declared if isinstance(c, Capability))
    found = set()
    if callable(getattr(handle, "close_stdin", None)):
        found.add(Capability.CLOSE_STDIN)
    return frozenset(found)


@runtime_checkable
class DirectEvents(Protocol):
    """An ``events()`` iterator that can also hand events over in the producer's task.

    Optional: a handle's ``events()`` may return any async iterator. One that also
    has ``connect`` lets the consumer take events without a task of its own:
    ``connect(sink)`` offers every event to ``sink`` at once (what was already
    waiting first), in seq order, whenever nothing is waiting and the consumer
    holds no event. An event the sink refuses, and those after it, wait for the
    consumer to iterate; once it has caught up the sink is offered events again.
    """

    def __aiter__(self) -> AsyncIterator[ProcessEvent]: ...

    async def __anext__(self) -> ProcessEvent: ...

    def connect(self, sink: Sink) -> None: ...


_DIRECT: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def direct_events(events: AsyncIterator[ProcessEvent]) -> DirectEvents | None:
    """``events`` as a DirectEvents, or None. The structural check costs ~5 us, so
    it is made once per class."""
    cls = type(events)
    known = _DIRECT.get(cls)
    if known is None:
        known = _DIRECT[cls] = isinstance(events, DirectEvents)
    return cast(DirectEvents, events) if known else None


@runtime_checkable
class ProcessHandle(Protocol):
    """One started process, as a backend exposes it.

    Optional abilities are declared, not probed: a handle lists what it implements
    in a ``capabilities`` frozenset of ``Capability`` (``CLOSE_STDIN`` means it has
    ``async close_stdin()``); ``capabilities_of()`` is the one reader.

    ``events()`` is called once and yields the process's events in seq order,
    ending with a ClosedEvent or a FailedEvent. It must be lazy: a backend reads
    from the child only as fast as the iterator is pulled (that is how backpressure
    reaches the child), and it must keep running the child while nobody pulls.
    """

    @property
    def process_id(self) -> str: ...

    def events(self) -> AsyncIterator[ProcessEvent]: ...

    async def write(self, data: bytes) -> WriteStatus: ...

    async def terminate(self) -> None:
        """Kill the process and its group; events then end as usual (exited, closed)."""
        ...

    async def interrupt(self) -> None:
        """SIGINT to the process group."""
        ...

    async def resize(self, rows: int, cols: int) -> None: ...


@runtime_checkable
class ExecBackend(Protocol):
    """Starts processes somewhere (here, or behind an exec-server).

    **Describing itself.** A backend should also expose ``description``: a
    ``BackendDescription`` (an attribute or a property, read each time a fact is
    needed, so it may change — a pool's members come and go) saying where its
    processes run: ``location``, default ``cwd`` (absolute), ``home``, ``shell``,
    ``platform``, the ``default_env`` a process gets when its request's env is
    None, and the handle ``capabilities`` it supports. The front doors (agent
    tools, MCP server, ``unified-exec exec``) read it through ``describe_backend()``
    and never by the backend's type.

    It is deliberately *not* a member of this Protocol, so a backend written before
    descriptions existed still satisfies it. Without one, ``describe_backend()``
    answers ``Location.UNKNOWN`` with nothing else known: the front doors then use
    this process's cwd as the default directory, ``BASELINE_ENV`` as the base
    environment and ``/bin/bash`` as the shell, and handle capabilities are read
    from each handle (``capabilities_of``). ``unified_exec.testing.check_backend``
    checks a description, when there is one, against what the backend does.
    """

    async def start(self, request: ExecRequest) -> ProcessHandle:
        """Start ``request``; raise LaunchError if it cannot run."""
        ...

    async def aclose(self) -> None:
        """Terminate every process this backend still runs and release its resources."""
        ...
