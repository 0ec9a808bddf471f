"""UnifiedExecManager: Codex's exec_command / write_stdin over any ExecBackend.

Matches Codex's defaults, clamps, text and truncation arithmetic, and improves where
its users hit trouble: launch failures answer at once, dropped output is counted and
marked, a finished session reports its exit once (then "Unknown process id"),
non-tty sessions may opt into piped stdin, and an opt-in quiet period can end the
wait early for interactive programs.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

import trio

from .._errors import (
    InvalidRequestError,
    ProcessUnknownError,
    StdinClosedError,
    UnifiedExecError,
)
from .._events import OutputEvent, WriteStatus
from .._process import UnifiedExecProcess
from .._request import ExecRequest
from ..backends._base import ExecBackend
from ..backends.local import LocalPtyBackend
from ..backends.remote import REMOTE_DEFAULT_ENV
from ._env import UNIFIED_EXEC_ENV, apply_unified_exec_env
from ._output import EndReason, ExecCommandOutput
from ._specs import tool_specs
from ._text import (
    HeadTailBuffer,
    approx_token_count,
    formatted_truncate_text,
    omission_marker,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "MAX_YIELD_TIME_MS",
    "MIN_EMPTY_YIELD_TIME_MS",
    "MIN_YIELD_TIME_MS",
    "UnifiedExecManager",
    "clamp_yield_time",
    "session_to_prune",
]

MIN_YIELD_TIME_MS: Final = 250
MIN_EMPTY_YIELD_TIME_MS: Final = 5_000
MAX_YIELD_TIME_MS: Final = 30_000
DEFAULT_MAX_BACKGROUND_TERMINAL_TIMEOUT_MS: Final = 300_000
DEFAULT_MAX_OUTPUT_TOKENS: Final = 10_000
OUTPUT_MAX_BYTES: Final = 1024 * 1024
WARNING_SESSIONS: Final = 60
PROTECTED_RECENT: Final = 8
POST_WRITE_PAUSE: Final = 0.1  # Codex sleeps this long after a write before collecting
POST_EXIT_CLOSE_WAIT_CAP: Final = 0.05

STDIN_CLOSED_TEXT: Final = (
    "stdin is closed for this session; rerun exec_command with tty=true to keep stdin open"
)


def clamp_yield_time(yield_time_ms: int) -> int:
    return min(max(yield_time_ms, MIN_YIELD_TIME_MS), MAX_YIELD_TIME_MS)


def session_to_prune(meta: list[tuple[int, float, bool]]) -> int | None:
    """Codex's policy over (id, last_used, exited): the 8 most recently used are safe;
    of the rest, the least recently used exited one, else the least recently used."""
    by_recency = sorted(meta, key=lambda m: m[1], reverse=True)
    candidates = sorted(by_recency[PROTECTED_RECENT:], key=lambda m: m[1])
    for session_id, _, exited in candidates:
        if exited:
            return session_id
    return candidates[0][0] if candidates else None


class _Session:
    def __init__(
        self, session_id: int, proc: UnifiedExecProcess, *, tty: bool, pipe_stdin: bool
    ) -> None:
        self.id = session_id
        self.proc = proc
        self.tty = tty
        self.pipe_stdin = pipe_stdin
        self.buffer = HeadTailBuffer(OUTPUT_MAX_BYTES)
        self.last_used = trio.current_time()
        self.output_seen = 0
        self.last_output_at = 0.0
        self.fed_all = False  # every event, up to closed, is in the buffer
        self.changed = trio.lowlevel.ParkingLot()

    async def feed(self) -> None:
        """Move output into the head/tail buffer as it comes: never blocks the child."""
        try:
            async for event in self.proc.events():
                if isinstance(event, OutputEvent):
                    self.buffer.push(event.data)
                    self.output_seen += len(event.data)
                    self.last_output_at = trio.current_time()
                self.changed.unpark_all()
        finally:
            self.fed_all = True
            self.changed.unpark_all()


def _int_arg(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}")
    return int(value)


class UnifiedExecManager:
    """Sessions of commands for a model, on any backend. Use ``async with``.

    ``cwd``: what relative workdirs resolve against (default: this process's cwd).
    ``env``: the base environment (default: ours for a local backend,
    ``REMOTE_DEFAULT_ENV`` otherwise); ``forced_env`` is laid over it.
    ``output_token_limit``: a cap on every call's ``max_output_tokens`` (Codex's
    turn truncation policy). ``deterministic_ids``: session ids 1000, 1001, ...
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
    ) -> None:
        if max_sessions < 1:
            raise InvalidRequestError("max_sessions must be >= 1")
        self.backend = backend
        self.max_sessions = max_sessions
        self.deterministic_ids = deterministic_ids
        self.cwd = os.fspath(cwd) if cwd is not None else os.getcwd()
        self._env = dict(env) if env is not None else None
        self.forced_env = dict(forced_env)
        self._default_shell = default_shell
        self.allow_login_shell = allow_login_shell
        self.output_token_limit = output_token_limit
        self.max_write_stdin_yield_time_ms = max(
            max_write_stdin_yield_time_ms, MIN_EMPTY_YIELD_TIME_MS
        )
        self._sessions: dict[int, _Session] = {}
        self._reserved: set[int] = set()
        self._random = random.Random()
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None

    # -- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> UnifiedExecManager:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        with trio.CancelScope(shield=True):
            await self.terminate_all()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        # Only our own feeder tasks live in this nursery; the caller's exception is
        # not theirs to wrap in a group, so it propagates as it is.
        await self._nursery_cm.__aexit__(None, None, None)
        self._nursery = None
        return None

    async def terminate_all(self) -> None:
        """Kill every session (Codex's shutdown / clean background terminals)."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._reserved.clear()
        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(session.proc.terminate)

    @property
    def session_ids(self) -> list[int]:
        return sorted(self._sessions)

    # -- ids and the store -------------------------------------------------------------

    def _allocate_id(self) -> int:
        if self.deterministic_ids:
            session_id = max(self._reserved | {999}) + 1
        else:
            session_id = self._random.randrange(1_000, 100_000)
            while session_id in self._reserved:
                session_id = self._random.randrange(1_000, 100_000)
        self._reserved.add(session_id)
        return session_id

    def _remove(self, session: _Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        self._reserved.discard(session.id)

    def _store(self, session: _Session) -> list[str]:
        warnings = []
        if len(self._sessions) >= self.max_sessions:
            meta = [(s.id, s.last_used, s.proc.state.has_exited) for s in self._sessions.values()]
            victim_id = session_to_prune(meta)
            if victim_id is not None:
                victim = self._sessions[victim_id]
                self._remove(victim)
                self._spawn(victim.proc.terminate)
        self._sessions[session.id] = session
        if len(self._sessions) >= WARNING_SESSIONS:
            warnings.append(
                "The maximum number of unified exec processes you can keep open is "
                f"{WARNING_SESSIONS} and you currently have {len(self._sessions)} processes "
                "open. Reuse older processes or close them to prevent automatic pruning of "
                "old processes"
            )
        self._spawn(session.feed)
        return warnings

    def _spawn(self, fn: Any) -> None:
        if self._nursery is None:
            raise InvalidRequestError("use UnifiedExecManager as an async context manager")
        self._nursery.start_soon(fn)

    # -- the two tools ------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        if self._env is not None:
            return dict(self._env)
        if isinstance(self.backend, LocalPtyBackend):
            return dict(os.environ)
        env = dict(REMOTE_DEFAULT_ENV)
        home = getattr(self.backend, "environment_info", {}).get("userHomeDir", "")
        if isinstance(home, str) and home.startswith("file://"):
            env["HOME"] = home[len("file://") :]
        return env

    def _shell(self, shell: str | None) -> str:
        if shell:
            return shell
        if self._default_shell:
            return self._default_shell
        if isinstance(self.backend, LocalPtyBackend):
            return os.environ.get("SHELL") or "/bin/bash"
        info = getattr(self.backend, "environment_info", {}).get("shell", {})
        path = info.get("path") if isinstance(info, dict) else None
        return path if isinstance(path, str) and path else "/bin/bash"

    def command_argv(
        self, cmd: str, *, shell: str | None = None, login: bool | None = None
    ) -> list[str]:
        """``[shell, "-lc" | "-c", cmd]``, as Codex derives it."""
        if login and not self.allow_login_shell:
            raise InvalidRequestError(
                "login shell is disabled by config; omit `login` or set it to false."
            )
        use_login = self.allow_login_shell if login is None else login
        return [self._shell(shell), "-lc" if use_login else "-c", cmd]

    def _workdir(self, workdir: str | None) -> str:
        if not workdir:
            return self.cwd
        return os.path.normpath(os.path.join(self.cwd, workdir))

    def _max_tokens(self, max_output_tokens: int | None) -> int:
        tokens = DEFAULT_MAX_OUTPUT_TOKENS if max_output_tokens is None else max_output_tokens
        if tokens < 0:
            raise InvalidRequestError("max_output_tokens must be >= 0")
        if self.output_token_limit is not None:
            tokens = min(tokens, self.output_token_limit)
        return tokens

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
        """
        if not isinstance(cmd, str) or not cmd.strip():
            raise InvalidRequestError("missing command line for unified exec request")
        start = trio.current_time()
        tokens = self._max_tokens(max_output_tokens)
        argv = self.command_argv(cmd, shell=shell, login=login)
        session_id = self._allocate_id()
        try:
            request = ExecRequest(
                argv=argv,
                cwd=self._workdir(workdir),
                env=apply_unified_exec_env(self._base_env(), self.forced_env),
                tty=tty,
                pipe_stdin=pipe_stdin and not tty,
                # Unique per spawn: exec-servers keep a closed id for a while, and
                # the session id may be handed out again once released.
                process_id=f"{session_id}-{secrets.token_hex(4)}",
            )
            proc = await UnifiedExecProcess.start(self.backend, request)
        except BaseException:
            self._reserved.discard(session_id)
            raise
        session = _Session(session_id, proc, tty=tty, pipe_stdin=pipe_stdin and not tty)
        warnings = self._store(session)  # stored before waiting, so it is always owned
        deadline = start + clamp_yield_time(yield_time_ms) / 1000
        ended_by = await self._collect(session, deadline, quiet_ms, 0)
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
                    status = await session.proc.write(chars)
                if status is None:
                    warnings.append(
                        "the input was not fully written within the yield window: the "
                        "process is not reading its stdin"
                    )
                elif status is not WriteStatus.ACCEPTED and not session.proc.state.has_exited:
                    raise StdinClosedError("failed to write to stdin")
                else:
                    await trio.sleep(POST_WRITE_PAUSE)
        ended_by = await self._collect(session, deadline, quiet_ms, seen_before)
        return self._finish(session, start, tokens, ended_by, warnings)

    async def _collect(
        self, session: _Session, deadline: float, quiet_ms: int | None, seen_before: int
    ) -> EndReason:
        """Wait until the process closes, the deadline, or (opt-in) quiet output.

        Quiet means: output arrived since ``seen_before`` and then none for quiet_ms.
        """
        exit_deadline: float | None = None
        while True:
            now = trio.current_time()
            if session.fed_all:  # closed, and its last output is in the buffer
                return "exit"
            if session.proc.state.has_exited and exit_deadline is None:
                # Exited, output not yet closed (a straggler holds it): a short grace.
                exit_deadline = min(deadline, now + POST_EXIT_CLOSE_WAIT_CAP)
            wake = deadline if exit_deadline is None else exit_deadline
            if quiet_ms is not None and session.output_seen > seen_before:
                quiet_at = session.last_output_at + quiet_ms / 1000
                if now >= quiet_at:
                    return "quiet"
                wake = min(wake, quiet_at)
            if now >= wake:
                return "exit" if exit_deadline is not None else "deadline"
            with trio.move_on_at(wake):
                await session.changed.park()

    def _finish(
        self,
        session: _Session,
        start: float,
        tokens: int,
        ended_by: EndReason,
        warnings: list[str],
    ) -> ExecCommandOutput:
        head, omitted, tail = session.buffer.drain()
        raw = head + tail
        shown = head + omission_marker(omitted) + tail if omitted else raw
        text = shown.decode("utf-8", errors="replace")
        state = session.proc.state
        if state.has_exited:
            self._remove(session)
            if state.exit_code is None:
                raise UnifiedExecError(f"Unified exec process failed: {state.failure_message}")
        return ExecCommandOutput(
            chunk_id=secrets.token_hex(3),
            wall_time=trio.current_time() - start,
            exit_code=state.exit_code if state.has_exited else None,
            session_id=None if state.has_exited else session.id,
            original_token_count=approx_token_count(len(raw)),
            output=formatted_truncate_text(text, tokens),
            raw_output=raw,
            omitted_bytes=omitted,
            ended_by=ended_by,
            warnings=tuple(warnings),
        )

    # -- the model-facing surface --------------------------------------------------------

    def tool_specs(self) -> list[dict[str, Any]]:
        return tool_specs(login=self.allow_login_shell)

    async def handle_tool_call(self, name: str, arguments: str | Mapping[str, Any]) -> str:
        """Run a tool call from a model; errors come back as text, never raised."""
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
            if not isinstance(args, dict):
                raise TypeError(f"expected a JSON object, got {type(args).__name__}")
        except (ValueError, TypeError, RecursionError) as exc:
            return f"failed to parse {name} arguments: {exc}"
        if name == "exec_command":
            return await self._exec_command_call(args)
        if name == "write_stdin":
            return await self._write_stdin_call(args)
        return f"unsupported call: {name}"

    async def _exec_command_call(self, args: dict[str, Any]) -> str:
        try:
            cmd = args.get("cmd")
            if not isinstance(cmd, str):
                raise InvalidRequestError("missing field `cmd`")
            kwargs = self._common_args(args)
            for key in ("workdir", "shell"):
                if args.get(key) is not None and not isinstance(args[key], str):
                    raise InvalidRequestError(f"{key} must be a string")
            for key in ("login", "tty"):
                if args.get(key) is not None and not isinstance(args[key], bool):
                    raise InvalidRequestError(f"{key} must be a boolean")
        except InvalidRequestError as exc:
            return f"failed to parse exec_command arguments: {exc}"
        try:
            out = await self.exec_command(
                cmd,
                workdir=args.get("workdir"),
                shell=args.get("shell"),
                login=args.get("login"),
                tty=bool(args.get("tty", False)),
                yield_time_ms=kwargs.get("yield_time_ms", 10_000),
                max_output_tokens=kwargs.get("max_output_tokens"),
            )
        except UnifiedExecError as exc:
            return f"exec_command failed for `{cmd}`: {_describe(exc)}"
        return _with_warnings(out)

    async def _write_stdin_call(self, args: dict[str, Any]) -> str:
        try:
            session_id = _int_arg("session_id", args.get("session_id"))
            assert session_id is not None
            chars = args.get("chars", "")
            if chars is None:
                chars = ""
            if not isinstance(chars, str):
                raise InvalidRequestError("chars must be a string")
            kwargs = self._common_args(args)
        except InvalidRequestError as exc:
            return f"failed to parse write_stdin arguments: {exc}"
        try:
            out = await self.write_stdin(
                session_id,
                chars,
                yield_time_ms=kwargs.get("yield_time_ms", 250),
                max_output_tokens=kwargs.get("max_output_tokens"),
            )
        except UnifiedExecError as exc:
            return f"write_stdin failed: {exc}"
        return _with_warnings(out)

    @staticmethod
    def _common_args(args: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("yield_time_ms", "max_output_tokens"):
            if args.get(key) is not None:
                out[key] = _int_arg(key, args[key])
        return out


def _describe(exc: UnifiedExecError) -> str:
    from .._errors import LaunchError

    if isinstance(exc, LaunchError):
        return f"Failed to create unified exec process: {exc}"
    return str(exc)


def _with_warnings(out: ExecCommandOutput) -> str:
    text = out.to_text()
    for warning in out.warnings:
        text += f"\n\nWarning: {warning}"
    return text
