"""`fs/watchMissing` and its `fs/missingChanged` notification, as the codex CLI uses them.

At start-up codex probes for paths that may appear later (the project's
``.agents/skills``, ``.git`` in the cwd and every parent) and, when the executor
announces the ``fsWatchMissing`` capability, asks it to watch them:
``fs/watchMissing {watchId, missing: [uri...], present: [uri...] | null}`` answered
``{"watching": true}``. When one of the ``missing`` paths comes into existence (or one
of the ``present`` ones goes away) the server sends ``fs/missingChanged {watchId}``
once, and codex re-reads its skills and project root (recorded from codex 0.171.0's
own exec-server).

Watches belong to the connection: they are polled (every ``POLL_S`` seconds, the stat
calls in a worker thread) by a task in the connection's nursery, so they end with it.
A connection holds at most ``MAX_WATCHES`` watches of at most ``MAX_PATHS`` paths;
re-using a ``watchId`` replaces that watch. Paths follow `_fs` rules (absolute,
normalised ``file://`` URIs).
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._protocol import _jsonrpc as rpc
from .._protocol._messages import ParamsError
from ._conn import Gone, spawn_guarded
from ._errors_map import Fail
from ._fs import fs_path

if TYPE_CHECKING:
    from ._conn import ConnState
    from ._session import Session

__all__ = ["MAX_PATHS", "MAX_WATCHES", "POLL_S", "watch_methods"]

POLL_S = 0.5
MAX_WATCHES = 64
MAX_PATHS = 1024
METHOD = "fs/watchMissing"
NOTIFICATION = "fs/missingChanged"


def _paths(params: dict[str, Any], key: str) -> list[str]:
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParamsError(f"invalid type for `{key}`: expected a sequence of file URIs")
    return [fs_path(v, key) for v in value]


def _changed(missing: list[str], present: list[str]) -> bool:
    return any(os.path.lexists(p) for p in missing) or not all(os.path.lexists(p) for p in present)


class _Watches:
    """The watches of one connection: watchId -> the cancel scope of its poller."""

    def __init__(self) -> None:
        self.scopes: dict[Any, trio.CancelScope] = {}


def watch_methods() -> dict[str, tuple[Any, Literal["free"]]]:
    """``{"fs/watchMissing": (handler, "free")}`` for ``Methods.table``."""
    registry: weakref.WeakKeyDictionary[ConnState, _Watches] = weakref.WeakKeyDictionary()

    async def poll(
        state: ConnState, watch_id: Any, missing: list[str], present: list[str],
        scope: trio.CancelScope,
    ) -> None:  # fmt: skip
        watches = registry.get(state)
        with scope:
            while True:
                await trio.sleep(POLL_S)  # first after the answer to the request
                if await trio.to_thread.run_sync(_changed, missing, present):
                    break
            if watches is not None and watches.scopes.get(watch_id) is scope:
                del watches.scopes[watch_id]
            note = rpc.Notification(method=NOTIFICATION, params={"watchId": watch_id})
            try:
                await state.send(note)
            except Gone:
                pass

    async def watch_missing(state: ConnState, session: Session, params: Any) -> Any:
        if not isinstance(params, dict):
            raise ParamsError("invalid type: expected a params object")
        if "watchId" not in params:
            raise ParamsError("missing field `watchId`")
        watch_id = params["watchId"]
        if not isinstance(watch_id, int | str) or isinstance(watch_id, bool):
            raise ParamsError("invalid type for `watchId`")
        missing, present = _paths(params, "missing"), _paths(params, "present")
        if len(missing) + len(present) > MAX_PATHS:
            raise Fail(rpc.INVALID_REQUEST, f"fs/watchMissing watches at most {MAX_PATHS} paths")
        watches = registry.setdefault(state, _Watches())
        old = watches.scopes.pop(watch_id, None)
        if old is not None:
            old.cancel()
        if len(watches.scopes) >= MAX_WATCHES:
            raise Fail(rpc.INVALID_REQUEST, f"at most {MAX_WATCHES} watches per connection")
        scope = trio.CancelScope()
        watches.scopes[watch_id] = scope
        await trio.lowlevel.checkpoint()
        spawn_guarded(state.nursery, lambda: poll(state, watch_id, missing, present, scope), METHOD)
        return {"watching": True}

    return {METHOD: (watch_missing, "free")}
