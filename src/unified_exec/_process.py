"""UnifiedExecProcess: one process from any backend, with one behaviour.

The handle's events go into an EventLog: straight from the backend's own task
when it can hand them over (``DirectEvents``), else through a system task (the
pump). Neither holds the UnifiedExecProcess, so dropping the last reference to a
process lets it be collected, and collection terminates it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Final

import attrs
import trio

from ._errors import InvalidRequestError, ProtocolError, TransportLostError, UnifiedExecError
from ._events import (
    ClosedEvent,
    ExitedEvent,
    FailedEvent,
    LostEvent,
    OutputEvent,
    ProcessEvent,
    WriteStatus,
)
from ._log import EventLog, EvictedSeqs
from ._readwait import checkpoint, park_until, ready_checkpoint
from ._request import ExecRequest
from ._state import ProcessState
from ._validate import check_duration, check_size
from .backends._base import (
    Capability,
    DirectEvents,
    ExecBackend,
    ProcessHandle,
    capabilities_of,
    direct_events,
)

__all__ = ["DEFAULT_RETENTION_BYTES", "ReadResult", "UnifiedExecProcess", "open_process"]

log = logging.getLogger("unified_exec")

DEFAULT_RETENTION_BYTES: Final = 1024 * 1024
# How long a held-back chunk that already fits waits for the reader to free a whole
# batch (see _Shared.progressed): long against a reader's step (~20 us), short
# against anything a person or a timeout would notice.
_FIT_GRACE: Final = 0.002
_NO_DEADLINE: Final = float("inf")
_TERMINATE_BOUND = 30.0


@attrs.frozen
class ReadResult:
    """Output after a cursor, and where things stand.

    ``cursor`` is what to pass as ``after_seq`` to the next read (or to
    ``events()``): it is ``next_seq - 1``, spelled out. ``evicted`` lists the output
    seqs after your cursor that retention dropped before you read them (empty if
    none; a range, or an ``EvictedSeqs`` when the exit event sits among them): a
    gap is always reported, never skipped in silence. ``closed`` means no event
    will ever follow (the process closed or failed).
    """

    chunks: tuple[OutputEvent, ...]
    next_seq: int
    state: ProcessState
    closed: bool
    evicted: range | EvictedSeqs = range(0)

    @property
    def cursor(self) -> int:
        """The ``after_seq`` for the next read: nothing repeated, nothing skipped."""
        return self.next_seq - 1


class _Shared:
    """What the pump and the readers share."""

    __slots__ = (
        "_direct",
        "_grace",
        "_held",
        "_need",
        "_progress",
        "_pumping",
        "changed",
        "log",
        "unthrottled",
    )

    def __init__(self, retention_bytes: int) -> None:
        self.log = EventLog(retention_bytes)
        self.changed = trio.lowlevel.ParkingLot()  # something was appended
        self._progress: trio.lowlevel.ParkingLot | None = None  # see progressed()
        # Once the process is being terminated, nothing is held back for readers any
        # more: a reader paused inside its own loop (say, the one calling terminate)
        # must not keep the end from coming. What an active reader has not seen yet
        # is then kept by the log instead (pin_unseen), so terminating loses nothing.
        self.unthrottled = False
        self._pumping = False  # a pump task runs (or has run)
        self._direct: tuple[str, DirectEvents] | None = None  # (process id, events)
        self._held = 0  # the size of the chunk a held-back pump holds
        self._need = 0  # the room it waits for (see progressed())
        self._grace: trio.CancelScope | None = None  # its wait, while it waits

    def unthrottle(self) -> None:
        self.log.pin_unseen = True
        self.unthrottled = True
        self.progressed()

    def progressed(self) -> None:
        """An active reader moved on (or went): a held-back pump looks again, once
        there is room for its chunk and half the retention more. Waking it for every
        chunk a reader takes would cost a pass per chunk on each side; this way the
        pump appends a batch per wake-up, and the reader still has half the
        retention to read meanwhile. Its chunk may fit before that, and the reader
        then pause (its iterator open, a process waiting on that chunk): so from
        the moment it fits the pump waits at most _FIT_GRACE, and then takes it."""
        lot = self._progress
        if not lot:
            return
        if self.unthrottled or not self.log.would_evict_unseen(self._need):
            lot.unpark_all()
            return
        grace = self._grace
        if (
            grace is not None
            and grace.deadline == _NO_DEADLINE
            and not self.log.would_evict_unseen(self._held)
        ):
            grace.deadline = trio.current_time() + _FIT_GRACE

    async def _wait_progress(self, held: int) -> None:
        """Until progressed() lets the pump look again at its ``held``-byte chunk."""
        if self._progress is None:  # made on first use: most processes never wait
            self._progress = trio.lowlevel.ParkingLot()
        self._held = held
        self._need = held + self.log.retention_bytes // 2
        try:
            with trio.CancelScope() as self._grace:
                await self._progress.park()
        finally:
            self._grace = None

    def fail(self, message: str) -> None:
        """End the log with a failure, unless it has already ended."""
        if not self.log.terminal:
            self.log.append(FailedEvent(message))
            self.changed.unpark_all()

    def append(self, event: OutputEvent | ExitedEvent | ClosedEvent | FailedEvent) -> None:
        if self.log.terminal:  # failed on our side (say, terminate() gave up)
            return
        try:
            self.log.append(event)
        except ProtocolError as exc:
            log.warning("backend broke the event rules: %s", exc)
            self.log.append(FailedEvent(f"backend protocol error: {exc}"))
        self.changed.unpark_all()

    def attach(self, handle: ProcessHandle) -> None:
        """Start taking ``handle``'s events.

        A backend whose iterator can hand events over in its own task
        (``DirectEvents``) needs no task here: events go straight into the log
        (``offer``), and a pump starts only once the log has to hold one back.
        Any other iterator gets a pump of its own (a system task).
        """
        try:
            events = handle.events()
        except Exception as exc:
            log.exception("process event pump failed")
            self.append(FailedEvent(f"backend error: {exc!r}"))
            return
        direct = direct_events(events)
        if direct is None:
            self._start_pump(handle.process_id, events)
            return
        self._direct = (handle.process_id, direct)
        direct.connect(self.offer)

    def _start_pump(self, process_id: str, events: AsyncIterator[ProcessEvent]) -> None:
        self._pumping = True
        trio.lowlevel.spawn_system_task(self.pump, events, name=f"unified_exec pump {process_id}")

    def offer(self, event: ProcessEvent) -> bool:
        """The backend's sink (see backends/_queue.py): take ``event`` now, in the
        producer's task, unless the log would have to hold it back; then the pump
        (started now, if it is not running) takes it when there is room."""
        if (
            type(event) is OutputEvent
            and not self.unthrottled
            and self.log.would_evict_unseen(len(event.data))
        ):
            if not self._pumping and self._direct is not None:
                self._start_pump(*self._direct)
            return False
        self.append(event)
        return True

    async def pump(self, events: AsyncIterator[ProcessEvent]) -> None:
        # A local queue frees its producer in batches too; while the pump waits,
        # whatever room it has left must reach the producer (EventIterator.pausing).
        pausing: Callable[[], None] | None = getattr(events, "pausing", None)
        try:
            async for event in events:
                if isinstance(event, OutputEvent):
                    while not self.unthrottled and self.log.would_evict_unseen(len(event.data)):
                        if pausing is not None:
                            pausing()
                        await self._wait_progress(len(event.data))
                self.append(event)
                if self.log.terminal:
                    return
            if not self.log.terminal:
                self.append(FailedEvent("backend event stream ended without a closed event"))
        except trio.Cancelled:
            if not self.log.terminal:
                self.append(FailedEvent("process event pump was cancelled (the trio run ended)"))
            raise
        except Exception as exc:
            log.exception("process event pump failed")
            if not self.log.terminal:
                self.append(FailedEvent(f"backend error: {exc!r}"))


class UnifiedExecProcess:
    """A running (or finished) process, the same whichever backend runs it.

    Create it with ``await UnifiedExecProcess.start(backend, request)`` or, to tie
    its life to a block, ``async with open_process(backend, request)``.
    """

    __slots__ = ("__weakref__", "_handle", "_poll", "_shared", "_token")

    def __init__(self, handle: ProcessHandle, shared: _Shared) -> None:
        """Private: use start() or from_handle()."""
        self._handle = handle
        self._shared = shared
        self._token = trio.lowlevel.current_trio_token()
        # A local handle can read what its child has already written, right now, in
        # the caller's task (as trio's own receive_some tries os.read before it
        # waits): a read that would wait then often has its answer without a task
        # switch. It reads only as its reader task would (room in the queue).
        self._poll: Callable[[], None] | None = getattr(handle, "poll_output", None)

    @classmethod
    async def start(
        cls,
        backend: ExecBackend,
        request: ExecRequest,
        *,
        retention_bytes: int = DEFAULT_RETENTION_BYTES,
    ) -> UnifiedExecProcess:
        """Start ``request`` on ``backend``; raises LaunchError if it cannot run."""
        if not isinstance(request, ExecRequest):
            raise InvalidRequestError(f"expected an ExecRequest, got {type(request).__name__}")
        _check_retention(retention_bytes)
        handle = await backend.start(request)
        return cls.from_handle(handle, retention_bytes=retention_bytes)

    @classmethod
    def from_handle(
        cls, handle: ProcessHandle, *, retention_bytes: int = DEFAULT_RETENTION_BYTES
    ) -> UnifiedExecProcess:
        """Wrap a handle some backend already started (must run inside trio)."""
        _check_retention(retention_bytes)
        shared = _Shared(retention_bytes)
        shared.attach(handle)
        return cls(handle, shared)

    # -- facts -----------------------------------------------------------------------

    @property
    def process_id(self) -> str:
        return self._handle.process_id

    @property
    def state(self) -> ProcessState:
        return self._shared.log.state

    @property
    def last_seq(self) -> int:
        """The newest seq this process has seen (0 before any event)."""
        return self._shared.log.last_seq

    @property
    def closed(self) -> bool:
        """True once nothing more will happen: closed, or failed."""
        return self._shared.log.terminal

    def __repr__(self) -> str:
        return f"<UnifiedExecProcess {self.process_id!r} {self.state}>"

    # -- actions ---------------------------------------------------------------------

    async def write(self, data: bytes | str) -> WriteStatus:
        """Write to stdin (str is UTF-8 encoded). Never hangs on a finished process:
        after exit or terminate it answers STDIN_CLOSED."""
        if isinstance(data, str):
            try:
                data = data.encode()
            except UnicodeEncodeError as exc:
                raise InvalidRequestError(
                    f"write() text is not valid Unicode (a lone surrogate at {exc.start}?); "
                    "pass bytes to write arbitrary data"
                ) from None
        elif not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidRequestError(f"write() takes bytes or str, not {type(data).__name__}")
        if self._shared.log.state.has_exited:
            return WriteStatus.STDIN_CLOSED
        return await self._handle.write(bytes(data))

    async def terminate(self) -> ProcessState:
        """Kill the process group (SIGTERM, then SIGKILL) and wait until closed.

        If the backend cannot do it (the link is lost, the server does not answer in
        time, it answers an error), that is the outcome: the state says so
        (``failure_message``) rather than an exception. Output an active reader
        (``events()``) has not yet taken is kept for it, however fast the child wrote.
        """
        if not self.closed:
            self._shared.unthrottle()
            try:
                await self._handle.terminate()
            except TransportLostError:
                pass  # the handle fails the process; wait() below sees it
            except UnifiedExecError as exc:
                self._shared.fail(f"terminate failed: {exc}")
        return await self.wait()

    async def close_stdin(self) -> None:
        """Send EOF to a ``pipe_stdin`` process (later writes answer STDIN_CLOSED).

        An optional capability (``Capability.CLOSE_STDIN``): a handle without it (or
        a tty process) raises InvalidRequestError.
        """
        if Capability.CLOSE_STDIN not in capabilities_of(self._handle):
            raise InvalidRequestError("this backend cannot close a process's stdin")
        if not self.closed:
            await self._handle.close_stdin()  # type: ignore[attr-defined]

    async def interrupt(self) -> None:
        """SIGINT to the process group."""
        if not self.closed:
            await self._handle.interrupt()

    async def resize(self, rows: int, cols: int) -> None:
        await self._handle.resize(rows, cols)

    async def wait(self) -> ProcessState:
        """Return the final state once the process is closed (or failed)."""
        while not self._shared.log.terminal:
            await self._shared.changed.park()
        return self._shared.log.state

    # -- reading ---------------------------------------------------------------------

    async def read(
        self, *, after_seq: int = 0, max_bytes: int | None = None, wait: float = 0.0
    ) -> ReadResult:
        """Retained output after ``after_seq``, in seq order.

        Returns at once if anything (output, exit, close) is newer than
        ``after_seq``; otherwise waits up to ``wait`` seconds for it.
        """
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidRequestError(f"after_seq must be an int >= 0, got {after_seq!r}")
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
        ):
            raise InvalidRequestError(f"max_bytes must be None or an int >= 0, got {max_bytes!r}")
        wait = check_duration("wait", wait) or 0.0
        shared = self._shared
        if wait <= 0:
            await trio.lowlevel.checkpoint()  # a poll: it always lets others run
        else:
            await self._wait_for_news(after_seq, wait)
        piece = shared.log.read(after_seq, max_bytes)
        return ReadResult(
            chunks=piece.chunks,
            next_seq=piece.next_seq,
            state=shared.log.state,
            closed=shared.log.terminal,
            evicted=piece.evicted,
        )

    async def _wait_for_news(self, after_seq: int, wait: float) -> None:
        log = self._shared.log
        poll = self._poll
        if not log.has_news(after_seq) and poll is not None:
            poll()
            if not log.has_news(after_seq):
                # The child is often a few µs from answering (a PTY echoes from a
                # kernel worker): one pass and a second look before parking, which
                # is a sleep in epoll and a wake-up through the supervisor's task.
                await checkpoint()
                poll()
                if log.has_news(after_seq):
                    return  # that pass was this read's checkpoint
        if log.has_news(after_seq):
            await ready_checkpoint()
        else:
            await park_until(self._shared.changed, lambda: log.has_news(after_seq), wait)

    def events(self, *, after_seq: int = 0) -> EventStream:
        """Every event after ``after_seq`` in seq order, ending after Closed or Failed.

        While this iterator is being consumed it holds the producer back rather than
        let retention drop output it has not yielded (a LostEvent reports output
        dropped before it started). Close it (``aclose()``, or leave the ``async
        for``) when you stop reading early.
        """
        return EventStream(self._shared, after_seq, owner=self)

    # -- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> UnifiedExecProcess:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.closed:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(_TERMINATE_BOUND):
            await self.terminate()

    def __del__(self) -> None:
        # The GC may run this in any thread and during interpreter shutdown: touch
        # no trio object here, only hand the work to the run that created us.
        shared = getattr(self, "_shared", None)
        if shared is None or shared.log.terminal:
            return
        handle = self._handle
        try:
            warnings.warn(
                f"unified_exec process {handle.process_id} was dropped while running; "
                "terminating it (use `async with` or terminate() to end it explicitly)",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        except Exception:
            pass

        def collect() -> None:  # runs in the trio thread; must never raise
            try:
                trio.lowlevel.spawn_system_task(
                    _terminate_quietly, handle, name=f"unified_exec collect {handle.process_id}"
                )
            except Exception:
                log.debug("could not terminate collected process %s", handle.process_id)

        try:
            self._token.run_sync_soon(collect)
        except Exception:  # the run is over; its own teardown reaps the child
            pass


class EventStream:
    """Async iterator over a process's events (see UnifiedExecProcess.events).

    Every step is a cancellation point. One whose event is already there takes a
    scheduler pass only one time in 16, as ``read()`` does: a stream of 64 KiB chunks
    was paying a pass (~20 us) per chunk.
    """

    def __init__(
        self, shared: _Shared, after_seq: int, *, owner: UnifiedExecProcess | None = None
    ) -> None:
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidRequestError(f"after_seq must be an int >= 0, got {after_seq!r}")
        # A strong reference: iterating must keep the process alive (dropping the
        # last reference to a process terminates it).
        self._owner = owner
        try:
            self._trio_token: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
        except RuntimeError:  # made outside a run: it can only be iterated in one later
            self._trio_token = None
        self._shared = shared
        self._cursor = after_seq
        self._token: int | None = None
        self._done = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(
        self,
    ) -> OutputEvent | ExitedEvent | ClosedEvent | FailedEvent | LostEvent:
        if self._done:
            raise StopAsyncIteration
        log = self._shared.log
        if self._token is None:
            self._token = log.add_cursor(self._cursor)
        event = log.next_event(self._cursor)
        parked = False
        while event is None:
            # Parking is the checkpoint (cancellation arrives here, before anything
            # is taken), so a waiting reader costs one task switch per event.
            await self._shared.changed.park()
            parked = True
            event = log.next_event(self._cursor)
        if not parked and await ready_checkpoint():
            # Ask again: retention may have moved on meanwhile (never to None).
            event = log.next_event(self._cursor) or event
        if isinstance(event, FailedEvent | ClosedEvent):
            self._finish()
        else:
            self._cursor = event.last_seq if isinstance(event, LostEvent) else event.seq
            log.move_cursor(self._token, self._cursor)
            self._shared.progressed()
        return event

    def _finish(self) -> None:
        self._done = True
        self._owner = None
        if self._token is not None:
            self._shared.log.drop_cursor(self._token)
            self._token = None
            self._shared.progressed()

    def close(self) -> None:
        """Stop reading: release the hold this iterator has on the producer."""
        self._finish()

    async def aclose(self) -> None:
        self._finish()
        await trio.lowlevel.checkpoint()

    def __del__(self) -> None:
        # Maybe on another thread: release the cursor from the trio thread.
        if getattr(self, "_token", None) is not None and self._trio_token is not None:
            try:
                self._trio_token.run_sync_soon(self._finish)
            except Exception:  # the run is over: nothing is waiting on the cursor
                pass


async def _terminate_quietly(handle: ProcessHandle) -> None:
    try:
        await handle.terminate()
    except Exception as exc:
        log.debug("terminating collected process %s failed: %r", handle.process_id, exc)


def _check_retention(retention_bytes: int) -> None:
    check_size("retention_bytes", retention_bytes)


@asynccontextmanager
async def open_process(
    backend: ExecBackend,
    request: ExecRequest,
    *,
    retention_bytes: int = DEFAULT_RETENTION_BYTES,
) -> AsyncGenerator[UnifiedExecProcess, None]:
    """Start a process whose life ends with the block: on exit (including
    cancellation) a still-running process group is terminated and reaped."""
    proc = await UnifiedExecProcess.start(backend, request, retention_bytes=retention_bytes)
    async with proc:
        yield proc
