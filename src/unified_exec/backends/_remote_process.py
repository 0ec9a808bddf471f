"""The ProcessHandle of one process on an exec-server.

Events arrive pushed (``process/output|exited|closed``), out of seq order at times, and
are released strictly in seq order. A seq that stays missing is fetched with
``process/read``; so is everything after a resume (a server does not push what happened
while the session was detached). What the server no longer retains is skipped, which
readers see as a ``LostEvent``; an exit is inferred from a read only when none is known
(defect 5). A process that failed on the server ends ``closed`` with no exit: it fails
with the server's own text (defect 11).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from .._errors import (
    InvalidRequestError,
    RemoteProtocolError,
    RpcError,
    TransportLostError,
    UnifiedExecError,
)
from .._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent, ProcessEvent, WriteStatus
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._protocol._reorder import SeqEvent, SeqReorderer
from .._request import check_tty_size
from ._description import Capability
from ._remote_description import remote_capabilities

if TYPE_CHECKING:
    from ._remote_link import Link

__all__ = ["RemoteProcess"]

log = logging.getLogger("unified_exec.remote")

GAP_GRACE = 0.25  # how long a seq may be missing before we fetch it
CLIENT_BUFFER_BYTES = 16 * 1024 * 1024  # per process, while its reader lags
MAX_HELD = 1024  # events held back behind a missing seq before output is dropped (refetched)
_STARTING_WAIT = 10.0  # how long a re-read waits for a start in progress on the server
_READ_BYTES = 1024 * 1024  # per refetch read: what codex retains in all
_STATUS = {s.value: s for s in WriteStatus}


class RemoteProcess:
    """The ProcessHandle of a process on an exec-server."""

    def __init__(self, link: Link, routes: dict[str, RemoteProcess], process_id: str) -> None:
        self._link = link
        self._routes = routes
        self._process_id = process_id
        self._order = SeqReorderer()
        self._ready: deque[ProcessEvent] = deque()
        self._ready_bytes = 0
        self._dropping = False  # output is being dropped until the next refetch
        self._changed = trio.lowlevel.ParkingLot()
        self._ended = False
        self._events_taken = False
        self._gap_at: int | None = None  # the first missing seq whose grace runs
        self._gap_deadline = 0.0
        self._fill_lock = trio.Lock()
        self._write_lock = trio.Lock()
        self._write_ids = 0  # writeIds "1", "2", ...: a replay after a resume reuses them
        self.started = False  # process/start answered: only then can it be re-read

    @property
    def process_id(self) -> str:
        return self._process_id

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Interrupt everywhere; resize and close-stdin where the server announces them."""
        return remote_capabilities(self._link.extensions)

    # -- fed by the connection -------------------------------------------------------

    def deliver(self, method: str, params: Any) -> None:
        if self._ended:
            return
        if method == m.OUTPUT and (
            self._dropping
            or self._ready_bytes >= CLIENT_BUFFER_BYTES
            or self._order.held >= MAX_HELD  # a gap that output piles up behind (codex #31576)
        ):
            # The reader lags and the connection must keep flowing for the other
            # processes: drop output here (all of it until the refetch, or it would
            # pile up behind the gap); it is fetched again with process/read when
            # the reader catches up, or reported lost if the server evicted it.
            self._dropping = True
            return
        try:
            if method == m.OUTPUT:
                o = m.structure(params, m.OutputParams)
                event: SeqEvent = OutputEvent(o.seq, o.stream, o.chunk)
            elif method == m.EXITED:
                e = m.structure(params, m.ExitedParams)
                event = ExitedEvent(e.seq, e.exit_code)
            else:
                c = m.structure(params, m.ClosedParams)
                event = ClosedEvent(c.seq)
        except m.ParamsError as exc:
            log.warning("bad %s notification for %s: %s", method, self._process_id, exc)
            return
        self._release(self._order.push(event))
        self._changed.unpark_all()  # even if held back: a new gap starts its grace

    def _release(self, events: list[SeqEvent]) -> None:
        if events:
            self._ready.extend(events)
            self._ready_bytes += sum(len(e.data) for e in events if isinstance(e, OutputEvent))
            self._changed.unpark_all()

    def fail(self, message: str) -> None:
        if not self._ended and not self._order.done:
            self._ready.append(FailedEvent(message))
            self._ended = True
            self._changed.unpark_all()

    async def resync(self) -> None:
        """After a resume: fetch what happened while the session was detached.

        A process whose start is still in flight is skipped (the server would answer
        "starting"); ``start()`` resyncs it once its answer comes.
        """
        if self.started and not self._ended and not self._order.done:
            await self._fill()

    # -- ProcessHandle -----------------------------------------------------------------

    def events(self) -> AsyncIterator[ProcessEvent]:
        if self._events_taken:
            raise RuntimeError("events() of a process handle can be taken only once")
        self._events_taken = True
        return self._event_stream()

    async def _event_stream(self) -> AsyncIterator[ProcessEvent]:
        try:
            while True:
                await self._wait_ready()
                event = self._ready.popleft()
                if isinstance(event, OutputEvent):
                    self._ready_bytes -= len(event.data)
                if isinstance(event, ClosedEvent) and not self._order.exit_released:
                    # The server's form for a process that failed: closed, no exit.
                    event = FailedEvent(await self._failure_text())
                    self._ended = True
                yield event
                if isinstance(event, ClosedEvent | FailedEvent):
                    return
        finally:
            self._routes.pop(self._process_id, None)

    async def _wait_ready(self) -> None:
        while not self._ready:
            if self._dropping:  # we dropped output: fetch it now
                await self._fill()
                continue
            gap = self._order.gap
            if gap is None:
                self._gap_at = None
                await self._changed.park()
                continue
            now = trio.current_time()
            if self._gap_at != gap[0]:  # a new gap: its grace starts now (defect 22)
                self._gap_at, self._gap_deadline = gap[0], now + GAP_GRACE
            if now >= self._gap_deadline:
                await self._fill()
                self._gap_deadline = trio.current_time() + GAP_GRACE
                continue
            with trio.move_on_at(self._gap_deadline):
                await self._changed.park()

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

    async def _fill(self) -> None:
        async with self._fill_lock:
            self._dropping = False  # notifications from here on are kept again
            try:
                await self._fetch_missing()
            except TransportLostError as exc:  # lost for good: say so as the link does
                self.fail(str(exc))
            except (UnifiedExecError, m.ParamsError) as exc:
                self.fail(f"could not fetch missing output of {self._process_id}: {exc}")

    async def _fetch_missing(self) -> None:
        """Read everything after what we hold until a read comes back empty (then its
        ``nextSeq`` is the server's next unassigned seq), then account for each seq
        still missing: the exit, the close, or output the server no longer has."""
        cursor = self._order.next_seq - 1
        while not self._ended and not self._order.done:
            cursor = max(cursor, self._order.next_seq - 1)
            budget = min(self._link.limits.max_read_bytes, _READ_BYTES)
            params = m.ReadParams(self._process_id, after_seq=cursor, max_bytes=budget)
            read = m.structure(await self._read(params), m.ReadResult)
            if not read.chunks:
                self._settle(read)
                return
            for chunk in read.chunks:
                self._release(self._order.push(OutputEvent(chunk.seq, chunk.stream, chunk.chunk)))
            if self._order.exit_known or not read.exited:
                # A read starts at the oldest output retained: what is older and still
                # missing is gone (if the exit could be in there, the final read settles).
                self._give_up_through(read.chunks[0].seq - 1)
            cursor = max(cursor, read.chunks[-1].seq, read.next_seq - 1)
            if self._order.gap is None and self._order.held:
                return  # pushed notifications cover the rest
            if self._ready_bytes >= CLIENT_BUFFER_BYTES:
                return  # the reader catches up first; what it misses meanwhile is refetched

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

    def _settle(self, read: m.ReadResult) -> None:
        """Account for the seqs still missing after a complete read (one with no chunks:
        its ``nextSeq`` is the server's next unassigned seq)."""
        if read.failure is not None:
            self.fail(read.failure)
            return
        top = read.next_seq - 1  # the last seq the server had assigned
        holes = self._latest_holes(top, 2)
        if read.closed and holes and holes[0] == top:  # closed is the last seq
            self._release(self._order.push(ClosedEvent(holes.pop(0))))
        if read.exited and read.exit_code is not None and not self._order.exit_known and holes:
            # The exit took a seq no retained output took: the latest such one (what
            # retention evicted is the oldest output).
            self._release(self._order.push(ExitedEvent(holes[0], read.exit_code)))
        self._give_up_through(top)

    def _latest_holes(self, top: int, count: int) -> list[int]:
        """Up to ``count`` missing seqs at or below ``top``, latest first (bounded work:
        only held events are stepped over)."""
        out: list[int] = []
        s = top
        while s >= self._order.next_seq and len(out) < count:
            if not self._order.holds(s):
                out.append(s)
            s -= 1
        return out

    def _give_up_through(self, last: int) -> None:
        """Skip the missing seqs up to ``last``: the server no longer has them. Readers
        see a LostEvent; what is held after them is released, nothing held is dropped."""
        while (gap := self._order.gap) is not None and gap[0] <= last:
            upto = min(gap[1], last)
            log.warning("seqs %d..%d of %s are gone", gap[0], upto, self._process_id)
            self._release(self._order.skip_to(upto + 1))

    async def write(self, data: bytes) -> WriteStatus:
        """Send ``data`` in frames of at most ``max_write_chunk`` bytes, each with its own
        writeId; one cut link mid-way is survived by replaying the unacknowledged frame
        with the same writeId after the resume (the server writes it once)."""
        size = self._link.limits.max_write_chunk
        status = WriteStatus.ACCEPTED
        async with self._write_lock:
            for offset in range(0, len(data) or 1, size):
                self._write_ids += 1
                params = m.WriteParams(
                    self._process_id, data[offset : offset + size], write_id=str(self._write_ids)
                )
                try:
                    result = await self._link.call(m.PROCESS_WRITE, params, retry=True)
                except RpcError as exc:
                    if exc.code == rpc.INTERNAL_ERROR:  # codex: "failed to write to process stdin"
                        return WriteStatus.STDIN_CLOSED
                    raise
                wire = result.get("status") if isinstance(result, dict) else None
                if wire not in _STATUS:
                    raise RemoteProtocolError(f"process/write answered {result!r}")
                status = _STATUS[wire]
                if status is not WriteStatus.ACCEPTED:
                    break
        return status

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
