"""What the warden costs per spawn: spawn -> closed of `true`, with and without it.

Not a test (no timing is asserted on a shared machine); run it by hand:
    .venv/bin/python tests/integration/bench_warden.py [N]
It also times the one-off warden start-up (the first spawn of a Python process).
"""

from __future__ import annotations

import statistics
import sys
import time

import trio

import unified_exec as ue
from unified_exec.backends._warden import warden


async def _one(backend: ue.LocalPtyBackend, req: ue.ExecRequest) -> float:
    t0 = time.perf_counter()
    proc = await ue.UnifiedExecProcess.start(backend, req)
    await proc.wait()
    return time.perf_counter() - t0


async def main(n: int) -> None:
    req = ue.ExecRequest(["true"])
    t0 = time.perf_counter()
    await trio.to_thread.run_sync(warden.ensure_started)
    startup = time.perf_counter() - t0
    with_w, without_w = ue.LocalPtyBackend(), ue.LocalPtyBackend(warden=False)
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(10):  # warm-up
        await _one(with_w, req)
        await _one(without_w, req)
    for _ in range(n):  # interleaved, so machine noise hits both alike
        times["with"].append(await _one(with_w, req))
        times["without"].append(await _one(without_w, req))
    for name, values in times.items():
        values.sort()
        print(
            f"{name:8s} warden: median {statistics.median(values) * 1e3:.3f} ms, "
            f"p90 {values[int(len(values) * 0.9)] * 1e3:.3f} ms (n={len(values)})"
        )
    delta = statistics.median(times["with"]) - statistics.median(times["without"])
    print(f"median cost per spawn: {delta * 1e6:+.0f} us; warden start-up: {startup * 1e3:.1f} ms")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 300)
