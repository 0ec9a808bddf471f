"""Tool calls from a model: JSON arguments in, the text Codex shows the model out.

The model-facing surface never raises: a malformed call answers with the parse
error text (as Codex does), a failed one with the failure text. Only here are
model arguments checked for shape; the manager's methods check their own.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import InvalidRequestError, LaunchError, UnifiedExecError
from ._output import ExecCommandOutput

if TYPE_CHECKING:
    from ._manager import UnifiedExecManager

__all__ = ["check_text", "handle_tool_call"]

log = logging.getLogger("unified_exec")


def check_text(name: str, value: str) -> bytes:
    """``value`` as UTF-8, or InvalidRequestError if it holds a lone surrogate.

    ``json.loads`` turns a model's ``"\\ud83d"`` (half an emoji) into a lone
    surrogate that no encoder accepts; serde_json (Codex) refuses it at parse time.
    """
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{name} is not valid Unicode text: lone surrogate at index {exc.start}"
        ) from None


def int_arg(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}")
    return int(value)


async def handle_tool_call(
    manager: UnifiedExecManager, name: str, arguments: str | Mapping[str, Any]
) -> str:
    """Run one tool call on ``manager``; errors come back as text, never raised."""
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        if not isinstance(args, dict):
            raise TypeError(f"expected a JSON object, got {type(args).__name__}")
    except (ValueError, TypeError, RecursionError) as exc:
        return f"failed to parse {name} arguments: {exc}"
    if name == "exec_command":
        return await _exec_command_call(manager, args)
    if name == "write_stdin":
        return await _write_stdin_call(manager, args)
    return f"unsupported call: {name}"


async def _exec_command_call(manager: UnifiedExecManager, args: dict[str, Any]) -> str:
    try:
        cmd = args.get("cmd")
        if not isinstance(cmd, str):
            raise InvalidRequestError("missing field `cmd`")
        check_text("cmd", cmd)
        kwargs = _common_args(args)
        for key in ("workdir", "shell"):
            if args.get(key) is not None:
                if not isinstance(args[key], str):
                    raise InvalidRequestError(f"{key} must be a string")
                check_text(key, args[key])
        for key in ("login", "tty"):
            if args.get(key) is not None and not isinstance(args[key], bool):
                raise InvalidRequestError(f"{key} must be a boolean")
    except InvalidRequestError as exc:
        return f"failed to parse exec_command arguments: {exc}"
    try:
        out = await manager.exec_command(
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
    except Exception as exc:  # a third-party backend's bug must not end the agent loop
        log.exception("exec_command failed unexpectedly")
        return f"exec_command failed for `{cmd}`: internal error: {exc!r}"
    return _with_warnings(out)


async def _write_stdin_call(manager: UnifiedExecManager, args: dict[str, Any]) -> str:
    try:
        session_id = int_arg("session_id", args.get("session_id"))
        chars = args.get("chars", "")
        if chars is None:
            chars = ""
        if not isinstance(chars, str):
            raise InvalidRequestError("chars must be a string")
        check_text("chars", chars)
        kwargs = _common_args(args)
    except InvalidRequestError as exc:
        return f"failed to parse write_stdin arguments: {exc}"
    try:
        out = await manager.write_stdin(
            session_id,
            chars,
            yield_time_ms=kwargs.get("yield_time_ms", 250),
            max_output_tokens=kwargs.get("max_output_tokens"),
        )
    except UnifiedExecError as exc:
        return f"write_stdin failed: {exc}"
    except Exception as exc:  # as above
        log.exception("write_stdin failed unexpectedly")
        return f"write_stdin failed: internal error: {exc!r}"
    return _with_warnings(out)


def _common_args(args: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("yield_time_ms", "max_output_tokens"):
        if args.get(key) is not None:
            out[key] = int_arg(key, args[key])
    return out


def _describe(exc: UnifiedExecError) -> str:
    if isinstance(exc, LaunchError):
        return f"Failed to create unified exec process: {exc}"
    return str(exc)


def _with_warnings(out: ExecCommandOutput) -> str:
    text = out.to_text()
    for warning in out.warnings:
        text += f"\n\nWarning: {warning}"
    return text
