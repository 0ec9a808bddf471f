"""The ``exec`` subcommand's flags; the client itself is ``_client``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_exec_parser", "pool_spec_arg"]


def pool_spec_arg(text: str) -> Any:
    """argparse ``type=`` for ``--pool``: a ``PoolSpec``, or an argparse error (exit 2).

    Imported lazily so that building the parser stays cheap for other subcommands.
    """
    from .._errors import InvalidRequestError
    from ._backend import parse_pool_spec

    try:
        return parse_pool_spec(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_exec_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser(
        "exec",
        help="run one command here or on an exec-server, like docker exec",
        usage="unified-exec exec [--server URL | --pool SPEC] [--token-file F] [-t] [-i] "
        "[--cwd DIR] [--env K=V ...] -- CMD ARGS...",
    )
    where = ex.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="URL",
                       help="the exec-server (ws:// or wss://); default: run locally")  # fmt: skip
    where.add_argument("--pool", metavar="SPEC", type=pool_spec_arg,
                       help="run on one server of a pool: URL,URL,... or "
                       "dns:NAME[:PORT][@NAMESERVER[:PORT]] (a headless Service; "
                       "port 8765 by default)")  # fmt: skip
    ex.add_argument("--token-file", metavar="PATH",
                    help="the exec-server's token, sent to every pool member "
                    "(default: $UNIFIED_EXEC_TOKEN)")  # fmt: skip
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

    if args.pool is not None:
        # The client opens whatever backend_factory(args.server, ...) is given: a URL,
        # or this PoolSpec (its str() names the pool in the client's messages).
        args.server = args.pool
    return run_exec(args)
