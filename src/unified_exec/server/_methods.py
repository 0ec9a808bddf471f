"""The exec-server's methods: process/* and environment/*, one coroutine each.

A handler takes (connection, session, params) and returns the result (a wire dict or a
`_messages` attrs object), or raises; `_errors_map` turns what it raises into the
JSON-RPC error. Ordering is not their business: the connection's lanes run them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import attrs
import trio

from .._events import WriteStatus
from .._process import UnifiedExecProcess
from .._protocol import _jsonrpc as rpc
from .._protocol import _messages as m
from .._request import ExecRequest
from .._uri import file_uri, uri_path
from .._version import __version__
from ..backends._description import Location, describe_backend
from ._codex_start import codex_methods
from ._conn import ConnState
from ._envinfo import codex_environment
from ._errors_map import Fail, error_reply
from ._session import Entry, Session

if TYPE_CHECKING:
    from ._server import ExecServer

__all__ = [
    "CAPABILITIES",
    "EXTENSIONS",
    "MAX_WAIT_MS",
    "Handler",
    "LaneRule",
    "Methods",
    "Reply",
    "parse_cwd",
]

MAX_WAIT_MS = 24 * 3600 * 1000
EXTENSIONS = [m.PROCESS_RESIZE, m.PROCESS_CLOSE_STDIN, m.START_TTY_SIZE]
# The same, as codex announces optional features: `environmentInfo.capabilities`.
CAPABILITIES = {
    "unifiedExecProcessResize": True,
    "unifiedExecProcessCloseStdin": True,
    "unifiedExecStartTtySize": True,
    "unifiedExecResumeTakeover": True,
}

WireStatus = Literal["accepted", "unknownProcess", "stdinClosed", "starting"]
_STATUS: dict[WriteStatus, WireStatus] = {
    WriteStatus.ACCEPTED: "accepted",
    WriteStatus.UNKNOWN_PROCESS: "unknownProcess",
    WriteStatus.STDIN_CLOSED: "stdinClosed",
    WriteStatus.STARTING: "starting",
}

LaneRule = Literal["ordered", "control", "free"]
Handler = Callable[[ConnState, Session, Any], Awaitable[Any]]


@attrs.frozen
class Reply:
    """A result plus what to do right after it is sent (terminate answers at once)."""

    result: Any
    then: Callable[[], Awaitable[None]] | None = None


def parse_cwd(cwd: str) -> str:
    """codex wants a file:// URI (percent-encoded); we also take a plain absolute path."""
    if cwd.startswith("/"):
        return cwd
    try:
        parts = urlsplit(cwd)
    except ValueError as exc:  # e.g. an unbalanced [ in the host
        raise Fail(rpc.INVALID_PARAMS, f"invalid URI: {exc}") from None
    if not parts.scheme:
        raise Fail(rpc.INVALID_PARAMS, "invalid URI: relative URL without a base")
    if parts.scheme != "file":
        raise Fail(rpc.INVALID_PARAMS, f"unsupported path URI scheme `{parts.scheme}`")
    path = uri_path(cwd)
    if path is None:
        raise Fail(rpc.INVALID_PARAMS, f"unsupported file URI host `{parts.netloc}`")
    path = path or "/"
    return path if path.startswith("/") else "/" + path


def environment(backend: object = None) -> dict[str, Any]:
    """Our environmentInfo: this machine's, unless the served backend runs its processes
    elsewhere (a relay serving a remote backend or a pool): then where they run, as far
    as the backend describes it."""
    shell = os.environ.get("SHELL", "/bin/sh")
    info = codex_environment(
        {
            "shell": {"name": os.path.basename(shell), "path": shell},
            "executorVersion": f"unified_exec {__version__}",
            "cwd": file_uri(os.getcwd()),
            "userHomeDir": file_uri(os.path.expanduser("~")),
            "platformOs": platform.system().lower(),
            "tempDir": file_uri(os.environ.get("TMPDIR", "/tmp")),
            "capabilities": dict(CAPABILITIES),
        }
    )
    described = describe_backend(backend)
    if described.location in (Location.LOCAL, Location.UNKNOWN):
        return info
    if described.cwd is not None:
        info["cwd"] = file_uri(described.cwd)
    if described.home is not None:
        info["userHomeDir"] = file_uri(described.home)
    if described.shell is not None:
        info["shell"] = {"name": os.path.basename(described.shell), "path": described.shell}
    if described.platform is not None:
        info["platformOs"] = described.platform
    return info


def _unit(params: Any) -> None:
    if params not in (None, {}):
        raise m.ParamsError("invalid type: map, expected unit")


