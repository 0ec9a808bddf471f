"""The ``exec`` subcommand's flags; the client itself is ``_client``."""

from __future__ import annotations

import argparse

__all__ = ["add_exec_parser"]


def add_exec_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser(
        "exec",
        help="run one command here or on an exec-server, like docker exec",
        usage="unified-exec exec [--server URL] [--token-file F] [-t] [-i] [--cwd DIR] "
        "[--env K=V ...] -- CMD ARGS...",
    )
    ex.add_argument("--server", metavar="URL",
                    help="the exec-server (ws:// or wss://); default: run locally")  # fmt: skip
    ex.add_argument("--token-file", metavar="PATH",
                    help="the exec-server's token (default: $UNIFIED_EXEC_TOKEN)")  # fmt: skip
    ex.add_argument("-t", "--tty", action="store_true",
                    help="run in a PTY; this terminal goes raw, its size is forwarded")  # fmt: skip
    ex.add_argument("-i", "--interactive", action="store_true",
                    help="forward stdin (always on with -t)")  # fmt: skip
    ex.add_argument("--cwd", metavar="DIR", help="working directory (default: the server's)")
    ex.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="set a variable for the command (repeatable)")  # fmt: skip
    ex.add_argument("--log-level", default="WARNING")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    ex.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ._client import run_exec

    return run_exec(args)
