"""UnifiedExecManager's lifetime and limits (review defects 4, 13, 21, 27).

Leaving the manager always closes its nursery, whatever a backend's terminate()
does; the block's own exception comes out as itself; ``max_sessions`` holds for
every value; nothing is spawned by a manager that is not open; a cancelled
exec_command does not leave an orphan session; bad text and bad durations are
refused with typed errors.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import unified_exec as ue
from unified_exec.tools import UNIFIED_EXEC_ENV, UnifiedExecManager, open_manager

from .helpers import alive

OPTIONS: dict[str, Any] = {
    "deterministic_ids": True,
    "allow_login_shell": False,
    "default_shell": "/bin/sh",
}


async def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while any(alive(pid) for pid in pids):
            await trio.sleep(0.02)


def _pid_of(out: ue.tools.ExecCommandOutput) -> int:
    return int(out.output.split()[0])


# -- defect 4: a terminate that fails during teardown -----------------------------------


async def test_leaving_the_manager_while_the_server_stalls_keeps_the_run_sane(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review n04: the exec-server is SIGSTOPped as the block ends, so the remote
    process/terminate times out (request_timeout=1). The block must end cleanly (the
    failure is logged, not raised) and the trio run must stay usable; before the fix
    __aexit__ raised out of a nursery it never closed and trio aborted the run."""
    caplog.set_level(logging.WARNING, logger="unified_exec")
    pidfile = tmp_path / "server.pid"
    argv = [
        "sh",
        "-c",
        f'echo $$ > {pidfile}; exec "$0" -m unified_exec serve --listen stdio',
        sys.executable,
    ]
    with trio.fail_after(90):
        async with ue.RemoteExecBackend.connect_stdio(argv, request_timeout=1.0) as backend:
            server_pid = int(pidfile.read_text())
            try:
                async with UnifiedExecManager(backend, **OPTIONS) as mgr:
                    out = await mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=500)
                    assert out.session_id is not None
                    child = _pid_of(out)
                    os.kill(server_pid, signal.SIGSTOP)
            finally:
                os.kill(server_pid, signal.SIGCONT)
            assert mgr.session_ids == []
            await trio.sleep(0.05)  # still a sane run: this checkpoint would not return
            async with open_manager(backend, **OPTIONS) as again:  # and the link works
                done = await again.exec_command("echo still-ok", yield_time_ms=5000)
                assert done.output == "still-ok\n" and done.exit_code == 0
        await _wait_gone([child])
    assert f"session {out.session_id} did not end cleanly" in caplog.text


class _TerminateRaises:
    """Fault injection (a real backend cannot be made to do this on demand): a
    third-party backend whose handle terminates the process for real and then raises
    a foreign exception."""

    def __init__(self, inner: ue.LocalPtyBackend) -> None:
        self.inner = inner

    async def start(self, request: ue.ExecRequest) -> ue.ProcessHandle:
        handle = await self.inner.start(request)
        return _RaisingHandle(handle)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _RaisingHandle:
    def __init__(self, handle: ue.ProcessHandle) -> None:
        self._handle = handle

    @property
    def process_id(self) -> str:
        return self._handle.process_id

    def events(self) -> AsyncIterator[ue.ProcessEvent]:
        return self._handle.events()

    async def write(self, data: bytes) -> ue.WriteStatus:
        return await self._handle.write(data)

    async def terminate(self) -> None:
        await self._handle.terminate()
        raise RuntimeError("terminate blew up")

    async def interrupt(self) -> None:
        await self._handle.interrupt()

    async def resize(self, rows: int, cols: int) -> None:
        await self._handle.resize(rows, cols)


