"""Where the tool layer goes beyond Codex (agent-tools-codex.md §6), on the local
backend: counted and marked omissions, piped stdin, exited sessions answered once,
launch failures at once, the quiet period, teardown, argument errors as text, and
the sync / asyncio front doors and the example loop.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import trio

import unified_exec as ue
from unified_exec import aio, sync
from unified_exec.tools import UnifiedExecManager

from .helpers import alive

ROOT = pathlib.Path(__file__).parents[2]
MiB = 1024 * 1024
OPTIONS: dict[str, Any] = {
    "deterministic_ids": True,
    "allow_login_shell": False,
    "default_shell": "/bin/bash",
}


def manager(**options: Any) -> UnifiedExecManager:
    backend = options.pop("backend", None) or ue.LocalPtyBackend()
    return UnifiedExecManager(backend, **{**OPTIONS, **options})


async def _wait_gone(pids: list[int], timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while any(alive(pid) for pid in pids):
            await trio.sleep(0.02)


# -- omitted bytes between polls -----------------------------------------------------------


async def test_more_than_a_mib_between_polls_is_counted_and_marked() -> None:
    size = 2_000_000
    cmd = f"sleep 0.3; head -c {size} /dev/zero | tr '\\0' a; printf END"
    with trio.fail_after(20):
        async with manager() as mgr:
            first = await mgr.exec_command(cmd, yield_time_ms=250)
            assert first.session_id == 1000 and first.output == ""
            await trio.sleep(1.0)  # all of it is written while nobody collects
            out = await mgr.write_stdin(1000, "", yield_time_ms=5000, max_output_tokens=300_000)
    omitted = size + 3 - MiB
    assert out.exit_code == 0
    assert out.omitted_bytes == omitted > 0
    assert len(out.raw_output) == MiB
    assert out.original_token_count == MiB // 4  # what was kept, as Codex counts it
    assert out.output == (
        "a" * (MiB // 2) + f"\n... {omitted} bytes omitted ...\n" + "a" * (MiB // 2 - 3) + "END"
    )


async def test_no_marker_when_nothing_was_dropped() -> None:
    with trio.fail_after(20):
        async with manager() as mgr:
            out = await mgr.exec_command(
                "head -c 1048576 /dev/zero | tr '\\0' b",
                yield_time_ms=5000,
                max_output_tokens=300_000,
            )
    assert out.exit_code == 0
    assert out.omitted_bytes == 0
    assert out.output == "b" * MiB


# -- piped stdin (opt-in) ------------------------------------------------------------------


async def test_pipe_stdin_opt_in_lets_write_stdin_feed_a_pipe() -> None:
    with trio.fail_after(20):
        async with manager() as mgr:
            first = await mgr.exec_command(
                "read x; echo got:$x; [ -t 0 ] || echo stdin-is-a-pipe",
                pipe_stdin=True,
                yield_time_ms=250,
            )
            assert first.session_id == 1000 and first.exit_code is None
            out = await mgr.write_stdin(1000, "hello\n", yield_time_ms=5000)
    assert out.output == "got:hello\nstdin-is-a-pipe\n"
    assert out.exit_code == 0 and out.session_id is None and out.ended_by == "exit"


async def test_without_pipe_stdin_a_pipe_session_refuses_input() -> None:
    with trio.fail_after(20):
        async with manager() as mgr:
            first = await mgr.exec_command("read x; echo got:$x", yield_time_ms=250)
            # stdin is /dev/null: read fails at once and the command ends.
            assert first.exit_code == 0 and first.output == "got:\n"
            second = await mgr.exec_command("sleep 30", yield_time_ms=250)
            with pytest.raises(ue.StdinClosedError, match="rerun exec_command with tty=true"):
                await mgr.write_stdin(second.session_id or 0, "hello\n")
            assert mgr.session_ids == [1000]


# -- an exited session answers once, then is unknown ---------------------------------------


@pytest.mark.parametrize("chars", ["\u0003", ""], ids=["ctrl-c", "empty-poll"])
@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "pty"])
async def test_exited_session_reports_its_exit_once(chars: str, tty: bool) -> None:
    with trio.fail_after(20):
        async with manager() as mgr:
            first = await mgr.exec_command("sleep 0.4; exit 5", tty=tty, yield_time_ms=250)
            assert first.session_id == 1000 and first.exit_code is None
            await trio.sleep(0.6)  # it exits while nobody is looking
            args = {"session_id": 1000, "chars": chars, "yield_time_ms": 5000}
            t0 = trio.current_time()
            text = await mgr.handle_tool_call("write_stdin", args)
            assert trio.current_time() - t0 < 1.0  # no wait for a finished process
            assert "Process exited with code 5\n" in text
            assert "Process running" not in text
            assert mgr.session_ids == []
            again = await mgr.handle_tool_call("write_stdin", args)
    assert again == "write_stdin failed: Unknown process id 1000"


async def test_unknown_session_text() -> None:
    with trio.fail_after(10):
        async with manager() as mgr:
            text = await mgr.handle_tool_call("write_stdin", {"session_id": 4242, "chars": "x"})
            with pytest.raises(ue.ProcessUnknownError):
                await mgr.write_stdin(4242)
    assert text == "write_stdin failed: Unknown process id 4242"


# -- launch failures answer at once --------------------------------------------------------


async def test_launch_failures_return_at_once(tmp_path: pathlib.Path) -> None:
    missing_dir = tmp_path / "no-such-dir"
    prefix = "exec_command failed for `true`: Failed to create unified exec process: "
    with trio.fail_after(20):
        async with manager(cwd=tmp_path) as mgr:
            for args, culprit in (
                ({"cmd": "true", "workdir": str(missing_dir)}, str(missing_dir)),
                ({"cmd": "true", "workdir": "no-such-dir"}, str(missing_dir)),
                ({"cmd": "true", "shell": "/nonexistent/sh"}, "/nonexistent/sh"),
            ):
                t0 = time.monotonic()
                text = await mgr.handle_tool_call("exec_command", args)
                assert time.monotonic() - t0 < 2.0, args
                assert text.startswith(prefix), text
                assert culprit in text, text
                assert "Process running" not in text
                assert mgr.session_ids == []
            with pytest.raises(ue.LaunchError):
                await mgr.exec_command("true", shell="/nonexistent/sh")
            # The failed launches gave their ids back: the next session is 1000.
            out = await mgr.exec_command("exec sleep 30", yield_time_ms=250)
            assert out.session_id == 1000


async def test_missing_command_inside_the_shell_is_not_a_launch_failure() -> None:
    with trio.fail_after(10):
        async with manager() as mgr:
            out = await mgr.exec_command("no-such-command-uexec", yield_time_ms=5000)
            empty = await mgr.handle_tool_call("exec_command", {"cmd": "  "})
    assert out.exit_code == 127 and "not found" in out.output
    assert empty == ("exec_command failed for `  `: missing command line for unified exec request")


# -- the opt-in quiet period ---------------------------------------------------------------


async def test_quiet_period_ends_the_wait_early() -> None:
    with trio.fail_after(20):
        async with manager() as mgr:
            t0 = trio.current_time()
            out = await mgr.exec_command("echo hi; sleep 30", quiet_ms=300, yield_time_ms=10_000)
            elapsed = trio.current_time() - t0
            assert out.ended_by == "quiet"
            assert 0.3 <= elapsed < 2.0  # well before the 10 s deadline
            assert out.output == "hi\n" and out.session_id == 1000 and out.exit_code is None

            exited = await mgr.exec_command("echo bye", quiet_ms=300, yield_time_ms=10_000)
            assert exited.ended_by == "exit" and exited.exit_code == 0

            silent = await mgr.exec_command("sleep 30", quiet_ms=100, yield_time_ms=500)
            assert silent.ended_by == "deadline" and silent.output == ""
            assert silent.wall_time >= 0.5

            plain = await mgr.exec_command("echo hi; sleep 30", yield_time_ms=500)
            assert plain.ended_by == "deadline" and plain.output == "hi\n"
            assert plain.wall_time >= 0.5


async def test_quiet_period_after_a_write_counts_the_reply() -> None:
    # The reply (here the tty's echo and cat's copy) comes within the 100 ms pause
    # after the write; then output is quiet, so the call should end soon after.
    with trio.fail_after(20):
        async with manager() as mgr:
            cat = await mgr.exec_command("cat", tty=True, yield_time_ms=250)
            assert cat.session_id == 1000
            t0 = trio.current_time()
            echoed = await mgr.write_stdin(1000, "ping\n", quiet_ms=200, yield_time_ms=3_000)
            elapsed = trio.current_time() - t0
    assert "ping" in echoed.output
    assert echoed.ended_by == "quiet"
    assert elapsed < 1.5


# -- leaving the manager kills every session -----------------------------------------------


async def test_manager_exit_terminates_every_session() -> None:
    pids: list[int] = []
    backend = ue.LocalPtyBackend(kill_grace=0.3)
    with trio.fail_after(20):
        async with manager(backend=backend) as mgr:
            for cmd, tty in (
                ("echo $$; exec sleep 30", False),
                ("echo $$; exec sleep 30", True),
                ("echo $$; sleep 30 & sleep 30 & wait", False),
                ("trap '' TERM; echo $$; while :; do sleep 0.1; done", False),  # needs SIGKILL
            ):
                out = await mgr.exec_command(cmd, tty=tty, yield_time_ms=300)
                assert out.session_id is not None
                pids.append(int(out.output.split()[0]))
            assert len(mgr.session_ids) == 4
            assert all(alive(pid) for pid in pids)
        assert not any(alive(pid) for pid in pids)
        assert mgr.session_ids == []


async def test_manager_exit_on_an_exception_terminates_and_propagates() -> None:
    with trio.fail_after(20):
        with pytest.raises(RuntimeError, match="boom"):
            async with manager() as mgr:
                out = await mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=250)
                pid = int(out.output.split()[0])
                raise RuntimeError("boom")
        await _wait_gone([pid], timeout=0.5)


# -- argument errors come back as text ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("exec_command", "{not json", "failed to parse exec_command arguments: "),
        ("write_stdin", "[1, 2]", "failed to parse write_stdin arguments: expected a JSON object"),
        ("exec_command", "null", "failed to parse exec_command arguments: expected a JSON object"),
        ("exec_command", {}, "failed to parse exec_command arguments: missing field `cmd`"),
        ("exec_command", {"cmd": 5}, "failed to parse exec_command arguments: "),
        (
            "exec_command",
            {"cmd": "true", "yield_time_ms": "soon"},
            "failed to parse exec_command arguments: yield_time_ms must be a number",
        ),
        (
            "exec_command",
            {"cmd": "true", "max_output_tokens": True},
            "failed to parse exec_command arguments: max_output_tokens must be a number",
        ),
        (
            "exec_command",
            {"cmd": "true", "tty": "yes"},
            "failed to parse exec_command arguments: tty must be a boolean",
        ),
        (
            "exec_command",
            {"cmd": "true", "workdir": 3},
            "failed to parse exec_command arguments: workdir must be a string",
        ),
        ("write_stdin", {}, "failed to parse write_stdin arguments: session_id must be a number"),
        (
            "write_stdin",
            '{"session_id": "abc"}',
            "failed to parse write_stdin arguments: session_id must be a number",
        ),
        (
            "write_stdin",
            '{"session_id": NaN}',
            "failed to parse write_stdin arguments: session_id must be a number",
        ),
        (
            "write_stdin",
            {"session_id": 1000, "chars": 5},
            "failed to parse write_stdin arguments: chars must be a string",
        ),
        (
            "write_stdin",
            {"session_id": 1000, "yield_time_ms": [1]},
            "failed to parse write_stdin arguments: yield_time_ms must be a number",
        ),
        ("kill_process", {"session_id": 1000}, "unsupported call: kill_process"),
    ],
)
async def test_bad_arguments_give_the_parse_error_text(
    name: str, arguments: Any, expected: str
) -> None:
    with trio.fail_after(10):
        async with manager() as mgr:
            text = await mgr.handle_tool_call(name, arguments)
            assert mgr.session_ids == []
    assert text.startswith(expected), text


# -- the blocking front door, from several threads ------------------------------------------


def test_sync_manager_from_several_threads() -> None:
    with sync.Manager(**OPTIONS) as mgr:
        results: dict[int, Any] = {}
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                results[i] = mgr.exec_command(f"sleep 0.5; echo t{i}", yield_time_ms=5000)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        elapsed = time.monotonic() - t0
        assert not errors and not any(t.is_alive() for t in threads)
        assert elapsed < 1.5  # they ran side by side, not one after another
        for i in range(4):
            assert results[i].output == f"t{i}\n" and results[i].exit_code == 0

        cat = mgr.exec_command("cat", tty=True, yield_time_ms=250)
        assert cat.session_id is not None
        answer: list[str] = []
        writer = threading.Thread(
            target=lambda: answer.append(
                mgr.handle_tool_call(
                    "write_stdin", {"session_id": cat.session_id, "chars": "from-thread\n"}
                )
            )
        )
        writer.start()
        writer.join(timeout=20)
        assert answer and "from-thread" in answer[0]
        assert mgr.session_ids == [cat.session_id]
        pid_out = mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=250)
        pid = int(pid_out.output.split()[0])
    # close() terminated the sessions; later calls say the manager is closed.
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)
    with pytest.raises(ue.InvalidRequestError, match="closed"):
        mgr.exec_command("true")


# -- the asyncio front door ----------------------------------------------------------------


def test_aio_manager_under_asyncio_run_keeps_the_loop_running() -> None:
    async def main() -> tuple[int, Any, list[Any], str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with aio.Manager(**OPTIONS) as mgr:
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            out = await mgr.exec_command("sleep 0.5; echo done", yield_time_ms=5000)
            ticks_during_call = ticks
            t0 = time.monotonic()
            both = await asyncio.gather(
                mgr.exec_command("sleep 0.5; echo a", yield_time_ms=5000),
                mgr.exec_command("sleep 0.5; echo b", yield_time_ms=5000),
            )
            assert time.monotonic() - t0 < 1.2  # side by side
            text = await mgr.handle_tool_call("exec_command", {"cmd": "echo via-tool"})
            task.cancel()
        return ticks_during_call, out, both, text

    ticks, out, both, text = asyncio.run(asyncio.wait_for(main(), 30))
    assert ticks >= 20  # ~50 ticks of 10 ms fit in the 0.5 s call
    assert out.output == "done\n" and out.exit_code == 0
    assert sorted(o.output for o in both) == ["a\n", "b\n"]
    assert "Process exited with code 0\n" in text and text.endswith("Output:\nvia-tool\n")


# -- the example ----------------------------------------------------------------------------


def test_example_tool_loop_runs() -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tool_loop.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "the REPL said 42" in done.stdout
    # ... and it did: the REPL's own answer and the last exit code are in the tool text.
    assert "\n    42\n" in done.stdout
    assert "Process exited with code 3" in done.stdout
