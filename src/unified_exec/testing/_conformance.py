"""check_backend(): the behaviour every backend must share, checked through the
public API only, so the same suite runs against a local backend and against any
exec-server (ours or codex). Checks run real commands; they assume a POSIX shell,
coreutils and ``/tmp`` where the processes run.

``description`` checks what a backend says about itself against what it does: a
``description``, when present, is a well-formed ``BackendDescription`` (absolute
cwd, str -> str env, hashable value) whose cwd, default env and shell hold for new
processes; and every capability a handle declares works (``CLOSE_STDIN``: cat sees
EOF; ``RESIZE``: stty reports the new size; ``INTERRUPT``: SIGINT ends sleep with
130), while ``close_stdin()`` on a handle not declaring it is refused.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import attrs
import trio

from .._errors import InvalidRequestError, LaunchError
from .._events import ClosedEvent, ExitedEvent, FailedEvent, LostEvent, OutputEvent, WriteStatus
from .._process import DEFAULT_RETENTION_BYTES, UnifiedExecProcess, open_process
from .._request import ExecRequest, FrozenEnv
from .._state import ProcessState
from ..backends._base import ExecBackend, capabilities_of
from ..backends._description import BackendDescription, Capability, Location, describe_backend

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


async def _started(
    backend: ExecBackend, request: ExecRequest
) -> tuple[UnifiedExecProcess, frozenset[Capability]]:
    """A process and what its handle declares."""
    handle = await backend.start(request)
    return UnifiedExecProcess.from_handle(handle), capabilities_of(handle)


async def _pwd(backend: ExecBackend, cwd: str | None) -> bytes:
    out, _, proc = await _run(backend, _sh("pwd -P", cwd=cwd))
    assert proc.state.exit_code == 0, f"pwd -P in {cwd!r}: {proc.state}, {out}"
    return out.get("stdout", b"")


async def _ended(proc: UnifiedExecProcess, what: str) -> ProcessState:
    """The process's final state; an AssertionError naming ``what`` if it does not end."""
    with trio.move_on_after(10):
        return await proc.wait()
    raise AssertionError(f"{what}: the process did not end within 10 s")


def _well_formed(described: object) -> BackendDescription:
    assert isinstance(described, BackendDescription), (
        f"description is a {type(described).__name__}, not a BackendDescription"
    )
    assert isinstance(described.location, Location), described.location
    if described.cwd is not None:
        assert posixpath.isabs(described.cwd), f"described cwd {described.cwd!r} is relative"
    for name in ("home", "shell", "platform"):
        value = getattr(described, name)
        assert value is None or (isinstance(value, str) and value), f"{name}: {value!r}"
    assert isinstance(described.default_env, FrozenEnv), type(described.default_env)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in described.default_env.items())
    assert isinstance(described.capabilities, frozenset)
    assert all(isinstance(c, Capability) for c in described.capabilities)
    assert hash(described) == hash(attrs.evolve(described)), "not hashable by value"
    assert described == attrs.evolve(described), "not equal to a copy of itself"
    return described


async def check_description(backend: ExecBackend) -> None:
    """A description, when the backend has one, is well formed and true there: new
    processes start in its cwd with its default env, its shell runs, and each
    handle does what its declared capabilities say."""
    described = getattr(backend, "description", None)
    if described is None:  # a backend that does not describe itself: the fallback
        assert describe_backend(backend).location is Location.UNKNOWN
    else:
        desc = _well_formed(described)
        assert describe_backend(backend) == desc
        if desc.cwd is not None:
            here = await _pwd(backend, None)
            assert here == await _pwd(backend, desc.cwd), (
                f"a process without a cwd ran in {here!r}, not the described {desc.cwd!r}"
            )
        out, _, _ = await _run(backend, ExecRequest(["env", "-0"]))
        got = dict(e.partition("=")[::2] for e in out.get("stdout", b"").decode().split("\0") if e)
        missing = {k: v for k, v in desc.default_env.items() if got.get(k) != v}
        assert not missing, f"the described default env is not what a process gets: {missing}"
        if desc.shell is not None:
            _, _, proc = await _run(backend, ExecRequest([desc.shell, "-c", "exit 7"]))
            assert proc.state.exit_code == 7, f"described shell {desc.shell}: {proc.state}"
    await _check_capabilities(backend, describe_backend(backend).capabilities)


async def _check_capabilities(backend: ExecBackend, described: frozenset[Capability]) -> None:
    proc, caps = await _started(backend, ExecRequest(["cat"], pipe_stdin=True))
    async with proc:
        assert described <= caps, f"the backend describes {described}, a handle has {caps}"
        assert await proc.write(b"x") is WriteStatus.ACCEPTED
        if Capability.CLOSE_STDIN in caps:
            await proc.close_stdin()
            state = await _ended(proc, "close_stdin declared, but cat did not see EOF")
            res = await proc.read()
            assert state.exit_code == 0, f"cat after close_stdin: {state}"
            assert b"".join(c.data for c in res.chunks) == b"x"
        else:
            try:
                await proc.close_stdin()
            except InvalidRequestError:
                pass
            else:
                raise AssertionError("close_stdin() worked on a handle not declaring it")
    if Capability.RESIZE in caps:
        proc, _ = await _started(backend, _sh("read x; stty size", tty=True))
        async with proc:
            await proc.resize(33, 101)
            assert await proc.write(b"\n") is WriteStatus.ACCEPTED
            await _ended(proc, "stty size after resize")
            res = await proc.read()
        text = b"".join(c.data for c in res.chunks)
        assert b"33 101" in text, f"resize(33, 101) declared, but stty says {text!r}"
    if Capability.INTERRUPT in caps:
        proc, _ = await _started(backend, ExecRequest(["sleep", "100"]))
        async with proc:
            await proc.interrupt()
            state = await _ended(proc, "interrupt declared, but sleep went on")
        assert state.exit_code == 130, f"interrupt declared, but sleep ended {state}"


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
    "description": check_description,
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
