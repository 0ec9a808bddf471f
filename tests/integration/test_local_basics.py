"""LocalPtyBackend with real children: the contract from the README, piece by piece."""

from __future__ import annotations

import os

import pytest
import trio

import unified_exec as ue

from .helpers import collect, session_commands, sh

pytestmark = pytest.mark.usefixtures("no_leaked_processes")

MODES = [pytest.param(False, id="pipes"), pytest.param(True, id="pty")]


@pytest.fixture
def backend() -> ue.LocalPtyBackend:
    return ue.LocalPtyBackend(kill_grace=0.5)


async def test_readme_example(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        req = sh("read x; echo got:$x; echo err >&2; exit 3", pipe_stdin=True)
        async with ue.open_process(backend, req) as proc:
            assert await proc.write(b"hi\n") is ue.WriteStatus.ACCEPTED
            state = await proc.wait()
            assert state == ue.ProcessState(has_exited=True, exit_code=3, failure_message=None)
            res = await proc.read(after_seq=0)
            assert res.chunks == (
                ue.OutputEvent(seq=1, stream="stdout", data=b"got:hi\n"),
                ue.OutputEvent(seq=2, stream="stderr", data=b"err\n"),
            )
            assert res.closed and res.state == state and res.evicted == range(0)
            assert res.next_seq == 5  # 3 = exited, 4 = closed


@pytest.mark.parametrize("tty", MODES)
async def test_seq_shared_and_closed_last(backend: ue.LocalPtyBackend, tty: bool) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, sh("for i in 1 2 3; do echo $i; done", tty=tty)) as p:
            _, events = await collect(p)
    seqs = [ev.seq for ev in events]  # type: ignore[attr-defined]
    assert seqs == list(range(1, len(events) + 1))
    assert isinstance(events[-1], ue.ClosedEvent)
    assert sum(isinstance(e, ue.ClosedEvent) for e in events) == 1
    assert sum(isinstance(e, ue.ExitedEvent) for e in events) == 1
    kinds = {e.stream for e in events if isinstance(e, ue.OutputEvent)}  # type: ignore[attr-defined]
    assert kinds == ({"pty"} if tty else {"stdout"})


async def test_pty_is_a_real_terminal(backend: ue.LocalPtyBackend) -> None:
    script = (
        "tty; stty size; ps -o stat= -p $$; echo via-dev-tty > /dev/tty; test -t 0 && echo tty0"
    )
    with trio.fail_after(10):
        req = sh(script, tty=True, size=(33, 101))
        async with ue.open_process(backend, req) as p:
            out, _ = await collect(p)
    text = out["pty"].decode()
    lines = text.split("\r\n")
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "33 101"
    assert "s" in lines[2] and "+" in lines[2]  # session leader, in the foreground group
    assert "via-dev-tty" in lines  # /dev/tty opens: it is the controlling terminal
    assert "tty0" in lines


async def test_resize_reaches_the_child(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        req = sh("trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done", tty=True)
        async with ue.open_process(backend, req) as p:
            seen = bytearray()
            cursor = 0
            while b"ready" not in seen:
                res = await p.read(after_seq=cursor, wait=5)
                cursor = res.next_seq - 1
                seen += b"".join(c.data for c in res.chunks)
            await p.resize(40, 132)
            while b"40 132" not in seen:
                res = await p.read(after_seq=cursor, wait=5)
                cursor = res.next_seq - 1
                seen += b"".join(c.data for c in res.chunks)


async def test_resize_errors(backend: ue.LocalPtyBackend) -> None:
    async with ue.open_process(backend, sh("sleep 10")) as p:
        with pytest.raises(ue.InvalidRequestError, match="no terminal"):
            await p.resize(10, 10)
    async with ue.open_process(backend, sh("sleep 10", tty=True)) as p:
        with pytest.raises(ue.InvalidRequestError, match="rows"):
            await p.resize(0, 10)


@pytest.mark.parametrize("tty", MODES)
@pytest.mark.parametrize(
    ("script", "code"), [("exit 0", 0), ("exit 42", 42), ("kill -9 $$", 137), ("kill -15 $$", 143)]
)
async def test_exit_codes(backend: ue.LocalPtyBackend, tty: bool, script: str, code: int) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, sh(script, tty=tty)) as p:
            state = await p.wait()
    assert state == ue.ProcessState(has_exited=True, exit_code=code)


