"""``unified-exec serve``: the command-line face of our exec-server."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from .._errors import InvalidRequestError
from ._transports import serve_exec_server


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper())

    def announce(url: str) -> None:
        if url != "stdio":
            print(url, flush=True)

    try:
        trio.run(
            lambda: serve_exec_server(
                listen=args.listen,
                token=args.token,
                retain_closed=args.retain_closed,
                detach_timeout=args.detach_timeout,
                announce=announce,
            )
        )
    except InvalidRequestError as exc:
        print(f"unified-exec: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
