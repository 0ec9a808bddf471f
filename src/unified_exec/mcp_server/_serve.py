"""The two MCP transports, both on trio: stdio, and streamable HTTP under hypercorn.

The SDK's own ``run(transport="streamable-http")`` imports uvicorn, which is
asyncio-only; hypercorn serves the same ASGI app on trio. In front of it sits a
bearer-token gate (the same ``TokenAuth`` check as ``unified-exec serve``), and the
SDK's DNS-rebinding protection (Host/Origin allow-list) stays on for loopback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings

from ..server._auth import TokenAuth
from ..server._listen import is_loopback

__all__ = ["BearerGate", "serve_http", "serve_stdio"]

log = logging.getLogger("unified_exec.mcp")

_ASGI = Callable[..., Any]


async def serve_stdio(server: Server[Any]) -> None:
    """Serve one client on stdin/stdout until stdin reaches EOF.

    While serving, the SDK points fd 0 at /dev/null and fd 1 at stderr, so no child
    can read the protocol stream or write into it.
    """
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


class BearerGate:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <token>``."""

    def __init__(self, app: _ASGI, auth: TokenAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: dict[str, Any], receive: _ASGI, send: _ASGI) -> None:
        if scope.get("type") == "http":
            header = next(
                (v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"), None
            )
            if not self.auth.check(header):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"www-authenticate", b'Bearer realm="unified-exec"'),
                        ],
                    }
                )
                body = b"a valid bearer token is required\n"
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _security(host: str) -> TransportSecuritySettings:
    if is_loopback(host):
        where = f"[{host}]" if ":" in host else host
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"{where}:*", "localhost:*", "127.0.0.1:*", "[::1]:*"],
            allowed_origins=[f"http://{where}:*", "http://localhost:*", "http://127.0.0.1:*"],
        )
    # Off loopback the Host is whatever name clients use; the bearer token is the gate.
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


async def serve_http(
    server: Server[Any],
    *,
    host: str,
    port: int,
    path: str = "/mcp",
    auth: TokenAuth | None,
    announce: Callable[[str], None],
    stop: trio.Event,
    session_idle_timeout: float | None = 30 * 60,
) -> None:
    """Serve streamable HTTP on ``host:port`` until ``stop`` is set.

    ``announce`` gets the endpoint URL once listening (port 0 resolved).
    """
    app: _ASGI = server.streamable_http_app(
        streamable_http_path=path,
        host=host,
        transport_security=_security(host),
        session_idle_timeout=session_idle_timeout,
    )
    if auth is not None:
        app = BearerGate(app, auth)
    config = Config()
    where = f"[{host}]" if ":" in host else host
    config.bind = [f"{where}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 5.0

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait)
        )
        for bind in binds:
            announce(f"{bind}{path}")
