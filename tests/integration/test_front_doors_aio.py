"""The asyncio front door (review defect 15): no thread per call, and asyncio
cancellation reaches the trio call.

Each test drives its own ``asyncio.run`` (these are plain sync test functions),
bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio

import unified_exec as ue
from unified_exec import aio

from .helpers import alive

T = TypeVar("T")
OPTIONS: dict[str, Any] = {"deterministic_ids": True, "allow_login_shell": False}


def run(main: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())


async def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return not alive(pid)


def test_concurrent_calls_hold_no_thread_and_leave_the_default_executor_free() -> None:
    """Review r11: each call parked a default-executor thread for its whole yield
    window, so an unrelated getaddrinfo() waited behind the tool calls. (Threads the
    backend itself starts for short jobs come from trio's cache and do not count.)"""

    async def main() -> tuple[list[str], bool]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="default-exec")
        )
        async with aio.Manager(**OPTIONS) as mgr:
            calls = [
                asyncio.create_task(mgr.exec_command("sleep 3", yield_time_ms=10_000))
                for _ in range(12)
            ]
            await asyncio.sleep(0.5)
            executor_threads = [
                t.name for t in threading.enumerate() if t.name.startswith("default-exec")
            ]
            await loop.getaddrinfo("localhost", 80)
            resolved_while_all_pending = not any(call.done() for call in calls)
            outs = await asyncio.gather(*calls)
            assert all(out.exit_code == 0 for out in outs)
        return executor_threads, resolved_while_all_pending

    executor_threads, resolved_first = run(main)
    assert executor_threads == []
    assert resolved_first


def test_cancelling_exec_command_cancels_the_call_and_terminates_its_session(
    tmp_path: pathlib.Path,
) -> None:
    pidfile = tmp_path / "pid"

    async def main() -> tuple[bool, list[int]]:
        async with aio.Manager(**OPTIONS) as mgr:
            call = mgr.exec_command(f"echo $$ > {pidfile}; exec sleep 30", yield_time_ms=10_000)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, 1.0)
            ids = mgr.session_ids
            gone = await _gone(int(pidfile.read_text()))
            # the manager is unharmed
            out = await mgr.exec_command("echo after", yield_time_ms=5000)
            assert out.output == "after\n"
        return gone, ids

    gone, ids = run(main)
    assert ids == []
    assert gone


def test_cancelling_write_stdin_returns_at_once_and_keeps_the_session() -> None:
    async def main() -> None:
        async with aio.Manager(**OPTIONS) as mgr:
            cat = await mgr.exec_command("cat", tty=True, yield_time_ms=250)
            assert cat.session_id is not None
            poll = asyncio.create_task(mgr.write_stdin(cat.session_id, "", yield_time_ms=30_000))
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            poll.cancel()
            with pytest.raises(asyncio.CancelledError):
                await poll
            assert time.monotonic() - t0 < 5  # not the 30 s poll
            assert mgr.session_ids == [cat.session_id]
            echo = await mgr.write_stdin(cat.session_id, "still-here\n", yield_time_ms=1000)
            assert "still-here" in echo.output

    run(main)


def test_managers_share_one_loop_and_the_thread_is_clean_afterwards() -> None:
    async def main() -> list[str]:
        async with aio.Manager(**OPTIONS) as a, aio.Manager(**OPTIONS) as b:
            outs = await asyncio.gather(
                a.exec_command("echo from-a", yield_time_ms=5000),
                b.exec_command("echo from-b", yield_time_ms=5000),
            )
        async with aio.Manager(**OPTIONS) as c:  # a fresh guest run after the last left
            outs.append(await c.exec_command("echo from-c", yield_time_ms=5000))
        return [out.output for out in outs]

    assert run(main) == ["from-a\n", "from-b\n", "from-c\n"]
    assert run(main) == ["from-a\n", "from-b\n", "from-c\n"]  # a second asyncio.run

    async def plain_trio() -> str:
        async with ue.open_process(ue.LocalPtyBackend(), ue.ExecRequest(["true"])) as proc:
            return str((await proc.wait()).exit_code)

    assert trio.run(plain_trio) == "0"  # the guest run let go of this thread


def test_leaving_terminates_sessions_and_later_calls_are_typed_errors() -> None:
    async def main() -> int:
        mgr = aio.Manager(**OPTIONS)
        async with mgr:
            out = await mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
            pid = int(out.output.split()[0])
            with pytest.raises(ue.ProcessUnknownError):  # errors cross as themselves
                await mgr.write_stdin(4242, "x")
        assert await _gone(pid)
        with pytest.raises(ue.InvalidRequestError):
            await mgr.exec_command("true")
        await mgr.aclose()  # idempotent
        return pid

    run(main)


def test_a_factory_error_reaches_aenter() -> None:
    def broken() -> ue.LocalPtyBackend:
        raise ue.LaunchError("no backend today")

    async def main() -> None:
        with pytest.raises(ue.LaunchError, match="no backend today"):
            async with aio.Manager(broken):
                pass
        async with aio.Manager(**OPTIONS) as mgr:  # the loop's guest run is still usable
            out = await mgr.handle_tool_call("exec_command", {"cmd": "echo ok"})
            assert out.endswith("Output:\nok\n")

    run(main)


@pytest.mark.parametrize("runner", ["asyncio.run", "run_until_complete"])
def test_ctrl_c_reaches_the_host_and_the_sessions_die(runner: str, tmp_path: pathlib.Path) -> None:
    """Without asyncio.run's own SIGINT handler, trio's handler takes the Ctrl-C
    into the guest run; the run is torn down and the host must still get its
    KeyboardInterrupt (it used to see an InvalidRequestError instead)."""
    pidfile = tmp_path / "pid"
    run_main = (
        "asyncio.run(main())"
        if runner == "asyncio.run"
        else "asyncio.new_event_loop().run_until_complete(main())"
    )
    script = f"""
import asyncio, os, signal, threading
from unified_exec import aio

async def main():
    async with aio.Manager(allow_login_shell=False) as mgr:
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        await mgr.exec_command("echo $$ > {pidfile}; exec sleep 30", yield_time_ms=20_000)

try:
    {run_main}
except BaseException as exc:
    print("raised", type(exc).__name__)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert "raised KeyboardInterrupt" in done.stdout, done.stdout + done.stderr
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


def test_cancelling_the_opening_undoes_it() -> None:
    """Fault injection (a backend that never finishes connecting, on demand): a
    cancelled ``__aenter__`` leaves nothing running and the loop's guest run is
    released (a plain trio.run on this thread works afterwards)."""
    entered = []

    @contextlib.asynccontextmanager
    async def never_connects() -> AsyncIterator[ue.LocalPtyBackend]:
        entered.append(True)
        await trio.sleep_forever()
        yield ue.LocalPtyBackend()  # pragma: no cover

    async def main() -> None:
        mgr = aio.Manager(never_connects)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(mgr.__aenter__(), 0.5)
        assert entered
        with pytest.raises(ue.InvalidRequestError):
            await mgr.exec_command("true")

    run(main)

    async def plain_trio() -> None:
        await trio.sleep(0)

    trio.run(plain_trio)


def test_example_aio_tools_runs() -> None:
    root = pathlib.Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "aio_tools.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert all(f"job {i} (exit 0)" in done.stdout for i in range(5))
    assert "a call cancelled by its timeout leaves sessions: []" in done.stdout
    assert "Output:\n    from a model" in done.stdout
