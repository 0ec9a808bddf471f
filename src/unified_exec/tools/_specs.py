"""JSON-schema definitions of the two model tools (OpenAI function-tool shape).

Parameter names are the ones the models are trained on; keep them stable.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["tool_specs"]

_EXEC_COMMAND: dict[str, Any] = {
    "type": "function",
    "name": "exec_command",
    "description": (
        "Runs a command in a PTY, returning output or a session ID for ongoing interaction."
    ),
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {
            "cmd": {"type": "string", "description": "Shell command to execute."},
            "workdir": {
                "type": "string",
                "description": "Working directory for the command; relative paths resolve "
                "against the session's working directory. Defaults to it.",
            },
            "shell": {
                "type": "string",
                "description": "Shell binary to run the command with. Defaults to the "
                "user's shell.",
            },
            "login": {
                "type": "boolean",
                "description": "Whether to run the shell as a login shell (-lc). Defaults to true.",
            },
            "tty": {
                "type": "boolean",
                "description": "Whether to allocate a TTY for the command. Defaults to false "
                "(plain pipes); set to true to open a PTY and access TTY process.",
            },
            "yield_time_ms": {
                "type": "number",
                "description": "How long to wait (in milliseconds) for output before "
                "returning; the command keeps running in its session afterwards.",
            },
            "max_output_tokens": {
                "type": "number",
                "description": "Maximum number of tokens of output to return; the middle "
                "of longer output is truncated.",
            },
        },
        "required": ["cmd"],
        "additionalProperties": False,
    },
}

_WRITE_STDIN: dict[str, Any] = {
    "type": "function",
    "name": "write_stdin",
    "description": (
        "Writes characters to an existing unified exec session and returns recent output."
    ),
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {
            "session_id": {
                "type": "number",
                "description": "Identifier of the running unified exec session.",
            },
            "chars": {
                "type": "string",
                "description": "Bytes to write to stdin (may be empty to poll).",
            },
            "yield_time_ms": {
                "type": "number",
                "description": "How long to wait (in milliseconds) for output before returning.",
            },
            "max_output_tokens": {
                "type": "number",
                "description": "Maximum number of tokens of output to return; the middle "
                "of longer output is truncated.",
            },
        },
        "required": ["session_id"],
        "additionalProperties": False,
    },
}


def tool_specs(*, login: bool = True) -> list[dict[str, Any]]:
    """Fresh copies (callers may edit them). ``login=False`` leaves the ``login``
    parameter out, as Codex does when login shells are disabled."""
    exec_command = copy.deepcopy(_EXEC_COMMAND)
    if not login:
        del exec_command["parameters"]["properties"]["login"]
    return [exec_command, copy.deepcopy(_WRITE_STDIN)]
