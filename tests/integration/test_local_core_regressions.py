"""Regressions of the 2026-12 review in the local core: each test fails at bf34039.

Real children, real PTYs; the one fake (a handle whose terminate() raises) stands
for a remote server that stalls, which no local part produces on demand.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import unified_exec as ue

from .helpers import alive, sh

MODES = [pytest.param(False, id="pipes"), pytest.param(True, id="pty")]


def _pids_running(cmdline: bytes) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read().replace(b"\0", b" ").strip() == cmdline:
                        found.append(int(name))
            except OSError:
                continue
    return [pid for pid in found if alive(pid)]


# -- #6: a cursor at or after the closed seq -----------------------------------------


async def test_cursor_on_a_closed_process_answers_at_once() -> None:
    backend = ue.LocalPtyBackend()
    async with backend, ue.open_process(backend, ue.ExecRequest(["echo", "hi"])) as proc:
        await proc.wait()
        res = await proc.read()
        assert res.closed
        for cursor in (res.next_seq - 1, res.next_seq + 50):
            with trio.fail_after(10):  # the wait asked for is 60 s
                again = await proc.read(after_seq=cursor, wait=60)
            assert again.closed and not again.chunks
            with trio.fail_after(10):
                events = [ev async for ev in proc.events(after_seq=cursor)]
            assert events == [ue.ClosedEvent(seq=res.next_seq - 1)]


# -- #13: a lone surrogate --------------------------------------------------------------


async def test_write_of_a_lone_surrogate_is_a_typed_error() -> None:
    async with ue.LocalPtyBackend() as backend:
        req = ue.ExecRequest(["cat"], pipe_stdin=True)
        async with ue.open_process(backend, req) as proc:
            with pytest.raises(ue.InvalidRequestError):
                await proc.write("bad \udc80 text")
            assert await proc.write("fine\n") == ue.WriteStatus.ACCEPTED


# -- #16: events() keeps its process alive ------------------------------------------------


async def test_iterating_events_of_an_unreferenced_process_keeps_it_running() -> None:
    with trio.fail_after(20):
        async with ue.LocalPtyBackend() as backend:
            req = sh("for i in 1 2 3; do echo tick $i; sleep 0.1; done")
            out = b""
            exit_code = None
            async for ev in (await ue.UnifiedExecProcess.start(backend, req)).events():
                gc.collect()  # the process object has no other reference
                if isinstance(ev, ue.OutputEvent):
                    out += ev.data
                elif isinstance(ev, ue.ExitedEvent):
                    exit_code = ev.exit_code
            assert exit_code == 0
            assert out == b"tick 1\ntick 2\ntick 3\n"


# -- #17: terminate() after the leader exited -------------------------------------------


@pytest.mark.parametrize("tty", MODES)
async def test_terminate_after_the_leader_exited_kills_the_rest_now(tty: bool) -> None:
    tag = f"sleep 3{uuid.uuid4().int % 1000}.25"
    backend = ue.LocalPtyBackend(post_exit_grace=60)
    try:
        with trio.fail_after(20):  # the grace to wait out would be 60 s
            proc = await ue.UnifiedExecProcess.start(
                backend, sh(f"trap '' HUP; {tag} & echo started; exit 0", tty=tty)
            )
            while not proc.state.has_exited:
                await trio.sleep(0.01)
            assert _pids_running(tag.encode())
            state = await proc.terminate()
            assert state.exit_code == 0
            assert not _pids_running(tag.encode())
    finally:
        with trio.CancelScope(shield=True):
            await backend.aclose()


# -- #24: interrupt() on a tty ------------------------------------------------------------


async def test_interrupt_reaches_the_terminals_foreground_job() -> None:
    tag = f"sleep 3{uuid.uuid4().int % 1000}.5"
    req = ue.ExecRequest(
        ["bash", "--norc", "--noprofile", "-i"],
        tty=True,
        env={"PATH": os.environ.get("PATH", os.defpath), "TERM": "dumb", "PS1": "$ "},
    )
    with trio.fail_after(30):
        async with ue.LocalPtyBackend() as backend, ue.open_process(backend, req) as proc:
            await proc.write(tag + "\n")
            while not _pids_running(tag.encode()):
                await trio.sleep(0.05)
            await proc.interrupt()
            while _pids_running(tag.encode()):  # fail_after bounds it
                await trio.sleep(0.05)
            assert not proc.state.has_exited  # the shell itself is still there


# -- #26: start() is a checkpoint --------------------------------------------------------


async def test_start_is_a_checkpoint() -> None:
    async with ue.LocalPtyBackend() as backend:
        tag = f"sleep 4{uuid.uuid4().int % 1000}.75"
        with trio.CancelScope() as scope:
            scope.cancel()
            await backend.start(ue.ExecRequest(tag.split()))
        assert scope.cancelled_caught
        assert not _pids_running(tag.encode())

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.sleep(0.01)
            before = ticks
            procs = [
                await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["true"]))
                for _ in range(5)
            ]
            assert ticks > before
            nursery.cancel_scope.cancel()
        for p in procs:
            await p.wait()


# -- #28: a relative cwd and a relative PATH entry -------------------------------------


async def test_relative_cwd_with_relative_path_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub" / "bin").mkdir(parents=True)
    hello = tmp_path / "sub" / "bin" / "hello"
    hello.write_text("#!/bin/sh\necho hello from sub/bin\n")
    hello.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    async with ue.LocalPtyBackend() as backend:
        for env_path in ("bin", "/usr/bin:bin"):
            req = ue.ExecRequest(["hello"], cwd="sub", env={"PATH": env_path})
            async with ue.open_process(backend, req) as proc:
                assert (await proc.wait()).exit_code == 0
                res = await proc.read()
                assert b"".join(c.data for c in res.chunks) == b"hello from sub/bin\n"


# -- #31: terminating a flood loses nothing an active reader has not seen -------------------


async def _read_all(proc: ue.UnifiedExecProcess, slow: float) -> list[object]:
    events: list[object] = []
    async for ev in proc.events():
        events.append(ev)
        await trio.sleep(slow)
    return events


def _assert_gapless(events: list[object]) -> None:
    lost = [ev for ev in events if isinstance(ev, ue.LostEvent)]
    assert not lost, f"a live reader lost {lost}"
    seqs = [ev.seq for ev in events]  # type: ignore[attr-defined]
    assert seqs == list(range(1, len(seqs) + 1))
    assert isinstance(events[-1], ue.ClosedEvent)
    assert any(isinstance(ev, ue.ExitedEvent) for ev in events)


@pytest.mark.parametrize("kill_grace", [0.0, 0.5])
async def test_terminating_a_flood_loses_nothing_a_live_reader_has_not_seen(
    kill_grace: float,
) -> None:
    req = ue.ExecRequest(["head", "-c", "4G", "/dev/zero"])
    with trio.fail_after(60):
        async with ue.LocalPtyBackend(kill_grace=kill_grace, queue_bytes=256 * 1024) as backend:
            proc = await ue.UnifiedExecProcess.start(backend, req, retention_bytes=256 * 1024)
            result: list[object] = []

            async def reader() -> None:
                result.extend(await _read_all(proc, slow=0.002))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                while proc.last_seq < 20:
                    await trio.sleep(0.01)
                await proc.terminate()
            _assert_gapless(result)
            assert len(result) > 20


async def test_a_reader_that_terminates_from_its_own_loop_loses_nothing() -> None:
    req = ue.ExecRequest(["head", "-c", "4G", "/dev/zero"])
    with trio.fail_after(60):
        async with ue.LocalPtyBackend(kill_grace=0) as backend:
            proc = await ue.UnifiedExecProcess.start(backend, req, retention_bytes=128 * 1024)
            events: list[object] = []
            async for ev in proc.events():
                events.append(ev)
                if len(events) == 10:
                    state = await proc.terminate()  # must not wait on this very loop
                    assert state.exit_code == 137
            _assert_gapless(events)


# -- #4 (process part): terminate() reports every typed error as state ------------------


class _StalledHandle:
    """Fake: a remote handle whose server does not answer process/terminate in time."""

    process_id = "stalled"

    async def _events(self) -> AsyncIterator[ue.ExitedEvent]:
        await trio.sleep_forever()
        yield ue.ExitedEvent(seq=1, exit_code=0)  # pragma: no cover

    def events(self) -> AsyncIterator[ue.ExitedEvent]:
        return self._events()

    async def write(self, data: bytes) -> ue.WriteStatus:
        return ue.WriteStatus.STDIN_CLOSED

    async def terminate(self) -> None:
        raise ue.ExecTimeoutError("exec-server did not answer process/terminate within 1 s")

    async def interrupt(self) -> None:
        pass

    async def resize(self, rows: int, cols: int) -> None:
        pass


async def test_terminate_reports_a_timeout_as_state() -> None:
    proc = ue.UnifiedExecProcess.from_handle(_StalledHandle())  # type: ignore[arg-type]
    with trio.fail_after(10):
        state = await proc.terminate()
    assert state.has_exited and state.failure_message is not None
    assert "did not answer process/terminate" in state.failure_message
    assert proc.closed


# -- #32: setsid'd grandchildren and the end of a run by exception / Ctrl-C ---------------

_RUN_THEN_RAISE = textwrap.dedent(
    """
    import os, sys, time, trio
    import unified_exec as ue

    mark = sys.argv[1]
    exc = {"error": RuntimeError, "ctrl-c": KeyboardInterrupt}[sys.argv[2]]

    def marked():
        n = 0
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    n += f"UE_MARK={mark}".encode() in f.read().split(b"\\0")
            except OSError:
                pass
        return n

    async def main():
        be = ue.LocalPtyBackend()  # checked before exit: the run teardown must do it
        env = dict(os.environ, UE_MARK=mark)
        keep = [
            await ue.UnifiedExecProcess.start(
                be, ue.ExecRequest(["sh", "-c", "setsid sleep 1000 & sleep 1000"], env=env)
            )
            for _ in range(3)
        ]
        while marked() < 6:
            await trio.sleep(0.05)
        raise exc()

    try:
        trio.run(main)
    except (RuntimeError, KeyboardInterrupt):
        pass
    deadline = time.monotonic() + 10
    while marked() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("survivors", marked())
    """
)


@pytest.mark.parametrize("how", ["error", "ctrl-c"])
def test_a_run_ended_by_an_exception_leaves_no_setsid_grandchild(how: str) -> None:
    mark = uuid.uuid4().hex
    try:
        out = subprocess.run(
            [sys.executable, "-c", _RUN_THEN_RAISE, mark, how],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.stdout.strip() == "survivors 0", out.stdout + out.stderr
    finally:  # whatever a failure left behind
        needle = f"UE_MARK={mark}".encode()
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        os.kill(int(name), 9)
            except (OSError, ValueError):
                continue
