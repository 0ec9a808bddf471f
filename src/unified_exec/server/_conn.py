"""One connection as the server holds it: ordered sending, request lanes, liveness.

Three rules live here, so that handlers need not think about them:

- **Sending** is serialised, and a message is encoded only once it holds the send
  lock. A request whose answer is waiting for a slow reader then holds references to
  retained output, not a base64 copy of it (r09: 300 unread `process/read` answers
  used to cost 450 MB). A message too big for the peer is never sent: a response
  becomes a -32603 error, a notification is dropped (the client sees a seq gap and
  refetches with a bounded `process/read`).
- **Ordering** (defect 2): the state-changing requests of one process run one after
  another in arrival order, through a lane per processId. `process/read` waits for
  the requests ahead of it in its lane, then runs on its own, so a long-poll never
  holds a write back. Different processes never wait for each other.
- **Liveness**: every received frame (and, for transports that report it, every
  transport-level sign of life such as a websocket pong) refreshes `last_seen`; an
  idle watchdog and a resume's takeover rule read it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import trio

from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._protocol._limits import Limits

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["ConnState", "Connection", "Gone", "Heartbeat", "spawn_guarded"]

log = logging.getLogger("unified_exec.server")

Job = Callable[[], Awaitable[None]]


class Connection(Protocol):
    """One transport-level connection, as the server sees it.

    A connection may also offer ``async send_bytes(data: bytes)``: the same frame as
    ``send(data.decode())``, handed over as the UTF-8 bytes it was encoded to; and
    ``send_checkpoints = True`` when the server need not make each send a schedule
    point of its own: the transport's send is one, or (our stdio pipe) it is one only
    when it has to wait, which is enough since every loop of the server that sends
    also yields elsewhere.
    """

    kind: Literal["stdio", "websocket"]
    name: str  # for error texts, e.g. "stdio" or "websocket 127.0.0.1:4242"

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes | rpc.MessageError | None:
        """The next frame, a framing error, or None once the peer has gone."""
        ...


@runtime_checkable
class Heartbeat(Protocol):
    """Optional: a transport that sees signs of life below JSON-RPC (websocket pongs).

    ``last_activity()`` is the ``trio.current_time()`` of the latest one. A connection
    that does not implement it is alive as long as frames arrive.
    """

    def last_activity(self) -> float: ...


class Gone(Exception):
    """The connection can no longer send."""


def spawn_guarded(nursery: trio.Nursery, job: Job, what: str) -> bool:
    """Run ``job`` in ``nursery``; no exception of it ever reaches the nursery.

    The exception boundary for every background task of the server: a backend whose
    ``terminate()`` raises, a peer that vanished mid-send, a bug in a handler — each
    is logged, and the server (and the other connections) go on. False if the
    nursery was closing and the job was not started.
    """

    async def guarded() -> None:
        try:
            await job()
        except Gone:
            pass
        except Exception:
            log.exception("exec-server task failed: %s", what)

    try:
        nursery.start_soon(guarded, name=f"unified_exec.server {what}")
    except RuntimeError:  # the nursery is closing (its connection, or the server)
        log.debug("not started (shutting down): %s", what)
        return False
    return True


Payload = rpc.Message | Callable[[], rpc.Message]


class ConnState:
    """What the server knows about one connection."""

    def __init__(self, conn: Connection, nursery: trio.Nursery, limits: Limits) -> None:
        self.conn = conn
        self.nursery = nursery
        self.limits = limits
        self.session: Session | None = None
        self.initialized = False
        self.alive = True
        self.slots = trio.Semaphore(limits.max_in_flight)  # requests being worked on
        self.last_seen = trio.current_time()
        self._send_lock = trio.Lock()
        # A transport may take the encoded UTF-8 as it is (stdio: no str round trip).
        self._send_bytes: Callable[[bytes], Awaitable[None]] | None = getattr(
            conn, "send_bytes", None
        )
        self._lanes: dict[str, collections.deque[tuple[Job, bool]]] = {}
        # Our transports' sends always checkpoint (trio's streams do, first thing);
        # for any other Connection the send lock keeps its checkpoint.
        self._send_checkpoints: bool = getattr(conn, "send_checkpoints", False) is True

    # -- sending ---------------------------------------------------------------------

    async def send(self, payload: Payload) -> None:
        """Send one message (or build it, then send it, under the send lock)."""
        if not self.alive:
            raise Gone
        lock = self._send_lock
        if lock.locked() or not self._send_checkpoints:
            await lock.acquire()
        else:
            # Uncontended: take it without a scheduler pass (~20 us each, several per
            # round trip); a cancelled sender still sends nothing.
            await trio.lowlevel.checkpoint_if_cancelled()
            lock.acquire_nowait()
        try:
            if not self.alive:
                raise Gone
            message = payload() if callable(payload) else payload
            data = rpc.encode_bytes(message)
            if len(data) > self.limits.max_message_bytes:
                text = self._oversized(message, len(data))
                if not text:
                    return
                data = text.encode()
            try:
                if self._send_bytes is not None:
                    await self._send_bytes(data)
                else:
                    await self.conn.send(data.decode("utf-8"))
            except Exception as exc:
                # A connection that cannot send is over: stop reading it too, so its
                # processes are detached (or, on stdio, ended) rather than run mute.
                self.close()
                raise Gone from exc
        finally:
            lock.release()

    def _oversized(self, message: rpc.Message, size: int) -> str:
        limit = self.limits.max_message_bytes
        if isinstance(message, rpc.Response | rpc.ErrorResponse):
            text = f"result of {size} bytes exceeds the {limit}-byte message limit"
            return rpc.encode(rpc.ErrorResponse(message.id, rpc.INTERNAL_ERROR, text))
        method = message.method if isinstance(message, rpc.Notification) else "?"
        log.warning("dropped a %d-byte %s notification (limit %d)", size, method, limit)
        return ""

    async def reply(self, request_id: rpc.RequestId, result: Any) -> None:
        """Answer a request; ``result`` may be a wire dict or a params/result attrs
        object, which is unstructured only when the message is about to be sent."""

        def build() -> rpc.Message:
            wire = result if isinstance(result, dict) else m.unstructure_raw(result)
            return rpc.Response(id=request_id, result=wire)

        await self.send(build)

    async def reply_error(self, request_id: rpc.RequestId, code: int, text: str) -> None:
        await self.send(rpc.ErrorResponse(id=request_id, code=code, message=text))

    # -- ordering ----------------------------------------------------------------------

    def submit(self, lane: str | None, job: Job, *, ordered: bool, what: str) -> None:
        """Run ``job`` after the ordered jobs already queued on ``lane``.

        ``ordered`` jobs of a lane run one at a time, in submission order; an unordered
        job is started once those ahead of it are done, and does not hold later ones
        back. Without a lane (no processId) the job starts at once. Must be called
        synchronously in arrival order (the receive loop does).
        """
        queue = self._lanes.get(lane) if lane is not None else None
        if queue is None:
            if lane is None or not ordered:
                spawn_guarded(self.nursery, job, what)
                return
            queue = self._lanes[lane] = collections.deque()
            queue.append((job, ordered))
            spawn_guarded(self.nursery, lambda: self._drain(lane, queue), f"lane {lane!r}")
            return
        queue.append((job, ordered))

    async def _drain(self, lane: str, queue: collections.deque[tuple[Job, bool]]) -> None:
        try:
            while queue:
                job, ordered = queue[0]
                if ordered:
                    await job()  # a request job never raises (run_request answers errors)
                else:
                    spawn_guarded(self.nursery, job, f"request on lane {lane!r}")
                queue.popleft()
        finally:
            if self._lanes.get(lane) is queue:
                del self._lanes[lane]

    # -- liveness ----------------------------------------------------------------------

    def touch(self) -> None:
        self.last_seen = trio.current_time()

    def silent_for(self) -> float:
        """Seconds since the peer last showed a sign of life."""
        latest = self.last_seen
        if isinstance(self.conn, Heartbeat):
            try:
                latest = max(latest, self.conn.last_activity())
            except Exception:  # a transport's own bug must not end the connection
                log.exception("last_activity() of %s failed", self.conn.name)
        return trio.current_time() - latest

    def close(self) -> None:
        """End this connection from the server's side (idle, or taken over)."""
        self.alive = False
        self.nursery.cancel_scope.cancel()

    async def watch_idle(self, timeout: float) -> None:
        """Close the connection once it has been silent for ``timeout`` seconds."""
        while True:
            silent = self.silent_for()
            if silent >= timeout:
                log.info("closing exec-server connection %s: silent for %.1f s",
                         self.conn.name, silent)  # fmt: skip
                self.close()
                return
            await trio.sleep(timeout - silent)
