"""check_backend(): the behaviour every backend must share, checked through the
public API only, so the same suite runs against a local backend and against any
exec-server (ours or codex). Checks run real commands; they assume a POSIX shell,
coreutils and ``/tmp`` where the processes run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import trio

from .._errors import LaunchError
from .._events import ClosedEvent, ExitedEvent, FailedEvent, LostEvent, OutputEvent, WriteStatus
from .._process import DEFAULT_RETENTION_BYTES, UnifiedExecProcess, open_process
from .._request import ExecRequest
from ..backends._base import ExecBackend

__all__ = ["CHECKS", "BackendFactory", "check_backend"]

BackendFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[Any]]
Check: TypeAlias = Callable[[ExecBackend], Awaitable[None]]

_MiB = 1 << 20


def _sh(script: str, **kw: Any) -> ExecRequest:
    return ExecRequest(argv=["sh", "-c", script], **kw)


async def _run(
    backend: ExecBackend, request: ExecRequest
) -> tuple[dict[str, bytes], list[Any], UnifiedExecProcess]:
    """Run to completion through events(), checking the ordering rules on the way."""
    async with open_process(backend, request) as proc:
        out: dict[str, bytearray] = {}
        events: list[Any] = []
        async for event in proc.events():
            events.append(event)
            if isinstance(event, OutputEvent):
                out.setdefault(event.stream, bytearray()).extend(event.data)
        _check_order(events)
        return {k: bytes(v) for k, v in out.items()}, events, proc


def _check_order(events: Sequence[Any]) -> None:
    assert events, "no events at all"
    assert not any(isinstance(e, FailedEvent) for e in events), f"failed: {events[-1]}"
    assert not any(isinstance(e, LostEvent) for e in events), "output was lost"
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"seqs out of order: {seqs}"
    assert seqs[0] == 1, f"first seq is {seqs[0]}, not 1"
    assert isinstance(events[-1], ClosedEvent), f"last event is {events[-1]!r}, not closed"
    assert sum(isinstance(e, ClosedEvent) for e in events) == 1, "closed more than once"
    assert sum(isinstance(e, ExitedEvent) for e in events) == 1, "not exactly one exit"


async def check_echo(backend: ExecBackend) -> None:
    out, events, proc = await _run(backend, ExecRequest(["echo", "hello"]))
    assert out == {"stdout": b"hello\n"}, out
    assert proc.state.exit_code == 0 and proc.state.failure_message is None
    assert events[-1].seq == len(events), "seqs are not contiguous"


async def check_stdin(backend: ExecBackend) -> None:
    async with open_process(backend, _sh("read x; echo got:$x", pipe_stdin=True)) as proc:
        assert await proc.write(b"hi\n") is WriteStatus.ACCEPTED
        state = await proc.wait()
        res = await proc.read()
    assert state.exit_code == 0
    assert b"".join(c.data for c in res.chunks) == b"got:hi\n"
    async with open_process(backend, _sh("sleep 5")) as proc:
        assert await proc.write(b"x") is WriteStatus.STDIN_CLOSED, "stdin without pipe_stdin"
        await proc.terminate()
        assert await proc.write(b"x") is WriteStatus.STDIN_CLOSED, "stdin after terminate"


async def check_stderr_separate(backend: ExecBackend) -> None:
    out, _, _ = await _run(backend, _sh("echo out; echo err >&2"))
    assert out == {"stdout": b"out\n", "stderr": b"err\n"}, out


async def check_tty(backend: ExecBackend) -> None:
    out, _, proc = await _run(backend, _sh("tty; echo err >&2; exit 4", tty=True))
    assert set(out) == {"pty"}, out
    lines = out["pty"].split(b"\r\n")
    assert lines[0].startswith(b"/dev/pts/") and b"err" in lines, out
    assert proc.state.exit_code == 4


async def check_exit_codes(backend: ExecBackend) -> None:
    for script, code in (("exit 0", 0), ("exit 42", 42), ("kill -9 $$", 137), ("kill -15 $$", 143)):
        _, _, proc = await _run(backend, _sh(script))
        assert proc.state.exit_code == code, f"{script}: {proc.state}"
    _, _, proc = await _run(backend, _sh("kill -9 $$", tty=True))
    assert proc.state.exit_code not in (None, 0), f"tty kill -9: {proc.state}"


async def check_interrupt(backend: ExecBackend) -> None:
    async with open_process(backend, ExecRequest(["sleep", "100"])) as proc:
        await proc.interrupt()
        with trio.fail_after(10):
            state = await proc.wait()
    assert state.exit_code == 130, state


async def check_terminate_group(backend: ExecBackend) -> None:
    req = _sh("sleep 1000 & echo $!; wait")
    async with open_process(backend, req) as proc:
        res = await proc.read(wait=10)
        grandchild = int(res.chunks[0].data.split()[0])
        with trio.fail_after(15):
            state = await proc.terminate()
    assert state.has_exited and state.exit_code not in (None, 0), state
    # Ask the same backend whether the background sleep survived: exit 0 only if it
    # stays alive (and not a zombie awaiting its reaper) for 3 s.
    pid = grandchild
    probe_script = (
        f"i=0; while [ $i -lt 30 ]; do kill -0 {pid} 2>/dev/null || exit 1; "
        f"grep -q ') Z' /proc/{pid}/stat 2>/dev/null && exit 1; i=$((i+1)); sleep 0.1; done"
    )
    _, _, probe = await _run(backend, _sh(probe_script))
    assert probe.state.exit_code != 0, f"background process {pid} outlived terminate"


async def check_launch_failure(backend: ExecBackend) -> None:
    try:
        await UnifiedExecProcess.start(
            backend, ExecRequest(["/nonexistent/binary"], process_id="lf")
        )
    except LaunchError as exc:
        assert exc.path == "/nonexistent/binary", exc.path
    else:
        raise AssertionError("a missing executable did not raise LaunchError")
    # The failed id is free again.
    out, _, _ = await _run(backend, ExecRequest(["echo", "ok"], process_id="lf"))
    assert out == {"stdout": b"ok\n"}


async def check_after_close(backend: ExecBackend) -> None:
    async with open_process(backend, _sh("exit 3", pipe_stdin=True)) as proc:
        with trio.fail_after(10):
            await proc.wait()
        assert await proc.write(b"late\n") is WriteStatus.STDIN_CLOSED
        res = await proc.read(after_seq=99, wait=5)
        assert res.closed and res.chunks == () and res.state.exit_code == 3
        await proc.interrupt()  # a no-op, not an error
        assert (await proc.terminate()).exit_code == 3


async def check_cwd_env(backend: ExecBackend) -> None:
    out, _, _ = await _run(backend, ExecRequest(["pwd"], cwd="/tmp"))
    assert out == {"stdout": b"/tmp\n"}, out
    out, _, _ = await _run(backend, ExecRequest(["/usr/bin/env"], env={"ONLY": "1"}))
    assert out == {"stdout": b"ONLY=1\n"}, out


async def check_retention(backend: ExecBackend) -> None:
    script = "head -c 3145728 /dev/zero; echo END"
    async with open_process(backend, _sh(script)) as proc:
        with trio.fail_after(60):
            await proc.wait()
        res = await proc.read()
    retained = b"".join(c.data for c in res.chunks)
    assert res.evicted and res.evicted.start == 1, f"eviction not reported: {res.evicted}"
    assert len(retained) <= DEFAULT_RETENTION_BYTES + 256 * 1024, len(retained)
    assert retained.endswith(b"\0END\n")


async def check_8mib_checksum(backend: ExecBackend) -> None:
    size = 8 * _MiB
    expected = hashlib.sha256(b"0123456789abcde\n" * (size // 16)).hexdigest()
    digest = hashlib.sha256()
    total = 0
    async with open_process(backend, _sh(f"yes 0123456789abcde | head -c {size}")) as proc:
        async for event in proc.events():
            assert not isinstance(event, LostEvent | FailedEvent), event
            if isinstance(event, OutputEvent):
                digest.update(event.data)
                total += len(event.data)
    assert total == size, total
    assert digest.hexdigest() == expected


async def check_concurrent(backend: ExecBackend) -> None:
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        out, _, proc = await _run(backend, _sh(f"echo {i}; exit {i % 7}"))
        assert proc.state.exit_code == i % 7
        results[i] = out.get("stdout", b"")

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert results == {i: f"{i}\n".encode() for i in range(50)}


CHECKS: dict[str, Check] = {
    "echo": check_echo,
    "stdin": check_stdin,
    "stderr_separate": check_stderr_separate,
    "tty": check_tty,
    "exit_codes": check_exit_codes,
    "interrupt": check_interrupt,
    "terminate_group": check_terminate_group,
    "launch_failure": check_launch_failure,
    "after_close": check_after_close,
    "cwd_env": check_cwd_env,
    "retention": check_retention,
    "8mib_checksum": check_8mib_checksum,
    "concurrent_50": check_concurrent,
}


async def check_backend(
    backend_factory: BackendFactory,
    *,
    only: Sequence[str] | None = None,
    timeout: float = 60.0,
) -> list[str]:
    """Run the conformance checks, each on a fresh backend from ``backend_factory()``.

    ``backend_factory`` returns an async context manager yielding a backend, e.g.
    ``LocalPtyBackend`` or ``lambda: RemoteExecBackend.connect(url)``. Raises
    AssertionError naming the first failing check; returns the names that passed.
    """
    names = list(CHECKS) if only is None else list(only)
    passed: list[str] = []
    for name in names:
        check = CHECKS[name]
        try:
            with trio.fail_after(timeout):
                async with backend_factory() as backend:
                    await check(backend)
        except AssertionError as exc:
            raise AssertionError(f"conformance check {name!r} failed: {exc}") from exc
        except trio.TooSlowError:
            raise AssertionError(
                f"conformance check {name!r} timed out after {timeout} s"
            ) from None
        passed.append(name)
    return passed
