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
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from .._errors import (
    RemoteProtocolError,
    RpcError,
    TransportLostError,
    UnifiedExecError,
)
from .._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent, ProcessEvent, WriteStatus
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._protocol._reorder import SeqEvent, SeqReorderer
from ._base import Sink
from ._description import Capability
from ._remote_description import remote_capabilities
from ._remote_requests import RemoteRequests

if TYPE_CHECKING:
    from ._remote_link import Link

__all__ = ["RemoteProcess"]

log = logging.getLogger("unified_exec.remote")

GAP_GRACE = 0.25  # how long a seq may be missing before we fetch it
CLIENT_BUFFER_BYTES = 16 * 1024 * 1024  # per process, while its reader lags
MAX_HELD = 1024  # events held back behind a missing seq before output is dropped (refetched)
_READ_BYTES = 1024 * 1024  # per refetch read: what codex retains in all
_STATUS = {s.value: s for s in WriteStatus}


Spawn = Callable[[Callable[[], Awaitable[None]]], None]


class _Events:
    """``events()`` of a RemoteProcess: an async iterator, and a DirectEvents (see
    ``unified_exec.backends._base``) whose sink takes events in the connection's
    reader task, as they arrive."""

    __slots__ = ("_proc",)

    def __init__(self, proc: RemoteProcess) -> None:
        self._proc = proc

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> ProcessEvent:
        return await self._proc._next()

    def connect(self, sink: Sink) -> None:
        self._proc._connect(sink)

    async def aclose(self) -> None:
        self._proc._finish_stream()
        await trio.lowlevel.checkpoint()


