"""``unified-exec exec``: run one command, locally or on an exec-server, like
``docker exec`` / ``kubectl exec``.

With ``-t`` the command gets a PTY sized like this terminal, this terminal goes raw
(so Ctrl-C, Ctrl-Z and every other key reach the remote program as bytes) and
SIGWINCH sends the new size (resize). The terminal's settings are saved before and
restored in a ``finally`` (so on exit, error, lost link and SIGTERM/SIGHUP alike).
Without ``-t``, stdout and stderr stay apart; stdin is forwarded only with ``-i``
(EOF closes the command's stdin), and a Ctrl-C here interrupts the command.

Exit status: the command's (128+N if signal N killed it); 127 if it could not be
started; 255 with a message when the link to the exec-server is lost; 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import termios
import tty as ttymod
from collections.abc import AsyncIterator, Iterator

import trio

from .._errors import InvalidRequestError, LaunchError, TransportLostError, UnifiedExecError
from .._events import ClosedEvent, ExitedEvent, FailedEvent, LostEvent, OutputEvent
from .._process import UnifiedExecProcess
from .._request import ExecRequest
from ..backends._description import describe_backend
from ..tools._backend_facts import base_env, default_cwd
from ._backend import backend_factory

__all__ = ["run_exec"]

LINK_LOST: int = 255


def _say(text: str) -> None:
    os.write(2, f"\r\nunified-exec exec: {text}\r\n".encode(errors="replace"))


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return max(size.lines, 1), max(size.columns, 1)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """This terminal in raw mode for the block; its settings restored on every exit."""
    saved = termios.tcgetattr(fd)
    try:
        ttymod.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"--env wants K=V, not {pair!r}")
        out[key] = value
    return out


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        view = view[n:]


class _Run:
    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args = args
        self.argv = argv
        self.tty = bool(args.tty)
        self.exit_code: int | None = None
        self.failure: str | None = None

    async def main(self) -> int:
        open_backend = backend_factory(self.args.server, self.args.token_file)
        async with open_backend() as backend:
            where = describe_backend(backend)  # the backend says where it runs
            env = base_env(where)
            if self.tty:
                env["TERM"] = os.environ.get("TERM", "xterm-256color")
            env.update(_parse_env(self.args.env))
            size = _terminal_size(0) if self.tty else (24, 80)
            request = ExecRequest(
                argv=self.argv,
                cwd=self.args.cwd or default_cwd(where),
                env=env,
                tty=self.tty,
                pipe_stdin=bool(self.args.interactive) and not self.tty,
                size=size,
            )
            proc = await UnifiedExecProcess.start(backend, request)
            async with proc:
                await self._drive(proc)
        if self.failure is not None:
            _say(self.failure)
            return LINK_LOST
        return self.exit_code if self.exit_code is not None else LINK_LOST

    async def _drive(self, proc: UnifiedExecProcess) -> None:
        signals = [signal.SIGTERM, signal.SIGHUP]
        signals += [signal.SIGWINCH] if self.tty else [signal.SIGINT]
        with trio.open_signal_receiver(*signals) as receiver:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, proc, receiver, nursery.cancel_scope)
                if self.tty or self.args.interactive:
                    nursery.start_soon(self._stdin, proc)
                await self._output(proc)
                nursery.cancel_scope.cancel()

    async def _output(self, proc: UnifiedExecProcess) -> None:
        async for event in proc.events():
            if isinstance(event, OutputEvent):
                await _write_all(2 if event.stream == "stderr" else 1, event.data)
            elif isinstance(event, ExitedEvent):
                self.exit_code = event.exit_code
            elif isinstance(event, LostEvent):
                _say(f"output seqs {event.first_seq}..{event.last_seq} were lost")
            elif isinstance(event, FailedEvent):
                if self.exit_code is None:
                    self.failure = event.message
                return
            elif isinstance(event, ClosedEvent):
                return

    async def _stdin(self, proc: UnifiedExecProcess) -> None:
        stream = trio.lowlevel.FdStream(os.dup(0))
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (OSError, trio.BrokenResourceError):
                    data = b""
                if not data:
                    if not self.tty:
                        await self._end_stdin(proc)
                    return
                try:
                    await proc.write(data)
                except UnifiedExecError:
                    return

    async def _end_stdin(self, proc: UnifiedExecProcess) -> None:
        """EOF to the command, where its backend declares close-stdin; else say so."""
        try:
            await proc.close_stdin()
        except InvalidRequestError as exc:  # not declared (codex 0.169 cannot)
            _say(f"stdin ended, but {exc}: the command's stdin stays open")
        except UnifiedExecError as exc:
            logging.getLogger("unified_exec").debug("close_stdin: %r", exc)

    async def _signals(
        self,
        proc: UnifiedExecProcess,
        receiver: AsyncIterator[int],
        scope: trio.CancelScope,
    ) -> None:
        async for signum in receiver:
            try:
                if signum == signal.SIGWINCH:
                    await proc.resize(*_terminal_size(0))
                elif signum == signal.SIGINT:
                    await proc.interrupt()
                else:  # SIGTERM / SIGHUP: end the command, then us
                    self.exit_code = 128 + signum
                    await proc.terminate()
                    scope.cancel()
                    return
            except UnifiedExecError as exc:
                logging.getLogger("unified_exec").debug("signal %s: %r", signum, exc)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def run_exec(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=str(args.log_level).upper())
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        _say("no command given: unified-exec exec [options] -- CMD ARGS...")
        return 2
    run = _Run(args, argv)
    use_raw = run.tty and os.isatty(0)
    if run.tty and not os.isatty(0):
        _say("-t: stdin is not a terminal; running in a PTY without raw mode")
    try:
        with raw_terminal(0) if use_raw else contextlib.nullcontext():
            return trio.run(run.main)
    except BaseException as exc:
        code = _failure_status(_first_leaf(exc), args.server)
        if code is None:
            raise
        return code


def _failure_status(leaf: BaseException, server: str | None) -> int | None:
    """Our exit status for what ended the run, after saying why; None: re-raise."""
    if isinstance(leaf, InvalidRequestError):
        _say(str(leaf))
        return 2
    if isinstance(leaf, LaunchError):
        _say(str(leaf))
        return 127
    if isinstance(leaf, TransportLostError):
        _say(f"lost the link to {server}: {leaf}")
        return LINK_LOST
    if isinstance(leaf, UnifiedExecError):
        _say(str(leaf))
        return LINK_LOST
    if isinstance(leaf, OSError) and leaf.errno == errno.EIO:
        return LINK_LOST
    return None