async def _sleep_started(p: ue.UnifiedExecProcess) -> None:
    """Wait until sleep runs: a SIGINT that reaches sh, or sh's fork before it execs
    sleep, is caught by sh's handler and deferred, which would make the test racy."""
    while "sleep" not in session_commands(p._handle.pid):  # type: ignore[attr-defined]
        await trio.sleep(0.01)


@pytest.mark.parametrize("tty", MODES)
async def test_interrupt_signals_the_group(backend: ue.LocalPtyBackend, tty: bool) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, sh("echo up; sleep 100", tty=tty)) as p:
            await _sleep_started(p)
            await p.interrupt()
            state = await p.wait()
    assert state.exit_code == 130


async def test_ctrl_c_on_the_pty_interrupts(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, sh("echo up; sleep 100", tty=True)) as p:
            await _sleep_started(p)
            assert await p.write("\x03") is ue.WriteStatus.ACCEPTED
            state = await p.wait()
    assert state.exit_code == 130


async def test_pty_stdin_round_trip(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, ue.ExecRequest(["cat"], tty=True)) as p:
            assert await p.write("hello\n") is ue.WriteStatus.ACCEPTED
            seen = b""
            cursor = 0
            while seen.count(b"hello\r\n") < 2:  # echo from the tty, then cat's copy
                res = await p.read(after_seq=cursor, wait=5)
                cursor = res.next_seq - 1
                seen += b"".join(c.data for c in res.chunks)
            assert await p.write(b"\x04") is ue.WriteStatus.ACCEPTED  # EOF at line start
            assert (await p.wait()).exit_code == 0


async def test_environment(backend: ue.LocalPtyBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UE_INHERITED", "yes")
    with trio.fail_after(10):
        async with ue.open_process(backend, sh("echo $UE_INHERITED")) as p:
            out, _ = await collect(p)
        assert out["stdout"] == b"yes\n"
        req = ue.ExecRequest(["/usr/bin/env"], env={"ONLY": "1"})
        async with ue.open_process(backend, req) as p:
            out, _ = await collect(p)
        assert out["stdout"] == b"ONLY=1\n"


async def test_cwd_arg0_and_ids(backend: ue.LocalPtyBackend, tmp_path: os.PathLike[str]) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, ue.ExecRequest(["pwd"], cwd=tmp_path)) as p:
            out, _ = await collect(p)
        assert out["stdout"] == os.fsencode(tmp_path) + b"\n"
        req = ue.ExecRequest(["bash", "-c", "echo $0"], arg0="fancy", process_id="mine")
        async with ue.open_process(backend, req) as p:
            assert p.process_id == "mine"
            out, _ = await collect(p)
        assert out["stdout"] == b"fancy\n"
        a = await ue.UnifiedExecProcess.start(backend, sh("true"))
        b = await ue.UnifiedExecProcess.start(backend, sh("true"))
        assert a.process_id != b.process_id
        await a.wait()
        await b.wait()


@pytest.mark.parametrize("tty", MODES)
async def test_launch_errors_name_the_path(
    backend: ue.LocalPtyBackend, tty: bool, tmp_path: os.PathLike[str]
) -> None:
    with pytest.raises(ue.LaunchError, match="no-such-binary-xyz") as info:
        await backend.start(ue.ExecRequest(["no-such-binary-xyz"], tty=tty))
    assert info.value.path == "no-such-binary-xyz"
    with pytest.raises(ue.LaunchError, match="/nonexistent/bin/thing"):
        await backend.start(ue.ExecRequest(["/nonexistent/bin/thing"], tty=tty))
    missing = os.path.join(tmp_path, "gone")
    with pytest.raises(ue.LaunchError, match="working directory does not exist") as info:
        await backend.start(ue.ExecRequest(["true"], cwd=missing, tty=tty))
    assert info.value.path == missing
    script = os.path.join(tmp_path, "not-exec")
    with open(script, "w") as f:
        f.write("echo hi\n")
    with pytest.raises(ue.LaunchError, match="Permission denied"):
        await backend.start(ue.ExecRequest([script], tty=tty))
    with pytest.raises(ue.LaunchError, match="not a directory"):
        await backend.start(ue.ExecRequest(["true"], cwd=script, tty=tty))
    with pytest.raises(ue.InvalidRequestError):
        await backend.start("echo hi")  # type: ignore[arg-type]


