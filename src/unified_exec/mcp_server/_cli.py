"""``unified-exec mcp``: Codex's exec_command / write_stdin for any MCP client.

stdio by default (the client spawns us). ``--listen http://HOST:PORT`` serves
streamable HTTP and prints its endpoint URL first on stdout. HTTP authentication
follows ``unified-exec serve``: with no auth flag a loopback listener gets a fresh
random bearer token, written to a 0600 file whose path (and the token) go to
stderr; ``--http-auth none`` turns that off (loopback only, with a warning); off
loopback a token is required. ``--exec-server URL`` runs the commands on an
exec-server instead of here (its token from ``--token-file`` or
``$UNIFIED_EXEC_TOKEN``); relative and default working directories are then the
exec-server's. ``--pool SPEC`` spreads them over a ``PoolBackend`` instead: a
comma-separated list of exec-server URLs, or ``dns:NAME[:PORT]`` (a headless
Service; see ``term._backend.parse_pool_spec``), the token sent to every member.

This module imports the SDK only when the subcommand runs: it is an optional
extra (``pip install unified-exec[mcp]``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from urllib.parse import urlsplit

import trio

from .._errors import InvalidRequestError, UnifiedExecError
from ..server._auth import TokenAuth, generate_token_file, read_token_file
from ..server._listen import is_loopback
from ..term._cli import pool_spec_arg

__all__ = ["add_mcp_parser"]


def add_mcp_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mcp = sub.add_parser("mcp", help="run an MCP server exposing exec_command / write_stdin")
    mcp.add_argument("--listen", default="stdio",
                     help="stdio (default) or http://HOST:PORT (port 0 picks one; the "
                     "endpoint URL is printed first on stdout)")  # fmt: skip
    mcp.add_argument("--http-auth", choices=["bearer-token", "none"],
                     help="HTTP authentication (default: a generated bearer token on "
                     "loopback). 'none' is allowed on loopback only")  # fmt: skip
    mcp.add_argument("--http-token-file", metavar="PATH",
                     help="file holding the bearer token HTTP clients must send")  # fmt: skip
    where = mcp.add_mutually_exclusive_group()
    where.add_argument("--exec-server", metavar="URL",
                       help="run commands on this exec-server (ws://, wss://)")  # fmt: skip
    where.add_argument("--pool", metavar="SPEC", type=pool_spec_arg,
                       help="spread commands over a pool of exec-servers: URL,URL,... or "
                       "dns:NAME[:PORT][@NAMESERVER[:PORT]] (a headless Service; "
                       "port 8765 by default)")  # fmt: skip
    mcp.add_argument("--token-file", metavar="PATH",
                     help="the exec-server's token, sent to every pool member "
                     "(default: $UNIFIED_EXEC_TOKEN)")  # fmt: skip
    mcp.add_argument("--max-wait", type=float, default=30.0, metavar="SECONDS",
                     help="no tool call waits longer than this (5-300; default 30)")  # fmt: skip
    mcp.add_argument("--max-output-tokens", type=int, default=10_000, metavar="N",
                     help="cap on each call's output in tokens (default 10000)")  # fmt: skip
    mcp.add_argument("--no-login-shell", action="store_true",
                     help="run commands with -c, not -lc (drops the login parameter)")  # fmt: skip
    mcp.add_argument("--log-level", default=os.environ.get("UNIFIED_EXEC_LOG", "WARNING"))
    mcp.set_defaults(run=run_mcp)


def _say(text: str) -> None:
    print(f"unified-exec mcp: {text}", file=sys.stderr, flush=True)


def _parse_http(listen: str) -> tuple[str, int]:
    parts = urlsplit(listen)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise InvalidRequestError(f"--listen must be stdio or http://HOST:PORT, not {listen!r}")
    try:
        port = parts.port if parts.port is not None else 0
    except ValueError:
        raise InvalidRequestError(f"bad port in {listen!r}") from None
    return parts.hostname, port


def _resolve_http_auth(args: argparse.Namespace, host: str) -> tuple[TokenAuth | None, str | None]:
    """(the check, a generated token's directory to remove at exit)."""
    if args.http_token_file is not None:
        if args.http_auth == "none":
            raise InvalidRequestError("--http-token-file conflicts with --http-auth none")
        return read_token_file(args.http_token_file), None
    if args.http_auth == "bearer-token":
        raise InvalidRequestError("--http-auth bearer-token needs --http-token-file")
    if args.http_auth == "none":
        if not is_loopback(host):
            raise InvalidRequestError(
                f"refusing --http-auth none on {host}: off loopback a token is required"
            )
        _say("WARNING: --http-auth none: every local user can run commands as this user")
        return None, None
    if not is_loopback(host):
        raise InvalidRequestError(
            f"refusing to listen on {host} without a token: the MCP server runs arbitrary "
            "commands (pass --http-auth bearer-token --http-token-file FILE)"
        )
    token, path = generate_token_file()
    _say(f"bearer token written to {path} (mode 0600); send 'Authorization: Bearer <token>'")
    _say(f"token: {token}")
    return TokenAuth.from_token(token), os.path.dirname(path)


async def _main(args: argparse.Namespace, auth: TokenAuth | None) -> int:
    from ..term._backend import backend_factory
    from ._hub import McpOptions
    from ._serve import serve_http, serve_stdio
    from ._tools import build_server

    options = McpOptions(
        max_wait=args.max_wait,
        max_output_tokens=args.max_output_tokens,
        manager_options={"allow_login_shell": False} if args.no_login_shell else {},
    )
    where = args.pool if args.pool is not None else args.exec_server
    server = build_server(backend_factory(where, args.token_file), options)
    stopped_by: list[int] = []
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    stopped_by.append(signum)
                    if stop.is_set() or args.listen == "stdio":
                        nursery.cancel_scope.cancel()  # teardown is shielded: sessions still end
                        return
                    stop.set()

            async def serve() -> None:
                if args.listen == "stdio":
                    await serve_stdio(server)
                else:
                    host, port = _parse_http(args.listen)

                    def announce(url: str) -> None:
                        print(url, flush=True)

                    await serve_http(
                        server, host=host, port=port, auth=auth, announce=announce, stop=stop
                    )
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            nursery.start_soon(serve)
    if not stopped_by or stopped_by[0] == signal.SIGTERM:
        return 0
    return 128 + stopped_by[0]


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def run_mcp(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper())
    cleanup: str | None = None
    try:
        auth: TokenAuth | None = None
        if args.listen != "stdio":
            host, _port = _parse_http(args.listen)
            auth, cleanup = _resolve_http_auth(args, host)
        elif args.http_auth is not None or args.http_token_file is not None:
            raise InvalidRequestError("--http-auth/--http-token-file need --listen http://...")
        return trio.run(_main, args, auth)
    except InvalidRequestError as exc:
        _say(str(exc))
        return 2
    except BaseExceptionGroup as group:
        failed = group.subgroup(UnifiedExecError)
        if failed is None:
            raise
        _say(str(_first_leaf(failed)))
        return 1
    except ImportError as exc:
        _say(f"the MCP server needs the 'mcp' extra (pip install 'unified-exec[mcp]'): {exc}")
        return 2
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
