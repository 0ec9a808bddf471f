"""``unified-exec serve``: the command-line face of our exec-server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from .._errors import InvalidRequestError
from ._transports import serve_exec_server

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unified-exec")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run an exec-server (codex exec-server protocol)")
    serve.add_argument(
        "--listen",
        default="ws://127.0.0.1:0",
        help="stdio, or ws://HOST:PORT (port 0 picks one; the URL is printed first on stdout)",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("UNIFIED_EXEC_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (needed off loopback; "
        "default: $UNIFIED_EXEC_TOKEN)",
    )
    serve.add_argument("--retain-closed", type=float, default=80.0, metavar="SECONDS")
    serve.add_argument("--detach-timeout", type=float, default=80.0, metavar="SECONDS")
    serve.add_argument("--log-level", default=os.environ.get("UNIFIED_EXEC_LOG", "WARNING"))
    return parser


async def _serve(args: argparse.Namespace) -> int:
    """Serve until stdin EOF (stdio) or a stop signal; children die either way."""

    def announce(url: str) -> None:
        if url != "stdio":
            print(url, flush=True)

    stopped_by: list[int] = []
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    stopped_by.append(signum)
                    nursery.cancel_scope.cancel()
                    return

            async def serve() -> None:
                await serve_exec_server(
                    listen=args.listen,
                    token=args.token,
                    retain_closed=args.retain_closed,
                    detach_timeout=args.detach_timeout,
                    announce=announce,
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            nursery.start_soon(serve)
    return 128 + stopped_by[0] if stopped_by else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper())
    try:
        return trio.run(_serve, args)
    except BaseExceptionGroup as group:
        refused = group.subgroup(InvalidRequestError)
        if refused is None:
            raise
        print(f"unified-exec: {refused.exceptions[0]}", file=sys.stderr)
        return 2
    except InvalidRequestError as exc:
        print(f"unified-exec: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
