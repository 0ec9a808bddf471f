"""The two Codex tools as an MCP server (the SDK's lowlevel ``Server``).

The lowlevel server, not ``MCPServer``: the input schemas, descriptions and result
text must be Codex's byte for byte (``tool_specs()`` / ``handle_tool_call()``),
not derived from a Python signature. Arguments are not validated by the SDK either:
``handle_tool_call()`` checks them and its error text goes back as a tool error
(``isError``), so a bad call never becomes a protocol error and the server keeps
serving.

Ceilings: ``yield_time_ms`` is clamped to ``McpOptions.max_wait`` (an empty
``write_stdin`` poll through the manager's ``max_write_stdin_yield_time_ms``), so a
live process always comes back, with its session id, before MCP clients give up;
a progress notification goes out every ``progress_interval`` while a call waits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import mcp_types as types
import trio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from .._version import __version__
from ..backends._base import ExecBackend
from ..tools import tool_specs
from ._hub import Hub, McpOptions, open_hub

__all__ = ["build_server", "mcp_tools", "result_is_error"]

log = logging.getLogger("unified_exec.mcp")

TOOL_NAMES: Final = ("exec_command", "write_stdin")
#: Codex's default yield windows, used to clamp an argument the model left out.
_DEFAULT_YIELD_MS: Final = {"exec_command": 10_000, "write_stdin": 250}
#: A call still running this long past the cap is abandoned (a backend that hangs).
_GRACE: Final = 15.0

INSTRUCTIONS: Final = (
    "Run shell commands with exec_command; a command still running after the yield "
    "window keeps running in a session: poll it or type into it with write_stdin. "
    "No call waits longer than {max_wait:g} s (yield_time_ms is capped), and output "
    "is capped at {tokens} tokens per call. Sessions end when this MCP connection closes."
)


def mcp_tools(*, login: bool = True) -> list[types.Tool]:
    """Codex's two tool specs as MCP tools, with annotations."""
    destructive = types.ToolAnnotations(
        read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
    )
    out = []
    for spec in tool_specs(login=login):
        out.append(
            types.Tool(
                name=spec["name"],
                description=spec["description"],
                input_schema=spec["parameters"],
                annotations=destructive,
            )
        )
    return out


def result_is_error(text: str) -> bool:
    """Whether ``handle_tool_call()`` text reports a failure: every result it
    formats (``ExecCommandOutput.to_text()``) opens with its chunk id or wall time;
    every failure opens with what failed."""
    return not text.startswith(("Chunk ID: ", "Wall time: "))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def clamp_arguments(name: str, arguments: Mapping[str, Any], max_wait_ms: int) -> dict[str, Any]:
    """``arguments`` with ``yield_time_ms`` at most ``max_wait_ms`` (a bad value is
    left alone, for ``handle_tool_call()`` to report)."""
    args = dict(arguments)
    value = args.get("yield_time_ms")
    if value is None:
        value = _DEFAULT_YIELD_MS.get(name, 250)
    if _is_number(value):
        args["yield_time_ms"] = min(value, max_wait_ms)
    return args


def _text_result(text: str, *, error: bool) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


async def _report_progress(ctx: ServerRequestContext[Hub, Any], interval: float) -> None:
    """Tick while a call waits; a no-op on the wire without a progress token."""
    started = trio.current_time()
    while True:
        await trio.sleep(interval)
        waited = trio.current_time() - started
        try:
            await ctx.session.report_progress(waited, None, f"waiting for output: {waited:.0f} s")
        except Exception as exc:  # progress is advisory: never fail the call for it
            log.debug("progress notification failed: %r", exc)
            return


async def call_tool(
    ctx: ServerRequestContext[Hub, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    hub = ctx.lifespan_context
    name = params.name
    if name not in TOOL_NAMES:
        return _text_result(f"unsupported call: {name}", error=True)
    try:
        manager = await hub.manager_for(ctx)
    except Exception as exc:
        return _text_result(f"{name} failed: {exc}", error=True)
    args = clamp_arguments(name, params.arguments or {}, hub.options.max_wait_ms)
    text: str | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_report_progress, ctx, hub.options.progress_interval)
        with trio.move_on_after(hub.options.max_wait + _GRACE):
            text = await manager.handle_tool_call(name, args)
        nursery.cancel_scope.cancel()
    if text is None:
        log.warning("%s gave no answer within %.0f s", name, hub.options.max_wait + _GRACE)
        return _text_result(
            f"{name} failed: no answer within {hub.options.max_wait + _GRACE:g} seconds",
            error=True,
        )
    return _text_result(text, error=result_is_error(text))


def build_server(
    backend_factory: Callable[[], AbstractAsyncContextManager[ExecBackend]],
    options: McpOptions,
) -> Server[Hub]:
    """An MCP server whose lifespan opens the backend (a stdio run, or the whole
    HTTP server) and whose tools run Codex's exec_command / write_stdin."""
    login = bool(options.manager_options.get("allow_login_shell", True))
    tools = mcp_tools(login=login)

    @asynccontextmanager
    async def lifespan(_server: Server[Hub]) -> AsyncIterator[Hub]:
        async with open_hub(backend_factory, options) as hub:
            yield hub

    async def list_tools(
        _ctx: ServerRequestContext[Hub, Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    return Server(
        "unified-exec",
        version=__version__,
        instructions=INSTRUCTIONS.format(
            max_wait=options.max_wait, tokens=options.max_output_tokens
        ),
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
