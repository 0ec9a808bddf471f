"""``unified-exec mcp``: our agent tools (Codex's exec_command / write_stdin) over the
Model Context Protocol, on trio, with the official SDK (the optional ``mcp`` extra).

Imported lazily: ``import unified_exec.mcp_server`` works without the SDK; the
names below load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._hub import McpOptions as McpOptions
    from ._serve import serve_http as serve_http
    from ._serve import serve_stdio as serve_stdio
    from ._tools import build_server as build_server
    from ._tools import mcp_tools as mcp_tools

__all__ = ["McpOptions", "build_server", "mcp_tools", "serve_http", "serve_stdio"]

_WHERE = {
    "McpOptions": "._hub",
    "build_server": "._tools",
    "mcp_tools": "._tools",
    "serve_http": "._serve",
    "serve_stdio": "._serve",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name], __name__), name)
