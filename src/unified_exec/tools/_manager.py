"""UnifiedExecManager: Codex's exec_command / write_stdin over any ExecBackend.

Matches Codex's defaults, clamps, text and truncation arithmetic, and improves where
its users hit trouble: launch failures answer at once, dropped output is counted and
marked, a finished session reports its exit once (then "Unknown process id"),
non-tty sessions may opt into piped stdin, and an opt-in quiet period can end the
wait early for interactive programs.

Lifetime: the manager owns one background task per session (its feeder) and the
terminations it starts, in a nursery opened by ``open_manager()`` with a real
``async with trio.open_nursery()``. Teardown (terminate every session) runs inside
that block's ``finally``, and every background task is its own failure domain, so
leaving the block always closes the nursery, whatever a backend raises.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Final

import trio

from .._errors import (
    InvalidRequestError,
    ProcessUnknownError,
    StdinClosedError,
    UnifiedExecError,
)
from .._events import WriteStatus
from .._process import UnifiedExecProcess
from .._request import ExecRequest, FrozenEnv
from .._state import ProcessState
from .._validate import check_duration, check_size
from ..backends._base import ExecBackend
from ..backends._description import BackendDescription, describe_backend
from ._backend_facts import default_cwd, default_shell, resolve_workdir
from ._calls import check_text, handle_tool_call
from ._env import UNIFIED_EXEC_ENV, checked_env
from ._output import EndReason, ExecCommandOutput
from ._sessions import PROTECTED_RECENT, Session, SessionIds, session_to_prune
from ._specs import tool_specs

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "DEFAULT_TERMINATE_TIMEOUT",
    "MAX_YIELD_TIME_MS",
    "MIN_EMPTY_YIELD_TIME_MS",
    "MIN_YIELD_TIME_MS",
    "UnifiedExecManager",
    "clamp_yield_time",
    "open_manager",
    "session_to_prune",
]

log = logging.getLogger("unified_exec")

MIN_YIELD_TIME_MS: Final = 250
MIN_EMPTY_YIELD_TIME_MS: Final = 5_000
MAX_YIELD_TIME_MS: Final = 30_000
DEFAULT_MAX_BACKGROUND_TERMINAL_TIMEOUT_MS: Final = 300_000
DEFAULT_MAX_OUTPUT_TOKENS: Final = 10_000
#: How long teardown waits for one session's terminate() before it gives up on it.
DEFAULT_TERMINATE_TIMEOUT: Final = 30.0
WARNING_SESSIONS: Final = 60
POST_WRITE_PAUSE: Final = 0.1  # Codex sleeps this long after a write before collecting

STDIN_CLOSED_TEXT: Final = (
    "stdin is closed for this session; rerun exec_command with tty=true to keep stdin open"
)
NOT_OPEN_TEXT: Final = (
    "this UnifiedExecManager is not open: use `async with UnifiedExecManager(...)` "
    "or `async with open_manager(...)`"
)


def clamp_yield_time(yield_time_ms: int) -> int:
    return min(max(yield_time_ms, MIN_YIELD_TIME_MS), MAX_YIELD_TIME_MS)


@asynccontextmanager
async def open_manager(backend: ExecBackend, **options: Any) -> AsyncIterator[UnifiedExecManager]:
    """``async with open_manager(backend, ...) as mgr``: a manager whose sessions are
    all terminated when the block ends (options as for UnifiedExecManager).

    The block's own exception propagates unchanged (never wrapped in a group); a
    session whose terminate fails is logged, not raised.
    """
    manager = UnifiedExecManager(backend, **options)
    async with manager._running():
        yield manager


class UnifiedExecManager:
    """Sessions of commands for a model, on any backend. Use ``async with`` (or
    ``open_manager()``): leaving the block terminates every session.

    Defaults come from the backend's description (``describe_backend``). ``cwd``: what
    relative workdirs resolve against (default: the described cwd; this process's for a
    backend that does not describe itself; None for a remote one that names none:
    its own directory, relative workdirs refused). ``env``: the base environment
    (default: the described ``default_env``); ``forced_env`` is laid over it.
    ``output_token_limit``: a cap on every call's ``max_output_tokens`` (Codex's
    turn truncation policy). ``deterministic_ids``: session ids 1000, 1001, ...
    ``max_sessions``: at most this many sessions are kept; a new one prunes an old
    one (Codex's policy, which keeps the 8 most recently used, or all but one when
    ``max_sessions`` is smaller). ``terminate_timeout``: seconds teardown waits for
    one session's terminate before it gives up on that session.
    """

    def __init__(
        self,
        backend: ExecBackend,
        *,
        max_sessions: int = 64,
        deterministic_ids: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        forced_env: Mapping[str, str] = UNIFIED_EXEC_ENV,
        default_shell: str | None = None,
        allow_login_shell: bool = True,
        output_token_limit: int | None = None,
        max_write_stdin_yield_time_ms: int = DEFAULT_MAX_BACKGROUND_TERMINAL_TIMEOUT_MS,
        terminate_timeout: float = DEFAULT_TERMINATE_TIMEOUT,
    ) -> None:
        check_size("max_sessions", max_sessions, minimum=1)
        check_size("output_token_limit", output_token_limit, allow_none=True)
        check_duration("max_write_stdin_yield_time_ms", max_write_stdin_yield_time_ms)
        check_duration("terminate_timeout", terminate_timeout)
        self.terminate_timeout = float(terminate_timeout)
        self.backend = backend
        self.max_sessions = max_sessions
        self.cwd: str | None = (
            os.fspath(cwd) if cwd is not None else default_cwd(describe_backend(backend))
        )
        self._env = dict(env) if env is not None else None
        self.forced_env = dict(forced_env)
        self._default_shell = default_shell
        self.allow_login_shell = allow_login_shell
        self.output_token_limit = output_token_limit
        self.max_write_stdin_yield_time_ms = max(
            int(max_write_stdin_yield_time_ms), MIN_EMPTY_YIELD_TIME_MS
        )
        self._sessions: dict[int, Session] = {}
        self._ids = SessionIds(deterministic=deterministic_ids)
        self._nursery: trio.Nursery | None = None
        self._exit_stack: AsyncExitStack | None = None

    @property
    def deterministic_ids(self) -> bool:
        return self._ids.deterministic

    @deterministic_ids.setter
    def deterministic_ids(self, value: bool) -> None:
        self._ids.deterministic = value

    # -- lifetime -------------------------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        """The manager's life: a real nursery block, torn down in its ``finally``.

        The body's exception is caught inside the nursery and re-raised after it has
        closed, so it reaches the caller as itself rather than inside an
        ExceptionGroup; nothing else can leave (background tasks are guarded and
        teardown never raises).
        """
        if self._nursery is not None:
            raise InvalidRequestError("this UnifiedExecManager is already open")
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            except BaseException as exc:
                body_error = exc
            finally:
                self._nursery = None  # no new sessions from here on
                with trio.CancelScope(shield=True):
                    await self.terminate_all()
                nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error

    async def __aenter__(self) -> UnifiedExecManager:
        stack = AsyncExitStack()
        await stack.enter_async_context(self._running())
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            return False
        return bool(await stack.__aexit__(exc_type, exc, tb))

    async def terminate_all(self) -> dict[int, ProcessState]:
        """Kill every session (Codex's shutdown / clean background terminals).

        Never raises for a session: each one's outcome is its state afterwards
        (``has_exited`` stays False for one whose terminate failed or timed out —
        that failure is logged on the ``unified_exec`` logger).
        """
        sessions = list(self._sessions.values())
        for session in sessions:  # ids of starts still under way stay reserved
            self._remove(session)
        outcome: dict[int, ProcessState] = {}
        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(self._terminate, session, outcome)
        return outcome

    async def _terminate(
        self, session: Session, outcome: dict[int, ProcessState] | None = None
    ) -> None:
        """Terminate one session, bounded, as its own failure domain."""
        state: ProcessState | None = None
        with trio.move_on_after(self.terminate_timeout):
            try:
                state = await session.proc.terminate()
            except Exception as exc:
                log.warning("terminating session %s failed: %r", session.id, exc)
        if state is None:
            state = session.proc.state
        if state.exit_code is None:
            log.warning("session %s did not end cleanly on terminate: %s", session.id, state)
        if outcome is not None:
            outcome[session.id] = state

    def _terminate_soon(self, session: Session) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._terminate, session)
        else:  # closing: terminate_all() already holds every stored session
            log.debug("session %s left to the closing manager", session.id)

    @property
    def session_ids(self) -> list[int]:
        return sorted(self._sessions)

    # -- the store ----------------------------------------------------------------------

    def _remove(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        self._ids.release(session.id)

    def _store(self, session: Session, nursery: trio.Nursery) -> list[str]:
        warnings = []
        if len(self._sessions) >= self.max_sessions:
            meta = [(s.id, s.last_used, s.proc.state.has_exited) for s in self._sessions.values()]
            protected = min(PROTECTED_RECENT, self.max_sessions - 1)
            victim_id = session_to_prune(meta, protected=protected)
            if victim_id is not None:
                victim = self._sessions[victim_id]
                self._remove(victim)
                nursery.start_soon(self._terminate, victim)
        self._sessions[session.id] = session
        if len(self._sessions) >= WARNING_SESSIONS:
            warnings.append(
                "The maximum number of unified exec processes you can keep open is "
                f"{WARNING_SESSIONS} and you currently have {len(self._sessions)} processes "
                "open. Reuse older processes or close them to prevent automatic pruning of "
                "old processes"
            )
        nursery.start_soon(session.feed)
        return warnings

    # -- the two tools ------------------------------------------------------------------

    def _request_env(self, where: BackendDescription | None) -> FrozenEnv:
        if self._env is not None:
            return checked_env(self._env, self.forced_env)
        return checked_env((where or describe_backend(self.backend)).default_env, self.forced_env)

    def command_argv(
        self, cmd: str, *, shell: str | None = None, login: bool | None = None
    ) -> list[str]:
        """``[shell, "-lc" | "-c", cmd]``, as Codex derives it."""
        return self._argv(cmd, shell, login, None)

    def _argv(
        self, cmd: str, shell: str | None, login: bool | None, where: BackendDescription | None
    ) -> list[str]:
        if login and not self.allow_login_shell:
            raise InvalidRequestError(
                "login shell is disabled by config; omit `login` or set it to false."
            )
        use_login = self.allow_login_shell if login is None else login
        shell = shell or self._default_shell
        shell = shell or default_shell(where or describe_backend(self.backend))
        return [shell, "-lc" if use_login else "-c", cmd]

    def _max_tokens(self, max_output_tokens: int | None) -> int:
        tokens = DEFAULT_MAX_OUTPUT_TOKENS if max_output_tokens is None else max_output_tokens
        if tokens < 0:
            raise InvalidRequestError("max_output_tokens must be >= 0")
        if self.output_token_limit is not None:
            tokens = min(tokens, self.output_token_limit)
        return tokens

    def _open_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise InvalidRequestError(NOT_OPEN_TEXT)
        return self._nursery

    async def exec_command(
        self,
        cmd: str,
        *,
        workdir: str | None = None,
        shell: str | None = None,
        login: bool | None = None,
        tty: bool = False,
        yield_time_ms: int = 10_000,
        max_output_tokens: int | None = None,
        pipe_stdin: bool = False,
        quiet_ms: int | None = None,
    ) -> ExecCommandOutput:
        """Start ``cmd`` in a new session and collect output for up to the yield window.

        Returns early when the process exits (or, with ``quiet_ms``, once output has
        been quiet that long). ``pipe_stdin`` keeps a non-tty session's stdin open.
        Raises UnifiedExecError subclasses (e.g. LaunchError) at once on failure.
        Cancelling the call terminates the session it started: its id was never
        handed to anyone.
        """
        self._open_nursery()  # refuse before anything is spawned
        if not isinstance(cmd, str) or not cmd.strip():
            raise InvalidRequestError("missing command line for unified exec request")
        check_duration("quiet_ms", quiet_ms, allow_none=True)
        start = trio.current_time()
        tokens = self._max_tokens(max_output_tokens)
        # One reading of the description per call, and none when nothing needs it.
        needed = self._env is None or not (shell or self._default_shell)
        where = describe_backend(self.backend) if needed else None
        argv = self._argv(cmd, shell, login, where)
        env = self._request_env(where)
        session_id = self._ids.allocate()
        try:
            request = ExecRequest(
                argv=argv,
                cwd=resolve_workdir(self.cwd, workdir),
                env=env,
                tty=tty,
                pipe_stdin=pipe_stdin and not tty,
                # Unique per spawn: exec-servers keep a closed id for a while, and
                # the session id may be handed out again once released.
                process_id=f"{session_id}-{secrets.token_hex(4)}",
            )
            proc = await UnifiedExecProcess.start(self.backend, request)
        except BaseException:
            self._ids.release(session_id)
            raise
        session = Session(session_id, proc, tty=tty, pipe_stdin=pipe_stdin and not tty)
        if self._nursery is None:  # the manager closed while the command started
            self._ids.release(session_id)
            with trio.CancelScope(shield=True):
                await self._terminate(session)
            raise InvalidRequestError(NOT_OPEN_TEXT)
        warnings = self._store(session, self._nursery)  # stored before waiting: always owned
        deadline = start + clamp_yield_time(yield_time_ms) / 1000
        try:
            ended_by = await session.collect(deadline, quiet_ms, 0)
        except BaseException:
            self._remove(session)
            self._terminate_soon(session)
            raise
        return self._finish(session, start, tokens, ended_by, warnings)

    async def write_stdin(
        self,
        session_id: int,
        chars: str = "",
        *,
        yield_time_ms: int = 250,
        max_output_tokens: int | None = None,
        quiet_ms: int | None = None,
    ) -> ExecCommandOutput:
        """Write ``chars`` (may be empty: a poll) and collect what the session printed."""
        start = trio.current_time()
        tokens = self._max_tokens(max_output_tokens)
        if not isinstance(chars, str):
            raise InvalidRequestError(f"chars must be a str, not {type(chars).__name__}")
        data = check_text("chars", chars)
        check_duration("quiet_ms", quiet_ms, allow_none=True)
        session = self._sessions.get(session_id)
        if session is None:
            raise ProcessUnknownError(f"Unknown process id {session_id}")
        session.last_used = start
        seen_before = session.output_seen
        exited = session.proc.state.has_exited
        wait_ms = max(yield_time_ms, MIN_YIELD_TIME_MS)
        if chars:
            wait_ms = min(wait_ms, MAX_YIELD_TIME_MS)
        else:
            wait_ms = min(max(wait_ms, MIN_EMPTY_YIELD_TIME_MS), self.max_write_stdin_yield_time_ms)
        deadline = start + wait_ms / 1000
        warnings: list[str] = []
        if chars:
            if not session.tty and chars == "\u0003":
                if not exited:
                    await session.proc.interrupt()
            elif not session.tty and not session.pipe_stdin:
                raise StdinClosedError(STDIN_CLOSED_TEXT)
            elif not exited:
                status: WriteStatus | None = None
                with trio.move_on_at(deadline):  # a child that never reads must not hang us
                    status = await session.proc.write(data)
                if status is None:
                    warnings.append(
                        "the input was not fully written within the yield window: the "
                        "process is not reading its stdin"
                    )
                elif status is not WriteStatus.ACCEPTED and not session.proc.state.has_exited:
                    raise StdinClosedError("failed to write to stdin")
                else:
                    await trio.sleep(POST_WRITE_PAUSE)
        ended_by = await session.collect(deadline, quiet_ms, seen_before)
        return self._finish(session, start, tokens, ended_by, warnings)

    def _finish(
        self,
        session: Session,
        start: float,
        tokens: int,
        ended_by: EndReason,
        warnings: list[str],
    ) -> ExecCommandOutput:
        state = session.proc.state
        out = session.drain(start, tokens, ended_by, warnings)
        if state.has_exited:
            self._remove(session)
            if state.exit_code is None:
                raise UnifiedExecError(f"Unified exec process failed: {state.failure_message}")
        return out

    # -- the model-facing surface --------------------------------------------------------

    def tool_specs(self) -> list[dict[str, Any]]:
        return tool_specs(login=self.allow_login_shell)

    async def handle_tool_call(self, name: str, arguments: str | Mapping[str, Any]) -> str:
        """Run a tool call from a model; errors come back as text, never raised."""
        return await handle_tool_call(self, name, arguments)