@pytest.mark.parametrize("opener", ["async-with", "open_manager"])
async def test_a_terminate_that_raises_never_escapes_teardown(
    opener: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = _TerminateRaises(ue.LocalPtyBackend(kill_grace=0.3))
    caplog.set_level(logging.WARNING, logger="unified_exec")
    with trio.fail_after(30):
        cm = UnifiedExecManager(backend, **OPTIONS) if opener == "async-with" else None
        async with cm if cm is not None else open_manager(backend, **OPTIONS) as mgr:
            pids = []
            for _ in range(3):
                out = await mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
                pids.append(_pid_of(out))
        assert mgr.session_ids == []
        await _wait_gone(pids)
        await backend.aclose()
    assert "terminate blew up" in caplog.text


async def test_the_body_exception_comes_out_as_itself_even_if_teardown_fails() -> None:
    backend = _TerminateRaises(ue.LocalPtyBackend(kill_grace=0.3))
    with trio.fail_after(30):
        with pytest.raises(KeyError, match="from the body") as info:
            async with open_manager(backend, **OPTIONS) as mgr:
                out = await mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
                raise KeyError("from the body")
        assert type(info.value) is KeyError  # not an ExceptionGroup
        await _wait_gone([_pid_of(out)])
        await backend.aclose()


async def test_an_outer_cancel_ends_the_block_cleanly_and_terminates_sessions() -> None:
    """The Cancelled a body receives leaves the manager as itself, so the scope that
    cancelled catches it (an ExceptionGroup would escape it)."""
    with trio.fail_after(30):
        with trio.move_on_after(1.0) as scope:
            async with open_manager(ue.LocalPtyBackend(), **OPTIONS) as mgr:
                out = await mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert mgr.session_ids == []
        await _wait_gone([_pid_of(out)])


async def test_terminate_all_reports_each_session_state() -> None:
    with trio.fail_after(30):
        async with open_manager(ue.LocalPtyBackend(), **OPTIONS) as mgr:
            a = await mgr.exec_command("exec sleep 30", yield_time_ms=250)
            b = await mgr.exec_command("trap 'exit 7' TERM; sleep 30 & wait", yield_time_ms=250)
            outcome = await mgr.terminate_all()
            assert mgr.session_ids == []
    assert set(outcome) == {a.session_id, b.session_id}
    assert all(state.has_exited for state in outcome.values())
    assert outcome[b.session_id].exit_code == 7


async def test_a_manager_cannot_be_entered_twice_at_once() -> None:
    with trio.fail_after(10):
        mgr = UnifiedExecManager(ue.LocalPtyBackend(), **OPTIONS)
        async with mgr:
            with pytest.raises(ue.InvalidRequestError, match="already open"):
                async with mgr:
                    pass
        async with mgr:  # once closed it may be opened again
            out = await mgr.exec_command("echo again", yield_time_ms=5000)
            assert out.output == "again\n"


# -- defect 21: max_sessions, and nothing spawned by a manager that is not open ----------


@pytest.mark.parametrize("max_sessions", [1, 2, 5])
async def test_max_sessions_below_nine_is_enforced(max_sessions: int) -> None:
    pids: list[int] = []
    with trio.fail_after(60):
        async with open_manager(ue.LocalPtyBackend(), max_sessions=max_sessions, **OPTIONS) as mgr:
            for _ in range(max_sessions + 3):
                out = await mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=250)
                pids.append(_pid_of(out))
                assert len(mgr.session_ids) <= max_sessions
            assert len(mgr.session_ids) == max_sessions
            # the newest survive, the pruned ones are terminated
            await _wait_gone(pids[:3])
            assert all(alive(pid) for pid in pids[3:])


async def test_a_manager_that_is_not_open_spawns_nothing(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "ran"
    mgr = UnifiedExecManager(ue.LocalPtyBackend(), **OPTIONS)
    with pytest.raises(ue.InvalidRequestError, match="not open"):
        await mgr.exec_command(f"touch {marker}; exec sleep 31", yield_time_ms=250)
    await trio.sleep(0.3)
    assert not marker.exists()
    assert mgr.session_ids == []
    text = await mgr.handle_tool_call("exec_command", {"cmd": f"touch {marker}"})
    assert "not open" in text and not marker.exists()


# -- cancellation: the session a cancelled exec_command started is terminated -------------


async def test_a_cancelled_exec_command_terminates_its_session(tmp_path: pathlib.Path) -> None:
    pidfile = tmp_path / "pid"
    with trio.fail_after(30):
        async with open_manager(ue.LocalPtyBackend(), **OPTIONS) as mgr:
            with trio.move_on_after(1.0) as scope:
                await mgr.exec_command(f"echo $$ > {pidfile}; exec sleep 30", yield_time_ms=10_000)
            assert scope.cancelled_caught
            assert mgr.session_ids == []
            await _wait_gone([int(pidfile.read_text())])


# -- defect 13 (tool layer): lone surrogates are a tool error, not UnicodeEncodeError ------


async def test_lone_surrogates_come_back_as_tool_errors() -> None:
    with trio.fail_after(30):
        async with open_manager(ue.LocalPtyBackend(), **OPTIONS) as mgr:
            out = await mgr.exec_command("cat", tty=True, yield_time_ms=250)
            call = '{"session_id": ' + str(out.session_id) + ', "chars": "\\ud83d"}'
            text = await mgr.handle_tool_call("write_stdin", call)
            assert text.startswith("failed to parse write_stdin arguments: chars is not valid")
            text = await mgr.handle_tool_call("exec_command", '{"cmd": "echo \\udce9"}')
            assert text.startswith("failed to parse exec_command arguments: cmd is not valid")
            text = await mgr.handle_tool_call("exec_command", {"cmd": "true", "workdir": "\ud800"})
            assert text.startswith("failed to parse exec_command arguments: workdir")
            with pytest.raises(ue.InvalidRequestError, match="lone surrogate"):
                await mgr.write_stdin(out.session_id, "\ud83d")
            with pytest.raises(ue.InvalidRequestError, match=r"cmd|argv"):
                await mgr.exec_command("echo \ud800")  # not even a file-system name
            # the session is unharmed
            echo = await mgr.write_stdin(out.session_id, "ok\n", yield_time_ms=500)
            assert "ok" in echo.output
            assert len(mgr.session_ids) == 1


# -- defect 27 (manager side): durations are validated where they are given -------------


@pytest.mark.parametrize(
    "options",
    [
        {"terminate_timeout": -1},
        {"terminate_timeout": float("nan")},
        {"max_write_stdin_yield_time_ms": -5},
        {"max_sessions": 0},
        {"output_token_limit": -1},
    ],
)
def test_bad_manager_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ue.InvalidRequestError):
        UnifiedExecManager(ue.LocalPtyBackend(), **options)


