"""Push one process's events to the connection its session is attached to.

Wire contract (codex pushes output, exited and closed in seq order, #30273):

- every output, exit and close seq the log holds is sent, in order, the tail after a
  terminate included (defect 31: a client that relies on pushed events, as codex's
  does, must not lose it);
- a process that *fails* (a FailedEvent: a relay's upstream died, a backend broke)
  gets no `process/exited` — it has no exit code, and -1 is no exit code — but a
  `process/closed` with the seq after the last one, so the stream visibly ends; the
  reason is in `process/read`'s `failure`, with `closed: true, exitCode: null`;
- seqs the log could not keep (a LostEvent) cannot be sent: they are logged, never
  papered over, and the client sees the gap and refetches with `process/read`, which
  reports them as evicted.
"""

from __future__ import annotations

import functools
import logging

from .._events import ClosedEvent, ExitedEvent, FailedEvent, LostEvent, OutputEvent
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from ._conn import ConnState
from ._session import Entry

__all__ = ["forward"]

log = logging.getLogger("unified_exec.server")


def _output(pid: str, event: OutputEvent) -> rpc.Message:
    # The chunk stays bytes: the encoder writes its base64 straight into the frame.
    return rpc.Notification(m.OUTPUT, m.output_params(pid, event.seq, event.stream, event.data))


async def forward(state: ConnState, entry: Entry, after_seq: int) -> bool:
    """Send every event after ``after_seq`` until the stream ends or the peer goes;
    True if it ended (the process closed or failed, and that was sent).

    As an active events() reader this holds the child back while the client reads
    slowly (backpressure), and lets go when the connection ends.
    """
    proc = entry.proc
    assert proc is not None
    pid = entry.process_id
    stream = proc.events(after_seq=after_seq)
    try:
        async for event in stream:
            if isinstance(event, OutputEvent):
                # Built (base64) only under the send lock: a waiting chunk holds no copy.
                await state.send(functools.partial(_output, pid, event))
            elif isinstance(event, ExitedEvent):
                exited = m.ExitedParams(pid, event.seq, event.exit_code)
                await state.send(rpc.Notification(m.EXITED, m.unstructure(exited)))
            elif isinstance(event, ClosedEvent):
                closed = m.ClosedParams(pid, event.seq)
                await state.send(rpc.Notification(m.CLOSED, m.unstructure(closed)))
                return True
            elif isinstance(event, FailedEvent):
                closed = m.ClosedParams(pid, proc.last_seq + 1)
                await state.send(rpc.Notification(m.CLOSED, m.unstructure(closed)))
                return True
            elif isinstance(event, LostEvent):
                log.warning(
                    "process %s: seqs %d..%d were evicted before they could be pushed",
                    pid, event.first_seq, event.last_seq,
                )  # fmt: skip
    finally:
        stream.close()
    return proc.closed
