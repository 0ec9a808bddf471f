"""``watch_missing``: wait until a path appears on the exec-server's machine, over
codex's ``fs/watchMissing`` / ``fs/missingChanged``.

What the servers do (probed): the server polls the ``missing`` paths and sends
``fs/missingChanged {watchId}`` once. codex 0.171.0 keeps **one** watch per
connection (a request with a new ``watchId`` replaces the last; one with the
active ``watchId`` is answered ``{"watching": false}`` and changes nothing) and
also notifies when only a directory on the way appears; ours keeps up to 64, a
reused ``watchId`` replacing its own. So each backend keeps one server watch
covering the union of what its callers wait for: re-armed under the same
``watchId`` (ours: replaced), and under a new one when the server answers
``watching: false`` (codex; it also answers that when a path already exists: then
the waiters poll every ``POLL_S`` until the waiter whose path exists has left).
A notification is a hint: every waiter checks its own paths (``fs/getMetadata``)
and the still-waiting ones re-arm the watch. Watches end with their connection:
after a resume every waiter re-checks and re-arms.

``present`` is always null: codex takes one path there, ours a list.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["MISSING_CHANGED", "WATCH_CAPABILITY", "WATCH_MISSING", "MissingWatcher"]

WATCH_MISSING = "fs/watchMissing"
MISSING_CHANGED = "fs/missingChanged"
WATCH_CAPABILITY = "fsWatchMissing"
_IDS = itertools.count(1)  # a u64, as codex wants
POLL_S = 0.5  # how often a waiter re-checks while the server refuses to watch


class MissingWatcher:
    """The one server watch of a backend, shared by every ``watch_missing`` call."""

    def __init__(self) -> None:
        self.watch_id = next(_IDS)
        self._ids = {self.watch_id}  # every id used: a notification for any is a hint
        self._waiting: dict[int, list[str]] = {}  # waiter -> its file URIs
        self._tokens = itertools.count()
        self._armed: frozenset[str] | None = None  # what the server watches now
        self._fired = trio.Event()
        self._lock = trio.Lock()

    def notified(self, params: Any) -> None:
        if isinstance(params, dict) and params.get("watchId") in self._ids:
            self._new_id()  # that watch is over on the server: the next one is new
            self._wake()

    def _new_id(self) -> None:
        self.watch_id = next(_IDS)
        self._ids.add(self.watch_id)

    def resumed(self) -> None:
        self._wake()  # the old connection's watch is gone

    def _wake(self) -> None:
        self._armed = None
        self._fired.set()
        self._fired = trio.Event()

    async def wait(
        self,
        uris: list[str],
        request: Callable[[dict[str, Any]], Awaitable[Any]],
        appeared: Callable[[], Awaitable[bool]],
    ) -> None:
        """Return once ``appeared()`` says so, re-checking after each notification."""
        token = next(self._tokens)
        self._waiting[token] = uris
        try:
            while True:
                fired = self._fired  # a notification from here on wakes this round
                armed = await self._arm(request)
                if await appeared():  # after arming: nothing slips in between
                    return
                # Not armed: the server will not watch (codex, when one of the paths
                # already exists, for another waiter): poll until the set changes.
                with trio.move_on_after(math.inf if armed else POLL_S):
                    await fired.wait()
        finally:
            del self._waiting[token]

    async def _arm(self, request: Callable[[dict[str, Any]], Awaitable[Any]]) -> bool:
        """Make the server watch every waiter's paths; False if it will not."""
        async with self._lock:
            wanted = frozenset(u for us in self._waiting.values() for u in us)
            if self._armed is not None and wanted <= self._armed:
                return True
            self._armed = wanted  # before the request: the notification may beat the answer
            params = {"watchId": self.watch_id, "missing": sorted(wanted), "present": None}
            try:
                answer = await request(params)
                if isinstance(answer, dict) and answer.get("watching") is False:
                    self._new_id()  # codex: that id is taken; a new one replaces it
                    answer = await request({**params, "watchId": self.watch_id})
            except BaseException:
                self._armed = None
                raise
            if isinstance(answer, dict) and answer.get("watching") is False:
                self._armed = None
                return False
            return True
