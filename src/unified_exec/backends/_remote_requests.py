"""The requests a remote process handle sends besides writes: signals, resize, reads.

Split from ``_remote_process`` (which handles the events coming back): these only
need the link and the process id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .._errors import InvalidRequestError, RemoteProtocolError, RpcError, UnifiedExecError
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._request import check_tty_size

if TYPE_CHECKING:
    from ._remote_link import Link

__all__ = ["RemoteRequests"]

_STARTING_WAIT = 10.0  # how long a re-read waits for a start in progress on the server


class RemoteRequests:
    """What a RemoteProcess asks of the server about its process."""

    def __init__(self, link: Link, process_id: str) -> None:
        self._link = link
        self._process_id = process_id
        self._write_lock = trio.Lock()
        self._write_ids = 0  # writeIds "1", "2", ...: a replay after a resume reuses them

    async def terminate(self) -> None:
        await self._link.call(m.PROCESS_TERMINATE, m.TerminateParams(self._process_id), retry=True)

    async def interrupt(self) -> None:
        # Not replayed after a lost link: a doubled SIGINT is worse than a reported loss.
        await self._link.call(m.PROCESS_SIGNAL, m.SignalParams(self._process_id, "interrupt"))

    async def close_stdin(self) -> None:
        if m.PROCESS_CLOSE_STDIN not in self._link.extensions:
            raise InvalidRequestError(
                "this exec-server cannot close stdin (codex 0.169.0 has no such method)"
            )
        try:
            await self._link.call(
                m.PROCESS_CLOSE_STDIN, m.CloseStdinParams(self._process_id), retry=True
            )
        except RpcError as exc:
            if exc.code == rpc.INVALID_PARAMS:
                raise InvalidRequestError(exc.message) from None
            raise

    async def resize(self, rows: int, cols: int) -> None:
        check_tty_size(rows, cols)
        if m.PROCESS_RESIZE not in self._link.extensions:
            raise InvalidRequestError("this exec-server cannot resize a terminal")
        try:
            await self._link.call(
                m.PROCESS_RESIZE, m.ResizeParams(self._process_id, rows, cols), retry=True
            )
        except RpcError as exc:
            if exc.code == rpc.INVALID_PARAMS:
                raise InvalidRequestError(exc.message) from None
            raise

    async def _failure_text(self) -> str:
        try:
            read = m.structure(
                await self._link.call(
                    m.PROCESS_READ, m.ReadParams(self._process_id, max_bytes=1), retry=True
                ),
                m.ReadResult,
            )
        except (UnifiedExecError, m.ParamsError) as exc:
            return f"exec-server closed {self._process_id} without an exit ({exc})"
        if read.failure:
            return read.failure
        return f"closed before exited: the exec-server sent no exit for {self._process_id}"

    async def _read(self, params: m.ReadParams) -> Any:
        """``process/read``, waiting out a start still in progress on the server (after
        a resume, our re-sent start can be answered "already exists" while the first
        one is still starting)."""
        delay = 0.02
        deadline = trio.current_time() + min(self._link.request_timeout, _STARTING_WAIT)
        while True:
            try:
                return await self._link.call(m.PROCESS_READ, params, retry=True)
            except RpcError as exc:
                starting = exc.code == rpc.INVALID_REQUEST and exc.message.endswith("starting")
                if not starting:
                    raise
                if trio.current_time() >= deadline:
                    # codex 0.169-0.171 keeps a start that a dropped link cut off
                    # "starting" for good: say so rather than wait for ever.
                    raise RemoteProtocolError(
                        f"the exec-server still reports {self._process_id} as starting "
                        f"after {_STARTING_WAIT:g} s: its start was cut off by the dropped "
                        "link and will not complete"
                    ) from None
            await trio.sleep(delay)
            delay = min(delay * 2, 0.5)
