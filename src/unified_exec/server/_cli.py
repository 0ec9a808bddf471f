"""``unified-exec serve``: the command-line face of our exec-server, secure by default.

Authentication follows codex's ``exec-server`` flags: ``--ws-auth capability-token``
with ``--ws-token-file PATH`` or ``--ws-token-sha256 HEX``. With no auth flag at all, a
loopback websocket gets a fresh random token, written to a 0600 file whose path (and
the token) go to stderr, as Jupyter does; ``--ws-auth none`` turns that off (loopback
only, with a warning). A ``unix://`` socket is 0600, which is its authentication. Off
loopback, a token is required and so is TLS (``--tls-cert``/``--tls-key``) unless
``--insecure-plaintext`` says otherwise.

Stopping: SIGTERM, SIGINT, SIGHUP, or stdin closing with ``--exit-on-stdin-close``
(as codex), terminate every child (SIGKILL to its process group by default), flush
the last notifications and exit: 0 for SIGTERM and stdin close, 128+N for SIGINT and
SIGHUP. A second signal cuts the flush short.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import ssl
import sys
from typing import Any

import trio

from .._errors import InvalidRequestError
from ..mcp_server._cli import add_mcp_parser
from ..term._cli import add_exec_parser
from ._auth import TokenAuth, generate_token_file, read_token_file
from ._listen import is_loopback, parse_listen
from ._transports import serve_exec_server

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unified-exec")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run an exec-server (codex exec-server protocol)")
    serve.add_argument(
        "--listen",
        default="ws://127.0.0.1:0",
        help="stdio, ws://HOST:PORT (port 0 picks one) or unix:///PATH (a 0600 socket); "
        "the URL is printed first on stdout",
    )
    serve.add_argument(
        "--ws-auth",
        choices=["capability-token", "none"],
        help="websocket authentication (default: a generated capability token on "
        "loopback; none on a unix socket). 'none' is allowed on loopback only",
    )
    serve.add_argument("--ws-token-file", metavar="PATH", help="file holding the capability token")
    serve.add_argument(
        "--ws-token-sha256", metavar="HEX", help="hex SHA-256 digest of the capability token"
    )
    serve.add_argument(
        "--token",
        help="DEPRECATED: the token on the command line is readable by every local user; "
        "use --ws-token-file (or $UNIFIED_EXEC_TOKEN)",
    )
    serve.add_argument("--tls-cert", metavar="PATH", help="serve wss:// with this certificate")
    serve.add_argument("--tls-key", metavar="PATH", help="the private key of --tls-cert")
    serve.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="allow a non-loopback listener without TLS (the token travels in cleartext)",
    )
    serve.add_argument(
        "--exit-on-stdin-close",
        action="store_true",
        default=os.environ.get("UNIFIED_EXEC_EXIT_ON_STDIN_CLOSE", "") not in ("", "0"),
        help="exit (terminating every child) when stdin reaches EOF",
    )
    serve.add_argument("--ping-interval", type=float, default=15.0, metavar="SECONDS",
                       help="websocket keepalive ping interval (0: no pings)")  # fmt: skip
    serve.add_argument("--ping-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="detach a connection silent this long after a ping")  # fmt: skip
    serve.add_argument("--retain-closed", type=float, default=80.0, metavar="SECONDS")
    serve.add_argument("--detach-timeout", type=float, default=80.0, metavar="SECONDS")
    serve.add_argument("--log-level", default=os.environ.get("UNIFIED_EXEC_LOG", "WARNING"))
    # Every other subcommand lives in its own module and runs through its ``run``.
    add_mcp_parser(sub)
    add_exec_parser(sub)
    return parser


def _say(text: str) -> None:
    print(f"unified-exec: {text}", file=sys.stderr, flush=True)


class _Config:
    """What the flags resolve to: keyword arguments for serve_exec_server."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.cleanup: str | None = None  # directory of a generated token


