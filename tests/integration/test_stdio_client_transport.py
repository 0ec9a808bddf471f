"""backends/_remote_transports.StdioTransport: the client's end of a stdio exec-server,
on our non-blocking pipe ends (_fdpipe), driven against real child processes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import unified_exec as ue
from unified_exec.backends._remote_transports import StdioTransport

MiB = 1 << 20
LIMIT = 4 * MiB

# Echoes each stdin line back; "big N" answers with an N-byte line instead, "die C"
# writes to stderr and exits with code C, "sizes" reports its pipes' sizes.
ECHO = textwrap.dedent(
    """
    import fcntl, sys
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if line.startswith(b"big "):
            out.write(b"y" * int(line[4:]) + b"\\n")
        elif line.startswith(b"die "):
            sys.stderr.write("server went wrong\\n")
            sys.stderr.flush()
            sys.exit(int(line[4:]))
        elif line == b"sizes\\n":
            sizes = [fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) for fd in (0, 1)]
            out.write(b"%d %d\\n" % tuple(sizes))
        else:
            out.write(line)
        out.flush()
    """
)


@asynccontextmanager
async def transport(script: str = ECHO) -> AsyncIterator[StdioTransport]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    link = StdioTransport(proc, LIMIT)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.drain_stderr)
            yield link
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await link.shutdown()


async def test_frames_big_and_small_arrive_whole_and_in_order() -> None:
    frames = [f"frame {i}" for i in range(200)] + ["x" * (3 * MiB), "last"]
    with trio.fail_after(30):
        async with transport() as link, trio.open_nursery() as nursery:
            got: list[str | bytes | None] = []

            async def read() -> None:
                for _ in frames:
                    got.append(await link.receive())

            nursery.start_soon(read)
            for frame in frames:  # the 3 MiB one is more than both pipes hold
                await link.send(frame)
    assert [g.decode() if isinstance(g, bytes) else g for g in got] == frames


async def test_a_line_over_the_limit_is_dropped_and_the_link_goes_on() -> None:
    with trio.fail_after(30):
        async with transport() as link:
            await link.send(f"big {LIMIT + 10}")
            await link.send("after")
            assert await link.receive() == b"after"


async def test_a_send_the_pipe_takes_at_once_takes_no_scheduler_pass() -> None:
    ran = []

    async def other() -> None:
        ran.append("other task")

    with trio.fail_after(30):
        async with transport() as link:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)  # runs at the next scheduler pass
                await link.send("ping")
                assert ran == []
            assert await link.receive() == b"ping"


async def test_the_pipes_are_grown_to_one_mib() -> None:
    with open("/proc/sys/fs/pipe-max-size") as f:
        expected = MiB if int(f.read()) >= MiB else 65536
    with trio.fail_after(30):
        async with transport() as link:
            await link.send("sizes")
            assert await link.receive() == f"{expected} {expected}".encode()


async def test_eof_is_none_after_a_clean_exit_and_a_send_then_breaks() -> None:
    with trio.fail_after(30):
        async with transport() as link:
            await link.send("die 0")
            assert await link.receive() is None
            with pytest.raises(trio.BrokenResourceError):
                for _ in range(3):  # the first may still land in the pipe's buffer
                    await link.send("anyone?")


async def test_a_crash_is_a_transport_loss_naming_the_code_and_stderr() -> None:
    with trio.fail_after(30):
        async with transport() as link:
            await link.send("die 3")
            with pytest.raises(ue.TransportLostError, match="code 3: server went wrong"):
                await link.receive()


async def test_a_send_to_a_server_that_stopped_reading_can_time_out() -> None:
    with trio.fail_after(30):
        async with transport("import time; time.sleep(60)") as link:
            with trio.move_on_after(0.5) as waited:
                await link.send("x" * (4 * MiB))  # more than the 1 MiB pipe holds
            assert waited.cancelled_caught


async def test_shutdown_gives_eof_reaps_and_leaves_no_fd_behind() -> None:
    before = set(os.listdir("/proc/self/fd"))
    with trio.fail_after(30):
        async with transport() as link:
            # A later child must not inherit our pipe ends: it would keep the server's
            # stdin open and the shutdown's EOF from arriving (exit code 0 says it came).
            sleeper = await trio.lowlevel.open_process(["sleep", "30"])
            await link.send("ping")
            assert await link.receive() == b"ping"
        assert link._proc.returncode == 0
        sleeper.kill()
        await sleeper.wait()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_fdpipe_stays_nonblocking_after_trio_gives_the_fd_up() -> None:
    """trio's stream puts the pipe back to blocking on close; ours must win (a
    blocking read would stall the whole event loop)."""

    async def main() -> None:
        async with transport() as link:
            for end in (link._writer, link._reader):
                fd = end._fd
                assert fd is not None
                assert not os.get_blocking(fd)
                assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC

    trio.run(main)


def _running_with(arg: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if arg.encode() in f.read().split(b"\0"):
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


async def test_our_server_ends_its_children_when_the_client_leaves() -> None:
    """connect_stdio's exit closes the pipe (EOF): the server, with codex's
    ``--exit-on-stdin-close`` too, terminates its children and exits; none survive."""
    naptime = f"3000.{int.from_bytes(os.urandom(4), 'big')}"  # a unique argv to find
    serve = [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]
    with trio.fail_after(60):
        async with ue.RemoteExecBackend.connect_stdio([*serve, "--exit-on-stdin-close"]) as backend:
            await backend.start(ue.ExecRequest(["sleep", naptime]))
            while not _running_with(naptime):
                await trio.sleep(0.01)
        while _running_with(naptime):  # the server's terminate reaps it
            await trio.sleep(0.01)
