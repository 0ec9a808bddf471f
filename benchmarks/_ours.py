"""The same work done through unified_exec's public API (LocalPtyBackend).

Each public function runs one trio.run with one backend, and checks the work was
done (exit codes, byte counts), never the timings.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

import unified_exec as ue
from _baselines import ECHO, MIB, TRUE, BenchmarkError, echo_all_ms

__all__ = ["concurrency_ms", "roundtrip_us", "run", "spawn_ms", "throughput_mib_s"]

T = TypeVar("T")

_ROUNDTRIP_WAIT = 10.0  # seconds one read may wait before the trip counts as lost


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """trio.run(fn(backend, *args)) with a fresh LocalPtyBackend."""

    async def main() -> T:
        async with ue.LocalPtyBackend() as backend:
            return await fn(backend, *args)

    return trio.run(main)


def _check_state(what: str, state: ue.ProcessState) -> None:
    if state.failure_message is not None or state.exit_code != 0:
        raise BenchmarkError(f"{what}: {state}")


# -- 1. spawn + exit of /bin/true ---------------------------------------------------


async def spawn_ms(
    backend: ue.LocalPtyBackend, tty: bool, iterations: int, warmup: int
) -> list[float]:
    """open_process(/bin/true) + wait(): ms until the process is closed."""
    request = ue.ExecRequest(argv=[TRUE], tty=tty)
    samples = []
    for i in range(warmup + iterations):
        t0 = time.perf_counter()
        async with ue.open_process(backend, request) as proc:
            state = await proc.wait()
        elapsed = time.perf_counter() - t0
        _check_state("/bin/true", state)
        if i >= warmup:
            samples.append(elapsed * 1e3)
    return samples


# -- 2. throughput ------------------------------------------------------------------


async def throughput_mib_s(backend: ue.LocalPtyBackend, tty: bool, nbytes: int) -> float:
    """Consume every event of ``head -c N /dev/zero``; MiB/s from start to closed."""
    request = ue.ExecRequest(argv=["head", "-c", str(nbytes), "/dev/zero"], tty=tty)
    total = 0
    output = ue.OutputEvent
    t0 = time.perf_counter()
    async with ue.open_process(backend, request) as proc:
        async for event in proc.events():
            if type(event) is output:
                total += len(event.data)
        state = await proc.wait()
    elapsed = time.perf_counter() - t0
    _check_state("head", state)
    if total != nbytes:
        raise BenchmarkError(f"events() delivered {total} bytes, expected {nbytes}")
    return nbytes / MIB / elapsed


# -- 3. round trip ------------------------------------------------------------------


async def roundtrip_us(
    backend: ue.LocalPtyBackend, tty: bool, line: bytes, trips: int, warmup: int
) -> list[float]:
    """proc.write(line), then proc.read(after_seq=cursor, wait=...) until it is back.

    With tty=True the terminal echoes the line as well, so both copies are awaited.
    """
    want = 2 * len(line.replace(b"\n", b"\r\n")) if tty else len(line)
    request = ue.ExecRequest(argv=["cat"], tty=tty, pipe_stdin=not tty)
    samples = []
    async with ue.open_process(backend, request) as proc:
        cursor = 0
        for i in range(warmup + trips):
            t0 = time.perf_counter()
            status = await proc.write(line)
            if status is not ue.WriteStatus.ACCEPTED:
                raise BenchmarkError(f"write answered {status}")
            got = 0
            while got < want:
                result = await proc.read(after_seq=cursor, wait=_ROUNDTRIP_WAIT)
                if result.evicted:
                    raise BenchmarkError(f"output evicted: {result.evicted}")
                if result.closed:
                    raise BenchmarkError(f"cat closed during the round trip: {result.state}")
                if not result.chunks and result.next_seq - 1 == cursor:
                    raise BenchmarkError(f"no echo within {_ROUNDTRIP_WAIT} s")
                got += sum(len(chunk.data) for chunk in result.chunks)
                cursor = result.next_seq - 1
            elapsed = time.perf_counter() - t0
            if got != want:
                raise BenchmarkError(f"read {got} bytes back, expected {want}")
            if i >= warmup:
                samples.append(elapsed * 1e6)
        # There is no way to close stdin, so leaving the block terminates cat.
    return samples


# -- 4. many processes at once --------------------------------------------------------


async def concurrency_ms(backend: ue.LocalPtyBackend, count: int) -> float:
    """``count`` x open_process(echo hi) in one nursery; ms until every one is closed."""
    request = ue.ExecRequest(argv=[ECHO, "hi"])

    async def one() -> bytes:
        out = bytearray()
        async with ue.open_process(backend, request) as proc:
            async for event in proc.events():
                if isinstance(event, ue.OutputEvent):
                    out += event.data
            _check_state("echo", await proc.wait())
        return bytes(out)

    return await echo_all_ms(count, one)