async def test_negative_quiet_ms_is_refused() -> None:
    with trio.fail_after(30):
        async with open_manager(ue.LocalPtyBackend(), **OPTIONS) as mgr:
            with pytest.raises(ue.InvalidRequestError, match="quiet_ms"):
                await mgr.exec_command("echo hi", quiet_ms=-1)
            out = await mgr.exec_command("cat", tty=True, yield_time_ms=250)
            assert out.session_id is not None
            with pytest.raises(ue.InvalidRequestError, match="quiet_ms"):
                await mgr.write_stdin(out.session_id, "x", quiet_ms=-1)
            assert mgr.session_ids == [out.session_id]


# -- output still arriving after the exit is collected -------------------------------


async def test_output_still_flowing_after_the_exit_is_not_cut_off(tmp_path: pathlib.Path) -> None:
    """An exec-server may announce the exit before the last output arrives (seen
    with codex under load: 4 MiB written, 3.9 MiB returned). Modelled locally: the
    leader exits once a background writer has started, and the writer keeps
    printing for 0.6 s. The call used to return 50 ms after the exit with the first
    few lines; it now waits while output keeps coming (still 50 ms at most once it
    stops, as in Codex)."""
    ready = tmp_path / "ready"
    writer = (
        "import pathlib, time\n"
        "for i in range(60):\n"
        "    print(i, flush=True)\n"
        f"    pathlib.Path('{ready}').touch()\n"
        "    time.sleep(0.01)"
    )
    cmd = f'{sys.executable} -c "$W" & while [ ! -e {ready} ]; do sleep 0.01; done; exit 0'
    with trio.fail_after(30):
        backend = ue.LocalPtyBackend(post_exit_grace=10)
        forced = {**UNIFIED_EXEC_ENV, "W": writer}
        async with open_manager(backend, forced_env=forced, **OPTIONS) as mgr:
            out = await mgr.exec_command(cmd, yield_time_ms=10_000)
    assert out.exit_code == 0 and out.ended_by == "exit"
    assert out.output.split() == [str(i) for i in range(60)]


# -- a remote session runs where the server is, not where the client is ---------------


async def test_a_remote_session_defaults_to_the_servers_cwd_and_home(
    tmp_path: pathlib.Path,
) -> None:
    """The manager used to send the client's own os.getcwd() as every remote cwd
    (meaningless on another machine); it now takes the server's announced cwd, and
    HOME from its announced home, both percent-decoded."""
    where = tmp_path / "server side #1"
    home = tmp_path / "home dir"
    where.mkdir()
    home.mkdir()
    argv = ["sh", "-c", 'cd "$1" && exec "$0" -m unified_exec serve --listen stdio']
    argv += [sys.executable, str(where)]
    env = {**os.environ, "HOME": str(home)}
    with trio.fail_after(60):
        async with (
            ue.RemoteExecBackend.connect_stdio(argv, env=env) as backend,
            open_manager(backend, **OPTIONS) as mgr,
        ):
            assert mgr.cwd == str(where)
            out = await mgr.exec_command('pwd; echo "$HOME"', yield_time_ms=5000)
            sub = await mgr.exec_command("pwd", workdir="..", yield_time_ms=5000)
    assert out.output.splitlines() == [str(where), str(home)]
    assert sub.output.strip() == str(tmp_path)


class _FirstStartWaits:
    """Fault injection (a start that stays in flight until told, on demand): the
    first start waits for ``gate``, as a start over a slow link does."""

    def __init__(self, inner: ue.LocalPtyBackend) -> None:
        self.inner = inner
        self.gate = trio.Event()
        self.waiting = trio.Event()
        self._first = True

    async def start(self, request: ue.ExecRequest) -> ue.ProcessHandle:
        if self._first:
            self._first = False
            self.waiting.set()
            await self.gate.wait()
        return await self.inner.start(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_terminate_all_keeps_the_ids_of_starts_in_flight() -> None:
    """terminate_all() used to clear every reserved id, so a start still in flight
    and the next command got the same session id (and one overwrote the other)."""
    backend = _FirstStartWaits(ue.LocalPtyBackend())
    results: list[ue.tools.ExecCommandOutput] = []
    with trio.fail_after(30):
        async with open_manager(backend, **OPTIONS) as mgr, trio.open_nursery() as nursery:

            async def slow() -> None:
                results.append(await mgr.exec_command("exec sleep 30", yield_time_ms=250))

            nursery.start_soon(slow)
            await backend.waiting.wait()
            await mgr.terminate_all()
            quick = await mgr.exec_command("exec sleep 30", yield_time_ms=250)
            backend.gate.set()
            while not results:
                await trio.sleep(0.01)
            assert {results[0].session_id, quick.session_id} == {1000, 1001}
            assert mgr.session_ids == [1000, 1001]
        await backend.aclose()