class Methods:
    """The handlers, bound to one server (its backend, store, limits and nursery)."""

    def __init__(self, server: ExecServer) -> None:
        self.server = server
        self.limits = server.limits
        # method -> (handler, lane rule). "ordered": changes a process's state, runs in
        # arrival order per processId. "control": the same until the process has
        # started, then at once, ahead of queued writes (codex's control lane, #36987:
        # a terminate or Ctrl-C must reach a child whose stdin is full). "free": runs
        # concurrently once the requests ahead of it in its lane are done.
        self.table: dict[str, tuple[Handler, LaneRule]] = {
            m.PROCESS_START: (self.start, "ordered"),
            m.PROCESS_READ: (self.read, "free"),
            m.PROCESS_WRITE: (self.write, "ordered"),
            m.PROCESS_SIGNAL: (self.signal, "control"),
            m.PROCESS_TERMINATE: (self.terminate, "control"),
            m.PROCESS_RESIZE: (self.resize, "ordered"),
            m.PROCESS_CLOSE_STDIN: (self.close_stdin, "ordered"),
            "environment/info": (self.environment_info, "free"),
            "environment/status": (self.environment_status, "free"),
        }
        # codex's client: start with envPolicy/sandbox, fs/*, fs/watchMissing (issue 8)
        self.table.update(codex_methods(self))

    # -- environment ---------------------------------------------------------------

    async def environment_info(self, state: ConnState, session: Session, params: Any) -> Any:
        _unit(params)
        await trio.lowlevel.checkpoint()
        return environment(self.server.backend)

    async def environment_status(self, state: ConnState, session: Session, params: Any) -> Any:
        _unit(params)
        await trio.lowlevel.checkpoint()
        return {"status": "ready"}

    # -- process methods -----------------------------------------------------------

    @staticmethod
    def _entry(session: Session, process_id: str) -> Entry:
        entry = session.entries.get(process_id)
        if entry is None:
            raise Fail(rpc.INVALID_REQUEST, f"unknown process id {process_id}")
        return entry

    @staticmethod
    def _running(session: Session, process_id: str) -> tuple[Entry, UnifiedExecProcess]:
        entry = Methods._entry(session, process_id)
        if entry.proc is None:
            raise Fail(rpc.INVALID_REQUEST, f"process id {process_id} is starting")
        return entry, entry.proc

    def _check_room(self, session: Session) -> None:
        limits = self.limits
        if session.live_count() >= limits.max_processes_per_connection:
            raise Fail(
                rpc.INVALID_REQUEST,
                f"too many processes in this session (limit {limits.max_processes_per_connection})",
            )
        if self.server.store.live_count() >= limits.max_processes:
            raise Fail(
                rpc.INVALID_REQUEST,
                f"too many processes on this exec-server (limit {limits.max_processes})",
            )

    async def start(self, state: ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.StartParams)
        if not p.argv:
            raise Fail(rpc.INVALID_PARAMS, "argv must not be empty")
        cwd = parse_cwd(p.cwd)
        if p.process_id in session.entries:
            raise Fail(rpc.INVALID_REQUEST, f"process {p.process_id} already exists")
        self._check_room(session)
        request = ExecRequest(
            argv=p.argv, cwd=cwd, env=p.env, tty=p.tty, pipe_stdin=p.pipe_stdin,
            arg0=p.arg0, process_id=p.process_id,
            **({"size": tuple(p.tty_size)} if p.tty_size is not None else {}),
        )  # fmt: skip
        entry = Entry(
            process_id=p.process_id, tty=p.tty, pipe_stdin=p.pipe_stdin,
            max_write_ids=self.limits.max_write_ids,
        )  # fmt: skip
        session.entries[p.process_id] = entry
        try:
            proc = await UnifiedExecProcess.start(
                self.server.backend, request, retention_bytes=self.server.retention_bytes
            )
        except BaseException:
            session.entries.pop(p.process_id, None)
            raise
        entry.proc = proc
        entry.phase = "running"
        if entry.start_cancelled:
            session.entries.pop(p.process_id, None)
            self.server.spawn(proc.terminate, f"terminate {p.process_id} (start cancelled)")
            raise Fail(rpc.INVALID_REQUEST, f"process {p.process_id} start was cancelled")
        self.server.process_started(state, session, entry)
        return m.StartResult(process_id=p.process_id)

    async def read(self, state: ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.ReadParams)
        _, proc = self._running(session, p.process_id)
        after = p.after_seq or 0
        wait = min(p.wait_ms or 0, MAX_WAIT_MS) / 1000
        if proc.closed and after >= proc.last_seq:
            wait = 0  # nothing will ever follow: answer at once (defect 6), as codex
        budget = self.limits.read_budget
        max_bytes = budget if p.max_bytes is None else min(p.max_bytes, budget)
        res = await proc.read(after_seq=after, max_bytes=max_bytes, wait=wait)
        chunks = res.chunks
        next_seq = res.next_seq
        if len(chunks) > self.limits.max_read_chunks:
            chunks = chunks[: self.limits.max_read_chunks]
            next_seq = chunks[-1].seq + 1
        elif p.max_bytes is not None and chunks:
            next_seq = chunks[-1].seq + 1  # as codex: the cursor follows the budget
        st = res.state
        return m.ReadResult(
            chunks=[m.ReadChunk(seq=c.seq, stream=c.stream, chunk=c.data) for c in chunks],
            next_seq=next_seq,
            exited=st.exit_code is not None,
            exit_code=st.exit_code,
            closed=res.closed,
            failure=st.failure_message,
        )

    async def write(self, state: ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.WriteParams)
        if p.write_id is not None:
            if not p.write_id:
                raise Fail(rpc.INVALID_PARAMS, "writeId must not be empty")
            if len(p.write_id.encode(errors="surrogatepass")) > self.limits.max_write_id_bytes:
                raise Fail(
                    rpc.INVALID_PARAMS,
                    f"writeId longer than {self.limits.max_write_id_bytes} bytes",
                )
        entry = session.entries.get(p.process_id)
        if entry is None:
            return m.WriteResult(status="unknownProcess")
        if entry.proc is None:
            return m.WriteResult(status="starting")
        if p.write_id is None:
            return m.WriteResult(status=await self._do_write(entry, entry.proc, p.chunk))
        while True:
            record, new = entry.remember_write(p.write_id)
            if new:
                break
            await record.done.wait()  # a replay: the same answer, the bytes written once
            if record.error is not None:
                raise Fail(*record.error)
            if record.status is not None:
                return m.WriteResult(status=record.status)
            # the first attempt was cancelled before it wrote: this one does it
        try:
            status = await self._do_write(entry, entry.proc, p.chunk)
        except Exception as exc:
            record.error = error_reply(exc, m.PROCESS_WRITE)
            record.done.set()
            raise Fail(*record.error) from None
        except BaseException:
            entry.forget_write(p.write_id, record)
            raise
        record.status = status
        record.done.set()
        return m.WriteResult(status=status)

    @staticmethod
    async def _do_write(entry: Entry, proc: UnifiedExecProcess, data: bytes) -> WireStatus:
        if (not entry.tty and not entry.pipe_stdin) or entry.stdin_closed:
            return "stdinClosed"
        if entry.terminated:
            raise Fail(rpc.INTERNAL_ERROR, "failed to write to process stdin")
        if proc.state.has_exited:
            return "accepted"  # as codex: discarded once the process has exited
        result = await proc.write(data)
        if entry.terminated:
            raise Fail(rpc.INTERNAL_ERROR, "failed to write to process stdin")
        return "accepted" if proc.state.has_exited else _STATUS[result]

    async def signal(self, state: ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.SignalParams)
        entry = session.entries.get(p.process_id)
        if entry is not None and entry.proc is not None:
            await entry.proc.interrupt()
        await trio.lowlevel.checkpoint()
        return {}

    async def terminate(self, state: ConnState, session: Session, params: Any) -> Any:
        """Answers at once: the kill is started right after the answer is sent, and
        the exit arrives as a notification (codex answers in well under a ms)."""
        p = m.structure(params, m.TerminateParams)
        await trio.lowlevel.checkpoint()
        entry = session.entries.get(p.process_id)
        if entry is None:
            return m.TerminateResult(running=False)
        proc = entry.proc
        if proc is None:
            entry.start_cancelled = True
            return m.TerminateResult(running=True)
        if proc.state.has_exited:
            return m.TerminateResult(running=False)
        entry.terminated = True  # from here on writes fail, as in codex
        what = f"terminate {p.process_id}"

        async def kill() -> None:
            self.server.spawn(proc.terminate, what)

        return Reply(m.TerminateResult(running=True), then=kill)

    async def resize(self, state: ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.ResizeParams)
        _, proc = self._running(session, p.process_id)
        await proc.resize(p.rows, p.cols)
        return {}

    async def close_stdin(self, state: ConnState, session: Session, params: Any) -> Any:
        p = m.structure(params, m.CloseStdinParams)
        entry, proc = self._running(session, p.process_id)
        await proc.close_stdin()
        entry.stdin_closed = True
        return {}
