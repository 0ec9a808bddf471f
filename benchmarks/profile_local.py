"""Where a local spawn and a round trip spend their scheduler passes.

    python benchmarks/profile_local.py [N]

Counts, per operation, trio task steps (by task kind) and I/O waits with a trio
Instrument, and times each phase with perf_counter: the profile behind the
closing note of issue 12. For a sampled profile of the same loops, run it under
``pyinstrument -i 0.0002`` or ``py-spy record``.
"""

from __future__ import annotations

import collections
import statistics
import sys
import time

import trio

import unified_exec as ue

LINE = b"unified_exec round-trip probe!!\n"


class Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps: collections.Counter[str] = collections.Counter()
        self.io_waits = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        name = task.name
        for kind in ("supervisor", "pump", "read_loop"):
            if kind in name:
                name = kind
                break
        else:
            name = "caller"
        self.steps[name] += 1

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1


def _report(what: str, n: int, ins: Steps, phases: dict[str, list[float]]) -> None:
    steps = ", ".join(f"{k} {v / n:.2f}" for k, v in ins.steps.most_common())
    total = sum(ins.steps.values()) / n
    print(f"{what}: {total:.2f} task steps ({steps}), {ins.io_waits / n:.2f} I/O waits")
    for name, xs in phases.items():
        print(f"    {name:<22} median {statistics.median(xs) * 1e6:8.1f} us")


async def spawn(n: int, tty: bool) -> None:
    request = ue.ExecRequest(argv=["/bin/true"], tty=tty)
    phases: dict[str, list[float]] = {"start()": [], "from_handle()": [], "wait() to closed": []}
    ins = Steps()
    async with ue.LocalPtyBackend() as backend:
        for i in range(n + 20):
            if i == 20:
                trio.lowlevel.add_instrument(ins)
            t0 = time.perf_counter()
            handle = await backend.start(request)
            t1 = time.perf_counter()
            proc = ue.UnifiedExecProcess.from_handle(handle)
            t2 = time.perf_counter()
            await proc.wait()
            t3 = time.perf_counter()
            if i >= 20:
                for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    phases[k].append(v)
        trio.lowlevel.remove_instrument(ins)
    _report(f"spawn of /bin/true, tty={tty}", n, ins, phases)


async def roundtrip(n: int, tty: bool) -> None:
    request = ue.ExecRequest(argv=["cat"], tty=tty, pipe_stdin=not tty)
    want = 2 * len(LINE.replace(b"\n", b"\r\n")) if tty else len(LINE)
    phases: dict[str, list[float]] = {"write()": [], "read() until echoed": []}
    ins = Steps()
    async with ue.LocalPtyBackend() as backend, ue.open_process(backend, request) as proc:
        cursor = 0
        for i in range(n + 50):
            if i == 50:
                trio.lowlevel.add_instrument(ins)
            t0 = time.perf_counter()
            await proc.write(LINE)
            t1 = time.perf_counter()
            got = 0
            while got < want:
                r = await proc.read(after_seq=cursor, wait=10)
                got += sum(len(c.data) for c in r.chunks)
                cursor = r.cursor
            t2 = time.perf_counter()
            if i >= 50:
                phases["write()"].append(t1 - t0)
                phases["read() until echoed"].append(t2 - t1)
        trio.lowlevel.remove_instrument(ins)
    _report(f"32-byte round trip, tty={tty}", n, ins, phases)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    for tty in (False, True):
        trio.run(spawn, n, tty)
    for tty in (False, True):
        trio.run(roundtrip, n * 4, tty)


if __name__ == "__main__":
    main()