def _resolve_auth(args: argparse.Namespace, cfg: _Config) -> None:
    spec = parse_listen(args.listen)
    if spec.kind == "stdio":
        return
    env_token = os.environ.get("UNIFIED_EXEC_TOKEN") or None
    explicit = args.ws_token_file is not None or args.ws_token_sha256 is not None
    if explicit and args.ws_auth != "capability-token":
        raise InvalidRequestError(
            "--ws-token-file/--ws-token-sha256 require --ws-auth capability-token"
        )
    if args.ws_token_file is not None and args.ws_token_sha256 is not None:
        raise InvalidRequestError("--ws-token-file and --ws-token-sha256 are mutually exclusive")
    if args.ws_auth == "capability-token" and not explicit:
        raise InvalidRequestError(
            "--ws-auth capability-token needs --ws-token-file or --ws-token-sha256 "
            "(or leave --ws-auth out to get a generated token)"
        )
    if args.token is not None:
        _say("WARNING: --token is readable by every local user; use --ws-token-file PATH")
    legacy = args.token if args.token is not None else env_token
    if legacy is not None and (explicit or args.ws_auth == "none"):
        raise InvalidRequestError("--token/$UNIFIED_EXEC_TOKEN conflict with --ws-auth flags")
    auth: TokenAuth | None = None
    if args.ws_token_file is not None:
        auth = read_token_file(args.ws_token_file)
    elif args.ws_token_sha256 is not None:
        auth = TokenAuth.from_sha256(args.ws_token_sha256)
    elif legacy is not None:
        auth = TokenAuth.from_token(legacy)
    off_loopback = spec.kind == "ws" and not is_loopback(spec.host)
    if auth is None and args.ws_auth == "none":
        if off_loopback:
            raise InvalidRequestError(
                f"refusing --ws-auth none on {spec.host}: off loopback a token is required"
            )
        if spec.kind == "ws":
            _say(
                "WARNING: --ws-auth none: every local user (and every container sharing "
                "this network namespace) can run commands as this user"
            )
    elif auth is None and spec.kind == "ws":
        if off_loopback:
            raise InvalidRequestError(
                f"refusing to listen on {spec.host} without a token: the exec-server runs "
                "arbitrary commands (pass --ws-auth capability-token --ws-token-file FILE)"
            )
        token, path = generate_token_file()
        cfg.cleanup = os.path.dirname(path)
        auth = TokenAuth.from_token(token)
        _say(f"websocket token written to {path} (mode 0600); send 'Authorization: Bearer <token>'")
        _say(f"token: {token}")
    if auth is not None:
        cfg.kwargs["token_sha256"] = auth.digest.hex()


def _resolve_tls(args: argparse.Namespace, cfg: _Config) -> None:
    spec = parse_listen(args.listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InvalidRequestError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        if spec.kind != "ws":
            raise InvalidRequestError("--tls-cert needs a ws:// listener")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidRequestError(f"cannot load --tls-cert/--tls-key: {exc}") from None
        cfg.kwargs["ssl_context"] = context
    elif spec.kind == "ws" and not is_loopback(spec.host):
        if not args.insecure_plaintext:
            raise InvalidRequestError(
                f"refusing to listen on {spec.host} without TLS: the token would travel in "
                "cleartext (pass --tls-cert/--tls-key, or --insecure-plaintext)"
            )
        _say(f"WARNING: --insecure-plaintext: the token travels in cleartext to {spec.host}")


async def _watch_stdin(stop: trio.Event) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        try:
            while await stdin.receive_some(65536):
                pass
        except (OSError, trio.BrokenResourceError):
            pass
    stop.set()


async def _serve(args: argparse.Namespace, cfg: _Config) -> int:
    """Serve until stdin EOF (stdio), a stop signal, or stdin close if asked."""

    def announce(url: str) -> None:
        if url != "stdio":
            print(url, flush=True)

    stopped_by: list[int] = []
    stop = trio.Event()
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if stop.is_set():
                        nursery.cancel_scope.cancel()  # a second signal: no flush
                        return
                    stopped_by.append(signum)
                    stop.set()

            async def serve() -> None:
                await serve_exec_server(
                    listen=args.listen,
                    retain_closed=args.retain_closed,
                    detach_timeout=args.detach_timeout,
                    ping_interval=args.ping_interval or None,
                    ping_timeout=args.ping_timeout,
                    announce=announce,
                    stop=stop,
                    **cfg.kwargs,
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            if args.exit_on_stdin_close and args.listen not in ("stdio", "stdio://"):
                nursery.start_soon(_watch_stdin, stop)
            nursery.start_soon(serve)
    if not stopped_by or stopped_by[0] == signal.SIGTERM:
        return 0
    return 128 + stopped_by[0]


def _without_token(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--token":
            skip = True
        elif not arg.startswith("--token="):
            out.append(arg)
    return out


def _scrub_token_from_argv(args: argparse.Namespace) -> None:
    """Re-exec without ``--token`` on the command line, the token moved to the environment.

    /proc/PID/cmdline is readable by every local user, /proc/PID/environ only by the
    owner. This leaves a window of one interpreter start-up, hence the warning too.
    """
    _say(
        "WARNING: --token puts the token in /proc/PID/cmdline, readable by every local "
        "user; moving it to $UNIFIED_EXEC_TOKEN and restarting. Use --ws-token-file PATH"
    )
    env = dict(os.environ, UNIFIED_EXEC_TOKEN=args.token)
    argv = [sys.executable, "-m", "unified_exec", *_without_token(sys.argv[1:])]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":
        return int(args.run(args))
    if argv is None and args.token is not None:
        _scrub_token_from_argv(args)  # does not return
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper())
    cfg = _Config()
    try:
        _resolve_auth(args, cfg)
        _resolve_tls(args, cfg)
        return trio.run(_serve, args, cfg)
    except BaseExceptionGroup as group:
        refused = group.subgroup(InvalidRequestError)
        if refused is None:
            raise
        leaf: BaseException = refused
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        _say(str(leaf))
        return 2
    except InvalidRequestError as exc:
        _say(str(exc))
        return 2
    finally:
        if cfg.cleanup is not None:
            shutil.rmtree(cfg.cleanup, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
