"""The §4 acceptance scenarios of agent-tools-codex.md, through UnifiedExecManager,
on three backends: local, our exec-server over stdio, and the real codex 0.169.0
exec-server over stdio. Every manager uses ``deterministic_ids=True`` (the first
session is 1000), ``allow_login_shell=False`` and ``default_shell="/bin/bash"``
(``bash -lc`` would run the machine's pyenv profile: slow, and it can hang).

Covered on all three backends: 2, 3, 4, 5, 6, 7, 8, 9, 10, 12 (end to end: the
forced env), 13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 25, 44, 45, 60, 64, 65.
44 and 45 run at the real cap (64) and warning level (60) on every backend.
Local only: 18 (slow: about 5.5 s) and a second prune case (nothing exited: the
least recently used live session is pruned and its process dies).

Adaptations to our API (same assertions, other spelling):
- The model-visible text is ``handle_tool_call()``'s, parsed with the §1.3 regex;
  other checks read the ``ExecCommandOutput`` fields. There are no begin/end
  events, so "begin cwd" (2) is shown by the command's own output.
- 4-6 are compared byte for byte with the full expected text (not just the
  regex); in 5 the output is compared after replacing ``\\r\\n`` with ``\\n``
  (``Original token count: 9492`` counts the raw CRLF bytes).
- ``bash -i`` runs as ``bash --norc -i``: this machine's ~/.bashrc runs pyenv init
  (slow, may hang), and these scenarios are about session state, not rc files.
  Its exec yield is 500 ms instead of 2500 ms (the shell is up well before).
- ``python3`` is this test's own interpreter, for the same pyenv reason.
- 18 runs ``sleep 3`` (not 5) and polls at once instead of waiting 7 s first:
  the empty poll's 5 s floor (asserted) is the wait, and the value arrives in it.
- 16-18 end with ``exit`` typed into the shell (an interactive bash ignores
  SIGTERM, so leaving it to the manager costs the local 1 s kill grace).
- 44/45 start the 63 fillers concurrently (each exec_command holds the 250 ms
  minimum yield; one after another that is 16 s per backend).
- 60 runs its four parts in separate managers (see the bug note below); "output
  produced before reading" is output a command printed and exited on while no
  call was collecting.
- 64: the manager has no terminate tool, so "no output after terminate" is
  checked as: after ``terminate_all()`` the session is unknown, and the
  ``setsid`` grandchild that printed the ticks is gone.

Documented backend differences (asserted as they are, not skipped):
- 23 (tty variant): Ctrl-C to a tty ``sleep`` reports exit 130 (128+SIGINT) on
  local and our server; codex 0.169.0 reports 1 (portable-pty's signal exit).
- 64: local and our server kill the ``setsid`` grandchild before
  ``terminate_all()`` returns (they kill the whole session); codex 0.169.0 only
  stops reading and the grandchild dies on its own (SIGPIPE at its next tick,
  typically still alive when terminate returns): asserted gone within 1 s.
- 12 end to end: local children inherit this process's environment under the
  forced pairs; remote children get ``REMOTE_DEFAULT_ENV`` (+ HOME) under them.

Known bug (strict test ``test_released_id_is_reused_by_the_next_command``, fails
on ``ours`` and ``codex``): a finished session's id is released and handed out
again, but an exec-server keeps a closed process id for 30 s and refuses the
start ("process 1000 already exists"). So a second command after one that exited
fails on remote backends with deterministic ids; the scenarios below use one
manager per exited command to stay clear of it.

Known bug (strict tests 4, 22, 65's sibling
``test_no_output_lost_when_the_process_exits``; flaky, mostly on codex and
ours): output that arrives together with the exit can be missing from the
result. The manager returns as soon as the process's event log is closed, before
its feeder task has moved the last events into the session buffer.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio

import unified_exec as ue
from unified_exec.tools import UNIFIED_EXEC_ENV, ExecCommandOutput, UnifiedExecManager

from ..integration.helpers import alive

PY = shlex.quote(sys.executable)
BASH_I = "bash --norc -i"
STDIN_CLOSED = (
    "stdin is closed for this session; rerun exec_command with tty=true to keep stdin open"
)
WARNING = (
    "The maximum number of unified exec processes you can keep open is 60 and you "
    "currently have {n} processes open. Reuse older processes or close them to prevent "
    "automatic pruning of old processes"
)
RESPONSE_RE = re.compile(
    r"^(?:Chunk ID: (?P<chunk>[0-9a-f]{6})\n)?"
    r"Wall time: (?P<wall>\d+\.\d{4}) seconds\n"
    r"(?:Process exited with code (?P<exit>-?\d+)\n)?"
    r"(?:Process running with session ID (?P<sid>\d+)\n)?"
    r"Original token count: (?P<tokens>\d+)\n"
    r"Output:\n(?P<output>.*)\Z",
    re.DOTALL,
)

ManagerFactory = Callable[..., AbstractAsyncContextManager[UnifiedExecManager]]


def parse(text: str) -> dict[str, Any]:
    m = RESPONSE_RE.match(text)
    assert m, f"not a §1.3 response: {text!r}"
    return {
        "chunk": m["chunk"],
        "wall": float(m["wall"]),
        "exit": None if m["exit"] is None else int(m["exit"]),
        "sid": None if m["sid"] is None else int(m["sid"]),
        "tokens": int(m["tokens"]),
        "output": m["output"],
    }


def local_manager(**options: Any) -> UnifiedExecManager:
    return UnifiedExecManager(
        ue.LocalPtyBackend(),
        deterministic_ids=True,
        allow_login_shell=False,
        default_shell="/bin/bash",
        **options,
    )


@pytest.fixture(params=["local", "ours", "codex"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_manager(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> ManagerFactory:
    """A factory: ``async with open_manager(**options) as mgr`` on a fresh backend."""

    def connect() -> AbstractAsyncContextManager[Any]:
        if backend_name == "ours":
            return ue.RemoteExecBackend.connect_stdio(
                [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]
            )
        codex_bin = request.getfixturevalue("codex_bin")
        home = tmp_path / f"codex-home-{time.monotonic_ns()}"
        home.mkdir()
        return ue.RemoteExecBackend.connect_stdio(
            [codex_bin, "exec-server", "--listen", "stdio"],
            env={**os.environ, "CODEX_HOME": str(home)},
        )

    @asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[UnifiedExecManager]:
        options = {
            "deterministic_ids": True,
            "allow_login_shell": False,
            "default_shell": "/bin/bash",
            **options,
        }
        if backend_name == "local":
            async with UnifiedExecManager(ue.LocalPtyBackend(), **options) as mgr:
                yield mgr
            return
        async with connect() as backend, UnifiedExecManager(backend, **options) as mgr:
            yield mgr

    return factory


# -- A. tool surface and formatting ------------------------------------------------------


async def test_s02_relative_workdir(open_manager: ManagerFactory, tmp_path: pathlib.Path) -> None:
    workdir = tmp_path / "uexec_relative_workdir"
    workdir.mkdir()
    (workdir / "cwd-marker.txt").write_text("resolved-relative-workdir")
    with trio.fail_after(20):
        async with open_manager(cwd=tmp_path) as mgr:
            text = await mgr.handle_tool_call(
                "exec_command",
                {
                    "cmd": "cat cwd-marker.txt",
                    "workdir": "uexec_relative_workdir",
                    "yield_time_ms": 250,
                },
            )
    r = parse(text)
    assert r["exit"] == 0 and r["sid"] is None
    assert r["output"] == "resolved-relative-workdir"


async def test_s03_chunk_and_exit_metadata(open_manager: ManagerFactory) -> None:
    cmd = "printf 'token one token two token three token four token five token six token seven'"
    with trio.fail_after(20):
        async with open_manager() as mgr:
            text = await mgr.handle_tool_call(
                "exec_command", {"cmd": cmd, "yield_time_ms": 500, "max_output_tokens": 6}
            )
    r = parse(text)
    assert re.fullmatch(r"[0-9a-f]{6}", r["chunk"])
    assert r["wall"] >= 0
    assert r["sid"] is None and "Process running" not in text
    assert r["exit"] == 0
    assert "tokens truncated" in r["output"]
    assert r["tokens"] > 6


async def test_s04_exact_truncation_exec(open_manager: ManagerFactory) -> None:
    cmd = "for i in $(seq 1 999); do printf 'EXEC-LINE-%04d %s\\n' $i " + "x" * 20 + "; done"
    with trio.fail_after(20):
        async with open_manager(output_token_limit=50) as mgr:
            text = await mgr.handle_tool_call(
                "exec_command", {"cmd": cmd, "max_output_tokens": 70000, "yield_time_ms": 3000}
            )
    r = parse(text)
    assert r["exit"] == 0 and r["sid"] is None
    assert r["tokens"] == 8991
    x20 = "x" * 20
    expected = (
        "Total output lines: 999\n\n"
        f"EXEC-LINE-0001 {x20}\nEXEC-LINE-0002 {x20}\nEXEC-LINE-0003 {'x' * 13}"
        "\u20268941 tokens truncated\u2026"
        f"E-0997 {x20}\nEXEC-LINE-0998 {x20}\nEXEC-LINE-0999 {x20}\n"
    )
    assert r["output"] == expected
    assert re.fullmatch(
        r"Total output lines: 999\n\nEXEC-LINE-0001 x{20}\nEXEC-LINE-0002 x{20}\n"
        r"EXEC-LINE-0003 x{13}…8941 tokens truncated…E-0997 x{20}\nEXEC-LINE-0998 x{20}\n"
        r"EXEC-LINE-0999 x{20}\n",
        r["output"],
    )


async def test_s05_exact_truncation_write_stdin(open_manager: ManagerFactory) -> None:
    cmd = (
        "printf 'READY\\n'; read trigger; for i in $(seq 1 999); do "
        "printf 'STDIN-LINE-%04d %s\\n' $i " + "y" * 20 + "; done"
    )
    with trio.fail_after(20):
        async with open_manager(output_token_limit=50) as mgr:
            first = await mgr.exec_command(cmd, tty=True, yield_time_ms=1000)
            assert first.session_id == 1000
            assert "READY" in first.output
            text = await mgr.handle_tool_call(
                "write_stdin",
                {
                    "session_id": 1000,
                    "chars": "go\n",
                    "yield_time_ms": 3000,
                    "max_output_tokens": 70000,
                },
            )
    r = parse(text)
    assert r["exit"] == 0 and r["sid"] is None
    assert r["tokens"] == 9492
    y20 = "y" * 20
    expected = (
        "Total output lines: 1000\n\ngo\n"
        f"STDIN-LINE-0001 {y20}\nSTDIN-LINE-0002 {y20}\nSTDIN-LINE-0003 yyyy"
        "\u20269442 tokens truncated\u2026"
        f"7 {y20}\nSTDIN-LINE-0998 {y20}\nSTDIN-LINE-0999 {y20}\n"
    )
    assert r["output"].replace("\r\n", "\n") == expected


async def test_s06_large_output_summary(open_manager: ManagerFactory) -> None:
    cmd = f"{PY} -c \"import sys; sys.stdout.write('token token \\n' * 5000)\""
    with trio.fail_after(20):
        async with open_manager() as mgr:
            text = await mgr.handle_tool_call(
                "exec_command", {"cmd": cmd, "max_output_tokens": 100, "yield_time_ms": 500}
            )
    r = parse(text)
    assert r["exit"] == 0
    assert r["tokens"] == 16250  # 65 000 bytes
    unit = "token token \n"
    expected = (
        "Total output lines: 5000\n\n"
        + unit * 15
        + "token"
        + "\u202616150 tokens truncated\u2026"
        + "ken \n"
        + unit * 15
    )
    assert r["output"] == expected
    assert re.fullmatch(
        r"(?s)^Total output lines: \d+\n\n(token token \n){5,}.*…\d+ tokens truncated…"
        r".*(token token \n){5,}$",
        r["output"],
    )


async def test_s07_default_is_pipe(open_manager: ManagerFactory) -> None:
    cmd = f'{PY} -c "import sys; print(sys.stdin.isatty())"'
    with trio.fail_after(20):
        async with open_manager() as mgr:
            out = await mgr.exec_command(cmd, yield_time_ms=1500)
    assert "False" in out.output
    assert out.exit_code == 0


async def test_s08_tty_true(open_manager: ManagerFactory) -> None:
    cmd = f'{PY} -c "import sys; print(sys.stdin.isatty())"'
    with trio.fail_after(20):
        async with open_manager() as mgr:
            out = await mgr.exec_command(cmd, tty=True, yield_time_ms=1500)
    assert "True" in out.output
    assert out.exit_code == 0
    assert out.session_id is None


async def test_s09_early_exit_returns_fast(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            t0 = trio.current_time()
            text = await mgr.handle_tool_call(
                "exec_command", {"cmd": "sleep 0.05", "yield_time_ms": 31415}
            )
            elapsed = trio.current_time() - t0
    r = parse(text)
    assert r["sid"] is None and r["exit"] == 0
    assert r["wall"] < 0.75 and elapsed < 0.75
    assert r["output"] == ""


async def test_s10_runs_with_default_args(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            text = await mgr.handle_tool_call("exec_command", {"cmd": "echo 'hello crossplat'"})
    r = parse(text)
    assert "hello crossplat" in r["output"]
    assert r["exit"] == 0


async def test_s12_forced_env_end_to_end(open_manager: ManagerFactory, backend_name: str) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            out = await mgr.exec_command("env", yield_time_ms=3000)
    assert out.exit_code == 0
    env = dict(line.split("=", 1) for line in out.output.splitlines() if "=" in line)
    for key, value in UNIFIED_EXEC_ENV.items():
        assert env.get(key) == value, key
    if backend_name == "local":
        # This process's environment, under the forced pairs.
        assert env["PATH"] == os.environ["PATH"]
    else:
        # Documented difference: a remote child gets REMOTE_DEFAULT_ENV (+ HOME).
        assert env["PATH"] == ue.REMOTE_DEFAULT_ENV["PATH"]
        assert env["HOME"] == os.path.expanduser("~")


# -- B. sessions, stdin, polling -----------------------------------------------------


async def test_s13_timeout_then_poll(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command("sleep 0.5; echo ready", yield_time_ms=10)
            assert first.session_id == 1000
            assert first.output == "" and first.exit_code is None
            polled = await mgr.write_stdin(1000, "", yield_time_ms=800)
    assert "ready" in polled.output
    assert polled.exit_code == 0


async def test_s14_s15_reuse_via_stdin_then_eof(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            r = parse(
                await mgr.handle_tool_call(
                    "exec_command", {"cmd": "/bin/cat", "tty": True, "yield_time_ms": 200}
                )
            )
            assert r["sid"] == 1000 and r["exit"] is None
            assert r["output"] == ""
            r = parse(
                await mgr.handle_tool_call(
                    "write_stdin",
                    {"session_id": 1000, "chars": "hello unified exec\n", "yield_time_ms": 500},
                )
            )
            # 14: same session, the text comes back; 15: >= 4 digits, no exit code yet.
            assert r["sid"] == 1000 and len(str(r["sid"])) >= 4
            assert r["exit"] is None
            assert "hello unified exec" in r["output"]
            r = parse(
                await mgr.handle_tool_call(
                    "write_stdin", {"session_id": 1000, "chars": "\u0004", "yield_time_ms": 500}
                )
            )
            assert r["sid"] is None
            assert r["exit"] == 0
            assert re.fullmatch(r"[0-9a-f]{6}", r["chunk"])
            assert mgr.session_ids == []


async def _start_shell_with_var(mgr: UnifiedExecManager) -> int:
    first = await mgr.exec_command(BASH_I, tty=True, yield_time_ms=500)
    assert first.session_id is not None and first.exit_code is None
    await mgr.write_stdin(first.session_id, "export CODEX_INTERACTIVE_SHELL_VAR=codex\n")
    return first.session_id


async def _exit_shell(mgr: UnifiedExecManager, sid: int) -> None:
    # An interactive bash ignores SIGTERM: leaving it to the manager's exit would
    # cost the local backend's 1 s kill grace.
    out = await mgr.write_stdin(sid, "exit\n", yield_time_ms=2000)
    assert out.exit_code == 0 and out.session_id is None


async def test_s16_persist_shell_state(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            sid = await _start_shell_with_var(mgr)
            out = await mgr.write_stdin(sid, "echo $CODEX_INTERACTIVE_SHELL_VAR\n")
            await _exit_shell(mgr, sid)
    assert out.session_id == sid
    # The line that echo printed (the tty also echoes the command line itself).
    assert "codex" in out.output.replace("$CODEX_INTERACTIVE_SHELL_VAR", "")


async def test_s17_sessions_isolated(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            sid = await _start_shell_with_var(mgr)
            other = await mgr.exec_command("echo $CODEX_INTERACTIVE_SHELL_VAR", yield_time_ms=1000)
            assert other.session_id is None and other.exit_code == 0
            assert "codex" not in other.output
            again = await mgr.write_stdin(sid, "echo $CODEX_INTERACTIVE_SHELL_VAR\n")
            await _exit_shell(mgr, sid)
    assert "codex" in again.output.replace("$CODEX_INTERACTIVE_SHELL_VAR", "")


async def test_s18_short_yield_incomplete_then_poll_local_only() -> None:
    with trio.fail_after(30):
        async with local_manager() as mgr:
            sid = await _start_shell_with_var(mgr)
            out = await mgr.write_stdin(
                sid, "sleep 3 && echo $CODEX_INTERACTIVE_SHELL_VAR\n", yield_time_ms=10
            )
            assert "codex" not in out.output.replace("$CODEX_INTERACTIVE_SHELL_VAR", "")
            t0 = trio.current_time()
            out = await mgr.write_stdin(sid, "", yield_time_ms=100)
            assert trio.current_time() - t0 >= 5.0  # the empty-poll floor
            assert "codex" in out.output
            assert out.session_id == sid
            await _exit_shell(mgr, sid)


async def test_s19_reuse_after_exit_unknown(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command(BASH_I, tty=True, yield_time_ms=500)
            sid = first.session_id
            assert sid == 1000
            r = parse(
                await mgr.handle_tool_call(
                    "write_stdin", {"session_id": sid, "chars": "exit\n", "yield_time_ms": 2500}
                )
            )
            assert r["exit"] == 0 and r["sid"] is None
            await trio.sleep(0.2)
            text = await mgr.handle_tool_call(
                "write_stdin", {"session_id": sid, "chars": "", "yield_time_ms": 100}
            )
            assert text == f"write_stdin failed: Unknown process id {sid}"
            assert mgr.session_ids == []


async def test_s20_pipe_exit_code_preserved(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            out = await mgr.exec_command("exit 17", yield_time_ms=1000)
    assert out.exit_code == 17 and out.session_id is None and out.ended_by == "exit"


async def test_s21_non_tty_write_rejected(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command("sleep 30", yield_time_ms=250)
            assert first.session_id == 1000
            text = await mgr.handle_tool_call("write_stdin", {"session_id": 1000, "chars": "hi"})
            assert text == f"write_stdin failed: {STDIN_CLOSED}"
            assert mgr.session_ids == [1000]  # still running


async def test_s22_ctrl_c_trap_non_tty(open_manager: ManagerFactory) -> None:
    cmd = "trap 'echo INT-TRAP; exit 42' INT; echo READY; while true; do sleep 30; done"
    with trio.fail_after(20):
        async with open_manager() as mgr:
            r = parse(
                await mgr.handle_tool_call(
                    "exec_command", {"cmd": cmd, "yield_time_ms": 250, "tty": False}
                )
            )
            assert r["sid"] == 1000 and r["exit"] is None
            assert "READY" in r["output"]
            r = parse(
                await mgr.handle_tool_call(
                    "write_stdin", {"session_id": 1000, "chars": "\u0003", "yield_time_ms": 1000}
                )
            )
    assert r["sid"] is None
    assert r["exit"] == 42
    assert "INT-TRAP" in r["output"]


async def test_s23_ctrl_c_default_130(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command("echo READY; exec sleep 30", yield_time_ms=250)
            assert first.session_id == 1000 and "READY" in first.output
            out = await mgr.write_stdin(1000, "\u0003", yield_time_ms=1000)
    assert out.exit_code == 130 and out.session_id is None


async def test_s23_tty_variant_ctrl_c(open_manager: ManagerFactory, backend_name: str) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command("exec sleep 30", tty=True, yield_time_ms=250)
            assert first.session_id == 1000
            out = await mgr.write_stdin(1000, "\u0003", yield_time_ms=1000)
    assert out.session_id is None
    # Documented difference: codex's portable-pty reports a signal death as 1.
    assert out.exit_code == (1 if backend_name == "codex" else 130)


async def test_s25_lagged_output_tail(open_manager: ManagerFactory) -> None:
    script = (
        "import sys, time; time.sleep(0.5); "
        "[sys.stdout.write('x' * 39000) or sys.stdout.flush() for _ in range(4)]; "
        "[print('TAIL-MARKER', flush=True) or time.sleep(0.05) for _ in range(5)]"
    )
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command(f'{PY} -c "{script}"', tty=True, yield_time_ms=25)
            assert first.session_id == 1000
            out = await mgr.write_stdin(1000, "", yield_time_ms=2000)
    assert "TAIL-MARKER" in out.output
    assert out.exit_code == 0


# -- D. store / pruning ------------------------------------------------------------------


async def _fillers(mgr: UnifiedExecManager, n: int) -> list[ExecCommandOutput]:
    results: list[ExecCommandOutput] = []

    async def one() -> None:
        results.append(await mgr.exec_command("exec sleep 60", yield_time_ms=250))

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    assert all(r.session_id is not None for r in results)
    return results


async def test_s44_prune_end_to_end(open_manager: ManagerFactory) -> None:
    with trio.fail_after(60):
        async with open_manager() as mgr:
            cat = await mgr.exec_command("/bin/cat", tty=True, yield_time_ms=250)
            assert cat.session_id == 1000
            short = await mgr.exec_command("sleep 0.3", yield_time_ms=250)
            assert short.session_id == 1001
            await _fillers(mgr, 62)
            await trio.sleep(0.3)  # 1001 has exited (unobserved: still stored)
            assert len(mgr.session_ids) == 64
            last = await mgr.exec_command("exec sleep 60", yield_time_ms=250)
            assert last.session_id == 1064
            # The exited 1001, outside the 8 most recent, was pruned, not the LRU 1000.
            assert len(mgr.session_ids) == 64
            assert 1001 not in mgr.session_ids and 1000 in mgr.session_ids
            echo = await mgr.write_stdin(1000, "still here\n", yield_time_ms=500)
            assert "still here" in echo.output and echo.session_id == 1000
            text = await mgr.handle_tool_call("write_stdin", {"session_id": 1001})
            assert text == "write_stdin failed: Unknown process id 1001"


async def test_s44_prune_kills_lru_live_session_local_only() -> None:
    """With nothing exited, the least recently used live session is killed."""
    with trio.fail_after(60):
        async with local_manager() as mgr:
            first = await mgr.exec_command("echo $$; exec sleep 60", yield_time_ms=250)
            pid = int(first.output.split()[0])
            await _fillers(mgr, 63)
            assert len(mgr.session_ids) == 64 and alive(pid)
            await mgr.exec_command("exec sleep 60", yield_time_ms=250)
            assert len(mgr.session_ids) == 64 and 1000 not in mgr.session_ids
            with trio.fail_after(5):
                while alive(pid):
                    await trio.sleep(0.02)


async def test_s45_warning_at_60(open_manager: ManagerFactory) -> None:
    with trio.fail_after(60):
        async with open_manager() as mgr:
            filled = await _fillers(mgr, 58)
            assert all(r.warnings == () for r in filled)
            text59 = await mgr.handle_tool_call(
                "exec_command", {"cmd": "exec sleep 60", "yield_time_ms": 250}
            )
            assert "Warning" not in text59
            text60 = await mgr.handle_tool_call(
                "exec_command", {"cmd": "exec sleep 60", "yield_time_ms": 250}
            )
            body, warning = text60.split("\n\nWarning: ")
            assert parse(body)["sid"] == 1059
            assert warning == WARNING.format(n=60)
            out61 = await mgr.exec_command("exec sleep 60", yield_time_ms=250)
            assert out61.warnings == (WARNING.format(n=61),)


# -- F. exec-server basics, kill, stderr --------------------------------------------------


async def test_s60_true_exits_zero_and_closes(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            out = await mgr.exec_command("true", yield_time_ms=5000)
    assert out.exit_code == 0 and out.ended_by == "exit" and out.output == ""


async def test_s60_session_output_exact(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            out = await mgr.exec_command(
                "sh -c \"sleep 0.05; printf 'session output\\n'\"", yield_time_ms=5000
            )
    assert out.output == "session output\n" and out.exit_code == 0


async def test_s60_tty_readline(open_manager: ManagerFactory) -> None:
    script = "import sys; line = sys.stdin.readline(); print('from-stdin:' + line.strip())"
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command(f'{PY} -c "{script}"', tty=True, yield_time_ms=500)
            assert first.session_id == 1000
            out = await mgr.write_stdin(1000, "hello\n", yield_time_ms=5000)
    assert "from-stdin:hello" in out.output
    assert out.exit_code == 0


async def test_s60_output_before_reading_is_kept(open_manager: ManagerFactory) -> None:
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command(
                "sleep 0.4; printf 'queued output\\n'", yield_time_ms=250
            )
            assert first.session_id == 1000 and first.output == ""
            await trio.sleep(0.6)  # it prints and exits while nobody collects
            out = await mgr.write_stdin(1000, "", yield_time_ms=5000)
    assert out.output == "queued output\n" and out.exit_code == 0
    assert out.wall_time < 1.0


async def test_s64_terminate_kills_detached_readers(
    open_manager: ManagerFactory, backend_name: str
) -> None:
    cmd = "setsid sh -c 'echo gc:$$; while :; do echo tick; sleep 0.05; done' & wait"
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = await mgr.exec_command(cmd, yield_time_ms=500)
            assert first.session_id == 1000 and "tick" in first.output
            grandchild = int(first.output.split("gc:")[1].split()[0])
            await mgr.terminate_all()
            gone_at_once = not alive(grandchild)
            text = await mgr.handle_tool_call("write_stdin", {"session_id": 1000})
            assert text == "write_stdin failed: Unknown process id 1000"
            with trio.fail_after(1):
                while alive(grandchild):
                    await trio.sleep(0.01)
    if backend_name != "codex":
        assert gone_at_once  # killed with the session, before terminate_all() returned
    # Documented difference: codex only stops reading; the grandchild dies on its own
    # (SIGPIPE at its next tick), within the 1 s waited for above.


async def test_s65_pipe_drains_stderr(open_manager: ManagerFactory) -> None:
    cmd = "head -c 4194304 /dev/zero | tr '\\0' e >&2"
    with trio.fail_after(30):
        async with open_manager() as mgr:
            out = await mgr.exec_command(cmd, yield_time_ms=10000)
    assert out.exit_code == 0 and out.ended_by == "exit"
    assert out.output and "eeee" in out.output
    assert 0 < len(out.raw_output) <= 1024 * 1024 and out.omitted_bytes > 0


async def test_no_output_lost_when_the_process_exits(open_manager: ManagerFactory) -> None:
    """Every byte a finished command wrote is in its result (kept or counted omitted)."""
    cases = [
        (
            "for i in $(seq 1 999); do printf 'EXEC-LINE-%04d %s\\n' $i xxxxxxxxxxxxxxxxxxxx; done",
            35964,
        ),
        ("head -c 4194304 /dev/zero | tr '\\0' e >&2", 4194304),
    ]
    seen = []
    with trio.fail_after(60):
        for cmd, size in cases * 2:
            async with open_manager() as mgr:
                out = await mgr.exec_command(cmd, yield_time_ms=10000, max_output_tokens=0)
            assert out.exit_code == 0
            seen.append((size, len(out.raw_output) + out.omitted_bytes))
    assert all(size == got for size, got in seen), seen


# -- bug probe ---------------------------------------------------------------------------


async def test_released_id_is_reused_by_the_next_command(open_manager: ManagerFactory) -> None:
    """Two commands in a row, the first finished: both must run (ids 1000, 1000)."""
    with trio.fail_after(20):
        async with open_manager() as mgr:
            first = parse(await mgr.handle_tool_call("exec_command", {"cmd": "echo one"}))
            assert first["exit"] == 0 and first["output"] == "one\n"
            text = await mgr.handle_tool_call("exec_command", {"cmd": "echo two"})
    second = parse(text)
    assert second["exit"] == 0 and second["output"] == "two\n"