class RemoteProcess(RemoteRequests):
    """The ProcessHandle of a process on an exec-server.

    Its events reach the consumer one of two ways. A consumer that iterates
    ``events()`` waits in ``_wait_ready``, which also fetches what is missing (a gap
    past its grace, output dropped for a lagging reader). A consumer that connects a
    sink and does not iterate gets every event in order straight from ``deliver``;
    when an event needs a request first (a gap, dropped output, the failure text of a
    process closed without an exit), a short helper task does that work and feeds
    the sink, and ends once nothing is missing. The sink refusing an event (its
    reader is behind) hands everything from there on to the iterator.
    """

    def __init__(
        self,
        link: Link,
        routes: dict[str, RemoteProcess],
        process_id: str,
        spawn: Spawn | None = None,
    ) -> None:
        super().__init__(link, process_id)
        self._routes = routes
        self._spawn = spawn
        self._sink: Sink | None = None
        self._iterated = False  # a consumer iterates (or the sink refused: it will)
        self._helper: trio.CancelScope | None = None  # the sink's helper task runs
        self._helper_done = trio.Event()
        self._stream_done = False  # the terminal event was handed out
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
        self.started = False  # process/start answered: only then can it be re-read

    @property
    def process_id(self) -> str:
        return self._process_id

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Interrupt everywhere; resize and close-stdin where the server announces them."""
        return remote_capabilities(self._link.extensions)

    # -- fed by the connection -------------------------------------------------------

    def deliver(self, method: str, params: Any) -> bool:
        """Take one pushed notification; True if a reader now has an event to take
        (the connection then lets it run before the next frame)."""
        if self._ended:
            return False
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
            self._need_helper()
            return True
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
            return False
        self._release(self._order.push(event))
        if self._order.gap is not None:
            self._changed.unpark_all()  # even if held back: a new gap starts its grace
            self._need_helper()
        return bool(self._ready)

    def _release(self, events: Sequence[ProcessEvent]) -> None:
        if not events:
            return
        if self._sink is not None and not (self._iterated or self._helper or self._ready):
            taken = self._offer(events)
            if taken == len(events):
                self._need_helper()  # a gap or a drop may still be waiting for a fetch
                return
            events = events[taken:]
        self._ready.extend(events)
        self._ready_bytes += sum(len(e.data) for e in events if isinstance(e, OutputEvent))
        self._changed.unpark_all()
        self._need_helper()

    def _offer(self, events: Sequence[ProcessEvent]) -> int:
        """Hand ``events`` to the sink in order; how many it took. It stops before a
        closed that has no exit (its failure text needs a request first) and at the
        first refusal (from then on the consumer iterates)."""
        sink = self._sink
        assert sink is not None
        for i, event in enumerate(events):
            if type(event) is ClosedEvent and not self._order.exit_released:
                return i
            if not sink(event):
                self._iterated = True
                return i
            if isinstance(event, ClosedEvent | FailedEvent):
                self._finish_stream()
                return len(events)
        return len(events)

    def fail(self, message: str) -> None:
        if not self._ended and not self._order.done:
            self._ended = True
            self._release([FailedEvent(message)])

    # -- the sink's helper ---------------------------------------------------------

    def _connect(self, sink: Sink) -> None:
        self._sink = sink
        if self._ready and not self._iterated:
            events = list(self._ready)
            self._ready.clear()
            self._ready_bytes = 0
            self._release(events)
        # A gap held (or output dropped) before the log connected needs its fetch
        # too: with a sink alone nobody iterates, so the helper must do it.
        self._need_helper()

    def _need_helper(self) -> None:
        """Start the helper if a sink alone takes events and some work is waiting."""
        if (
            self._sink is None
            or self._iterated
            or self._helper is not None
            or self._stream_done
            or not (self._ready or self._dropping or self._order.gap is not None)
        ):
            return
        if self._spawn is None:  # nobody to run it: the consumer has to iterate
            self._iterated = True
            return
        self._helper = trio.CancelScope()
        self._helper_done = trio.Event()
        try:
            self._spawn(self._help)
        except RuntimeError:  # the backend is closing: nothing more will be read
            self._helper = None

    async def _help(self) -> None:
        scope = self._helper
        assert scope is not None and self._sink is not None
        try:
            with scope:
                while not self._iterated and not self._stream_done:
                    if not (self._ready or self._dropping or self._order.gap is not None):
                        return  # nothing missing: deliver() feeds the sink again
                    await self._wait_ready()
                    with trio.CancelScope(shield=True):  # an event, once taken, is handed on
                        event = await self._take()
                    if not self._sink(event):
                        self._ready.appendleft(event)  # the iterator's, from here on
                        if isinstance(event, OutputEvent):
                            self._ready_bytes += len(event.data)
                        self._iterated = True
                        return
                    if isinstance(event, ClosedEvent | FailedEvent):
                        return
        except Exception:  # never into the backend's nursery
            log.exception("feeding the events of %s failed", self._process_id)
        finally:
            self._helper = None
            self._helper_done.set()

    async def resync(self) -> None:
        """After a resume: fetch what happened while the session was detached.

        A process whose start is still in flight is skipped (the server would answer
        "starting"); ``start()`` resyncs it once its answer comes.
        """
        if self.started and not self._ended and not self._order.done:
            await self._fill()

    # -- ProcessHandle -----------------------------------------------------------------

    def events(self) -> _Events:
        if self._events_taken:
            raise RuntimeError("events() of a process handle can be taken only once")
        self._events_taken = True
        return _Events(self)

    async def _next(self) -> ProcessEvent:
        if self._stream_done:
            raise StopAsyncIteration
        if not self._iterated:
            self._iterated = True
            if self._helper is not None:  # it stops at its next step; then we take over
                self._helper.cancel()
                await self._helper_done.wait()
                if self._stream_done:
                    raise StopAsyncIteration
        await self._wait_ready()
        return await self._take()

    async def _take(self) -> ProcessEvent:
        """The next ready event (there is one), as the consumer gets it."""
        event = self._ready.popleft()
        if isinstance(event, OutputEvent):
            self._ready_bytes -= len(event.data)
        if isinstance(event, ClosedEvent) and not self._order.exit_released:
            # The server's form for a process that failed: closed, no exit.
            event = FailedEvent(await self._failure_text())
            self._ended = True
        if isinstance(event, ClosedEvent | FailedEvent):
            self._finish_stream()
        return event

    def _finish_stream(self) -> None:
        self._stream_done = True
        if self._helper is not None:
            self._helper.cancel()
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
        lock = self._write_lock
        if lock.locked():
            await lock.acquire()
        else:  # uncontended: no scheduler pass (the request makes its own)
            await trio.lowlevel.checkpoint_if_cancelled()
            lock.acquire_nowait()
        try:
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
        finally:
            lock.release()
        return status