async def test_write_statuses(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, sh("sleep 100")) as p:
            assert await p.write(b"x") is ue.WriteStatus.STDIN_CLOSED  # no pipe_stdin
        async with ue.open_process(backend, sh("exit 0", pipe_stdin=True)) as p:
            await p.wait()
            assert await p.write(b"x") is ue.WriteStatus.STDIN_CLOSED  # exited
        async with ue.open_process(backend, sh("sleep 100", pipe_stdin=True)) as p:
            assert await p.write(b"") is ue.WriteStatus.ACCEPTED
            assert await p.write(b"x\n") is ue.WriteStatus.ACCEPTED
            await p.terminate()
            assert await p.write(b"x") is ue.WriteStatus.STDIN_CLOSED  # terminated
        with pytest.raises(ue.InvalidRequestError):
            await p.write(123)  # type: ignore[arg-type]


async def test_blocked_write_ends_when_the_process_does(backend: ue.LocalPtyBackend) -> None:
    """A child that never reads its stdin: the write blocks, and terminate releases it."""
    with trio.fail_after(10):
        async with ue.open_process(backend, sh("sleep 100", pipe_stdin=True)) as p:
            result: list[ue.WriteStatus] = []

            async def writer() -> None:
                result.append(await p.write(b"x" * (4 << 20)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await trio.sleep(0.2)
                assert not result  # still blocked on the full pipe
                await p.terminate()
    assert result == [ue.WriteStatus.STDIN_CLOSED]


async def test_read_semantics(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        req = sh("echo a; sleep 0.3; echo b", pipe_stdin=False)
        async with ue.open_process(backend, req) as p:
            first = await p.read(wait=5)
            assert first.chunks[0].data == b"a\n" and not first.closed
            cursor = first.next_seq - 1
            t0 = trio.current_time()
            empty = await p.read(after_seq=cursor, wait=0.05)
            assert empty.chunks == () and trio.current_time() - t0 >= 0.04
            second = await p.read(after_seq=cursor, wait=5)
            assert second.chunks[0].data == b"b\n"
            await p.wait()
            late = await p.read(after_seq=99)
            assert late.chunks == () and late.closed
            for bad in ({"after_seq": -1}, {"max_bytes": -1}, {"wait": -1.0}, {"after_seq": True}):
                with pytest.raises(ue.InvalidRequestError):
                    await p.read(**bad)  # type: ignore[arg-type]


async def test_read_max_bytes(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        req = sh("echo aaaa; sleep 0.05; echo bbbb; sleep 0.05; echo cccc")
        async with ue.open_process(backend, req) as p:
            await p.wait()
            one = await p.read(max_bytes=1)
            assert [c.data for c in one.chunks] == [b"aaaa\n"]  # never split, at least one
            assert one.next_seq == one.chunks[0].seq + 1
            rest = await p.read(after_seq=one.next_seq - 1, max_bytes=100)
            assert [c.data for c in rest.chunks] == [b"bbbb\n", b"cccc\n"]


async def test_state_is_running_then_exited(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, sh("sleep 100")) as p:
            assert p.state == ue.ProcessState()
            assert not p.closed
            state = await p.terminate()
            assert state.has_exited and state.exit_code == 143 and p.closed


async def test_close_stdin_sends_eof(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(10):
        async with ue.open_process(backend, ue.ExecRequest(["wc", "-c"], pipe_stdin=True)) as p:
            assert await p.write(b"hello world\n") is ue.WriteStatus.ACCEPTED
            await p.close_stdin()
            await p.close_stdin()  # idempotent
            assert await p.write(b"more") is ue.WriteStatus.STDIN_CLOSED
            assert (await p.wait()).exit_code == 0
            assert b"".join(c.data for c in (await p.read()).chunks).strip() == b"12"
        async with ue.open_process(backend, ue.ExecRequest(["cat"], tty=True)) as p:
            with pytest.raises(ue.InvalidRequestError, match="Ctrl-D"):
                await p.close_stdin()
