"""Our exec-server against the real codex exec-server (0.171.0 and 0.169.0), in one run.

    python benchmarks/remote.py            # full run (about 6 minutes on 2 cores)
    python benchmarks/remote.py --quick    # smoke test (well under a minute)

Every server is driven by the same client (RemoteExecBackend) over the same transport
(stdio and websocket). Each server is started once and one backend per server and
transport stays connected for the whole run, so start-up costs are not measured.
The work is interleaved round-robin (ours, codex 0.171.0, codex 0.169.0, ours, ...),
and every figure is the median of the ratios ours/codex taken within each round, so
drift on a shared machine hits both alike:

- throughput: one ``head -c N /dev/zero`` streamed as process/output notifications
  until closed (pipes and tty), MiB/s; byte count and exit code checked;
- spawn: process/start of /bin/true until closed, ms; exit code checked;
- roundtrip: process/write of a 32-byte line to ``cat`` until its echo is back, µs;
  the echoed bytes checked;
- concurrency: 100 x ``/bin/echo hi`` started at once until all are closed, ms;
  every exit code and output checked;
- idle RSS: the websocket server's resident memory (with its child processes) after
  one client ran a command and went away, MiB.

For every figure the CPU time of each side is added up too: the client's (this
process) and each server's process tree (its children included). The client's own
CPU per job bounds each ratio: even a server that took no time at all could not
bring a job below what the client spends on it (``client_bound`` in the ratios).

Results go to benchmarks/results/remote.json; a table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import unified_exec as ue
from _stats import machine_info, summarize, versions

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
LINE = b"unified_exec round-trip probe!!\n"
CODEX_VERSIONS = ("0.171.0", "0.169.0")
TRANSPORTS = ("stdio", "ws")
FIGURES = ("throughput_pipe", "throughput_tty", "spawn", "roundtrip", "concurrency", "idle_rss")
_READ_WAIT = 10.0  # s one read may wait before a round trip counts as lost
_RUN_BOUND = 600.0  # s any one measured run may take
_CPU_SETTLE = 0.5  # s a figure's servers get to finish their tails before their CPU is read


class BenchmarkError(Exception):
    """The work was not done right (bytes, exit code, echo): no figure is taken."""


def codex_binary(version: str) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-codex.sh"), version],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def _check_state(what: str, state: ue.ProcessState) -> None:
    if state.failure_message is not None or state.exit_code != 0:
        raise BenchmarkError(f"{what}: {state}")


@asynccontextmanager
async def ws_server(argv: list[str], env: dict[str, str]) -> AsyncIterator[tuple[str, int]]:
    """Start a websocket server; yield (url it printed, pid)."""
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        assert proc.stdout is not None
        first = b""
        with trio.fail_after(30):
            while b"\n" not in first:
                data = await proc.stdout.receive_some(4096)
                if not data:
                    raise BenchmarkError(f"{argv[0]} exited before printing its URL")
                first += data
        yield first.split(b"\n")[0].decode().strip(), proc.pid
    finally:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent pid (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _children()
    tree = []
    todo = [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MiB (from /proc)."""
    total_kib = 0
    for p in _process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


_TICK = 1 / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used by ``pid``, its live descendants and the children they reaped.

    In clock ticks (10 ms): read once before a figure and once after it, so the
    total over all its jobs is exact to a tick or two (a short figure's is rough).
    """
    ticks = 0
    for p in _process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks * _TICK


def child_pids() -> set[int]:
    """The pids of this process's children."""
    return set(_children().get(os.getpid(), []))


# -- the work -------------------------------------------------------------------------


async def throughput(backend: ue.RemoteExecBackend, nbytes: int, tty: bool) -> float:
    """MiB/s of ``head -c nbytes /dev/zero`` from process/start until closed."""
    req = ue.ExecRequest(["head", "-c", str(nbytes), "/dev/zero"], tty=tty)
    total = 0
    t0 = time.perf_counter()
    async with ue.open_process(backend, req) as proc:
        async for event in proc.events():
            if isinstance(event, ue.OutputEvent):
                total += len(event.data)
            elif isinstance(event, ue.LostEvent):
                raise BenchmarkError(f"output lost: {event}")
        state = await proc.wait()
    elapsed = time.perf_counter() - t0
    _check_state("head", state)
    if total != nbytes:
        raise BenchmarkError(f"head: got {total} bytes of {nbytes}")
    return nbytes / MIB / elapsed


async def spawn(backend: ue.RemoteExecBackend) -> float:
    """ms from process/start of /bin/true until it is closed."""
    t0 = time.perf_counter()
    async with ue.open_process(backend, ue.ExecRequest(["/bin/true"])) as proc:
        state = await proc.wait()
    elapsed = (time.perf_counter() - t0) * 1e3
    _check_state("/bin/true", state)
    return elapsed


class Echo:
    """One long-lived ``cat`` per backend: trip() is one 32-byte round trip."""

    def __init__(self, proc: ue.UnifiedExecProcess) -> None:
        self.proc = proc
        self.cursor = 0

    async def trip(self) -> float:
        t0 = time.perf_counter()
        status = await self.proc.write(LINE)
        if status is not ue.WriteStatus.ACCEPTED:
            raise BenchmarkError(f"write: {status}")
        got = b""
        while len(got) < len(LINE):
            res = await self.proc.read(after_seq=self.cursor, wait=_READ_WAIT)
            if not res.chunks:
                raise BenchmarkError("round trip: no echo")
            self.cursor = res.cursor
            got += b"".join(c.data for c in res.chunks)
        elapsed = (time.perf_counter() - t0) * 1e6
        if got != LINE:
            raise BenchmarkError(f"round trip: echoed {got!r}")
        return elapsed


async def concurrency(backend: ue.RemoteExecBackend, count: int) -> float:
    """ms until ``count`` x ``/bin/echo hi`` started at once are all closed."""
    results: list[tuple[ue.ProcessState, bytes]] = []

    async def one() -> None:
        out = bytearray()
        async with ue.open_process(backend, ue.ExecRequest(["/bin/echo", "hi"])) as proc:
            async for event in proc.events():
                if isinstance(event, ue.OutputEvent):
                    out += event.data
            state = await proc.wait()
        results.append((state, bytes(out)))

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    elapsed = (time.perf_counter() - t0) * 1e3
    if len(results) != count:
        raise BenchmarkError(f"{len(results)} of {count} echo processes finished")
    for state, out in results:
        _check_state("echo", state)
        if out != b"hi\n":
            raise BenchmarkError(f"echo printed {out!r}")
    return elapsed


# -- the run --------------------------------------------------------------------------


class Samples:
    """Per figure and server: samples, and rounds (one sample of every server)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}
        self.rounds: dict[str, list[dict[str, float]]] = {}
        # figure -> one dict per round: server -> this client's CPU s per job
        self.client_rounds: dict[str, list[dict[str, float]]] = {}
        # figure -> server -> [client CPU s, server tree CPU s, jobs], over the figure
        self.cpu: dict[str, dict[str, list[float]]] = {}

    def add_round(self, figure: str, got: dict[str, float]) -> None:
        self.rounds.setdefault(figure, []).append(got)
        for name, value in got.items():
            self.values.setdefault(figure, {}).setdefault(name, []).append(value)


async def _timed(what: str, job: Callable[[], Awaitable[float]]) -> float:
    with trio.fail_after(_RUN_BOUND):
        try:
            return await job()
        except trio.TooSlowError:
            raise
        except BenchmarkError as exc:
            raise BenchmarkError(f"{what}: {exc}") from None


async def round_robin(
    samples: Samples,
    figure: str,
    backends: dict[str, ue.RemoteExecBackend],
    job: Callable[[str, ue.RemoteExecBackend], Awaitable[float]],
    rounds: int,
    block: int = 1,
    pids: dict[str, int] | None = None,
) -> None:
    """``rounds`` rounds; in each, every server in turn does ``block`` jobs in a row
    (their median is the round's sample).

    With ``pids`` (server -> pid), CPU is added up too: this client's for each block
    (``time.process_time``), and each server's process tree over the whole figure
    (/proc, read before the first block and after the last one has settled, so a
    tail a server leaves after a job, codex's helpers, still counts for it). The
    client's own CPU per job is a floor under the job's time that no server can go
    below, whatever it does.

    In a row, not interleaved: a codex start leaves work behind it (its helper
    processes, ~6 ms of CPU each, end after the process is reported closed), and a
    job run right after it shares the two cores with that tail. Interleaving one
    job per server made our starts look 1.5x slower than the same starts run on
    their own; in a row, only a block's first job meets another server's tail, and
    the median leaves it out.
    """
    order = list(backends)
    server0 = {} if pids is None else {name: tree_cpu_s(pids[name]) for name in order}
    client_rounds = samples.client_rounds.setdefault(figure, [])
    for r in range(rounds):
        got: dict[str, list[float]] = {name: [] for name in order}
        client_round: dict[str, float] = {}
        # Rotate who goes first, so none always runs right after another's tail.
        turn = order[r % len(order) :] + order[: r % len(order)]
        for name in turn:
            client0 = time.process_time()
            for _ in range(block):
                run = functools.partial(job, name, backends[name])
                got[name].append(await _timed(f"{figure}/{name}", run))
            client_round[name] = (time.process_time() - client0) / block
        samples.add_round(figure, {n: statistics.median(v) for n, v in got.items()})
        client_rounds.append(client_round)
    if pids is not None:
        await trio.sleep(_CPU_SETTLE)
        samples.cpu[figure] = {
            name: [
                sum(c[name] for c in client_rounds) * block,
                tree_cpu_s(pids[name]) - server0[name],
                rounds * block,
            ]
            for name in order
        }


async def idle_rss(argv: list[str], env: dict[str, str], settle: float) -> tuple[float, float]:
    """(fresh, after one client) resident MiB of a websocket server and its children."""
    async with ws_server(argv, env) as (url, pid):
        await trio.sleep(settle)
        fresh = tree_rss_mib(pid)
        async with (
            ue.RemoteExecBackend.connect(url) as backend,
            ue.open_process(backend, ue.ExecRequest(["/bin/true"])) as proc,
        ):
            _check_state("/bin/true", await proc.wait())
        await trio.sleep(settle)
        return fresh, tree_rss_mib(pid)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    binaries = {v: codex_binary(v) for v in args.codex}
    home = tempfile.mkdtemp(prefix="codex-home-")
    codex_env = {**os.environ, "CODEX_HOME": home}
    ours_env = dict(os.environ)
    ours = [sys.executable, "-m", "unified_exec", "serve"]
    servers: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
        "ours": (ours, ours_env, ["--ws-auth", "none"]),
        **{f"codex-{v}": ([b, "exec-server"], codex_env, []) for v, b in binaries.items()},
    }
    samples = Samples()
    t_start = time.perf_counter()
    async with AsyncExitStack() as stack:
        by_transport: dict[str, dict[str, ue.RemoteExecBackend]] = {t: {} for t in TRANSPORTS}
        pids: dict[str, dict[str, int]] = {t: {} for t in TRANSPORTS}  # the servers' pids
        for name, (argv, env, ws_flags) in servers.items():
            url, pids["ws"][name] = await stack.enter_async_context(
                ws_server([*argv, "--listen", "ws://127.0.0.1:0", *ws_flags], env)
            )
            by_transport["ws"][name] = await stack.enter_async_context(
                ue.RemoteExecBackend.connect(url)
            )
            before = child_pids()
            by_transport["stdio"][name] = await stack.enter_async_context(
                ue.RemoteExecBackend.connect_stdio([*argv, "--listen", "stdio"], env=env)
            )
            started = child_pids() - before
            if len(started) != 1:
                raise BenchmarkError(f"cannot tell the stdio server's pid: {sorted(started)}")
            pids["stdio"][name] = started.pop()
        for backends in by_transport.values():
            for backend in backends.values():  # warm-up: imports, first spawn
                await spawn(backend)
                await throughput(backend, MIB, tty=False)
        for transport, backends in by_transport.items():
            for tty in (False, True):
                if f"throughput_{'tty' if tty else 'pipe'}" not in args.figures:
                    continue
                nbytes = args.tty_bytes if tty else args.bytes
                figure = f"throughput_{'tty' if tty else 'pipe'}/{transport}"

                async def tp(_n: str, b: ue.RemoteExecBackend, nb: int = nbytes, t: bool = tty):
                    return await throughput(b, nb, t)

                await round_robin(samples, figure, backends, tp, args.runs, pids=pids[transport])
        for transport, backends in by_transport.items():
            if "spawn" not in args.figures:
                break

            async def sp(_n: str, b: ue.RemoteExecBackend) -> float:
                return await spawn(b)

            await round_robin(
                samples, f"spawn/{transport}", backends, sp, args.spawns // 10, 10, pids[transport]
            )
        for transport, backends in by_transport.items():
            if "roundtrip" not in args.figures:
                break
            echoes: dict[str, Echo] = {}
            for name, backend in backends.items():
                req = ue.ExecRequest(["cat"], pipe_stdin=True)
                proc = await stack.enter_async_context(ue.open_process(backend, req))
                echoes[name] = Echo(proc)
                for _ in range(5):  # warm-up
                    await echoes[name].trip()

            async def rt(n: str, _b: Any, echoes: dict[str, Echo] = echoes) -> float:
                return await echoes[n].trip()

            figure = f"roundtrip/{transport}"
            await round_robin(samples, figure, backends, rt, args.trips // 10, 10, pids[transport])
            for echo in echoes.values():
                await echo.proc.terminate()
        for transport, backends in by_transport.items():
            if "concurrency" not in args.figures:
                break

            async def cc(_n: str, b: ue.RemoteExecBackend) -> float:
                return await concurrency(b, args.concurrency)

            await round_robin(
                samples, f"concurrency/{transport}", backends, cc, args.rounds, pids=pids[transport]
            )
    rss: dict[str, dict[str, float]] = {}
    for name, (argv, env, ws_flags) in servers.items():
        if "idle_rss" not in args.figures:
            break
        fresh, used = await idle_rss([*argv, "--listen", "ws://127.0.0.1:0", *ws_flags], env, 1.0)
        rss[name] = {"fresh": fresh, "after_one_client": used}
    total = time.perf_counter() - t_start
    return report(args, samples, rss, total)


HIGHER_IS_BETTER = {"throughput_pipe": True, "throughput_tty": True}
UNITS = {"throughput_pipe": "MiB/s", "throughput_tty": "MiB/s", "spawn": "ms",
         "roundtrip": "µs", "concurrency": "ms"}  # fmt: skip
TARGETS = {  # ratio ours/codex (throughput: ours/codex of MiB/s, higher is better)
    "throughput_pipe": ">= 3", "throughput_tty": ">= 1.5", "roundtrip": "<= 0.7",
    "spawn": "<= 0.3", "concurrency": "<= 0.2", "idle_rss": "<= 1.0",
}  # fmt: skip


def report(
    args: argparse.Namespace, samples: Samples, rss: dict[str, dict[str, float]], total: float
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for figure, per_server in samples.values.items():
        for name, values in per_server.items():
            results[f"{figure}/{name}"] = summarize(values)
        metric = figure.split("/")[0]
        for codex in (n for n in per_server if n != "ours"):
            per_round = [r["ours"] / r[codex] for r in samples.rounds[figure]]
            ratios[f"{figure}: ours/{codex}"] = {
                "median_of_round_ratios": statistics.median(per_round),
                "ratio_of_medians": (
                    statistics.median(per_server["ours"]) / statistics.median(per_server[codex])
                ),
                "round_ratios": per_round,
                "ours": statistics.median(per_server["ours"]),
                "baseline": statistics.median(per_server[codex]),
                "unit": UNITS[metric],
                "higher_is_better": HIGHER_IS_BETTER.get(metric, False),
                "target": TARGETS[metric],
            }
    cpu = _cpu_report(args, samples)
    for key, bound in cpu.pop("bounds").items():
        if key in ratios:
            ratios[key]["client_bound"] = bound
    for codex in (n for n in rss if n != "ours"):
        ratios[f"idle_rss/ws: ours/{codex}"] = {
            "median_of_round_ratios": rss["ours"]["after_one_client"]
            / rss[codex]["after_one_client"],
            "fresh_ratio": rss["ours"]["fresh"] / rss[codex]["fresh"],
            "ours": rss["ours"]["after_one_client"],
            "baseline": rss[codex]["after_one_client"],
            "unit": "MiB",
            "higher_is_better": False,
            "target": TARGETS["idle_rss"],
        }
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "settings": vars(args),
        "seconds": round(total, 1),
        "results": results,
        "idle_rss_mib": rss,
        "cpu": cpu,
        "ratios": ratios,
    }


_PER_JOB = {"spawn": 1e3, "concurrency": 1e3, "roundtrip": 1e6}  # s -> the figure's unit


def _cpu_report(args: argparse.Namespace, samples: Samples) -> dict[str, Any]:
    """CPU per job of the client and of each server's tree, and for each ratio the
    best it could be if the server took no time at all: in each round, the client's
    own CPU per job in ours' block against codex's job in that round, the median of
    those (as for the ratio itself). A target beyond that bound cannot be met by any
    server driven by this client."""
    out: dict[str, Any] = {"bounds": {}}
    for figure, per_server in samples.cpu.items():
        metric = figure.split("/")[0]
        throughput = metric.startswith("throughput")
        if throughput:  # per MiB streamed, ms
            mib = (args.tty_bytes if metric.endswith("tty") else args.bytes) / MIB
            scale, unit = 1e3 / mib, "ms per MiB"
        else:
            scale, unit = _PER_JOB[metric], UNITS[metric]
        out[figure] = {
            name: {
                "client_per_job": client / jobs * scale,
                "server_per_job": server / jobs * scale,
                "jobs": jobs,
                "unit": f"CPU {unit}",
            }
            for name, (client, server, jobs) in per_server.items()
        }
        if "ours" not in per_server:
            continue
        for codex in (n for n in per_server if n != "ours"):
            per_round = []
            rounds = zip(samples.client_rounds[figure], samples.rounds[figure], strict=True)
            for cpu, got in rounds:
                if cpu["ours"] <= 0:
                    continue
                if throughput:  # the MiB/s this client alone could take
                    per_round.append(mib / cpu["ours"] / got[codex])
                else:
                    per_round.append(cpu["ours"] * scale / got[codex])
            if per_round:
                out["bounds"][f"{figure}: ours/{codex}"] = statistics.median(per_round)
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bytes", type=int, default=None, help="bytes per pipe throughput run")
    parser.add_argument("--tty-bytes", type=int, default=None, help="bytes per tty run")
    parser.add_argument("--runs", type=int, default=None, help="throughput rounds")
    parser.add_argument("--spawns", type=int, default=None)
    parser.add_argument("--trips", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=None, help="concurrency rounds")
    parser.add_argument("--codex", nargs="*", default=list(CODEX_VERSIONS))
    parser.add_argument("--figures", nargs="*", default=list(FIGURES), choices=FIGURES)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "remote.json"))
    args = parser.parse_args()
    quick = args.quick
    args.bytes = args.bytes or (16 * MIB if quick else 256 * MIB)
    args.tty_bytes = args.tty_bytes or (4 * MIB if quick else 256 * MIB)
    args.runs = args.runs or (1 if quick else 3)
    args.spawns = args.spawns or (10 if quick else 100)
    args.trips = args.trips or (20 if quick else 300)
    args.rounds = args.rounds or (1 if quick else 5)
    report_ = trio.run(main, args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report_, indent=2) + "\n")
    for key, summary in report_["results"].items():
        lo, hi = summary["min"], summary["max"]
        print(f"{key:40s} median {summary['median']:10.2f}  min-max {lo:.2f}-{hi:.2f}")
    for name, r in report_["idle_rss_mib"].items():
        print(f"{'idle_rss/' + name:40s} fresh {r['fresh']:6.1f} MiB  after a client "
              f"{r['after_one_client']:6.1f} MiB")  # fmt: skip
    for figure, per_server in report_["cpu"].items():
        for name, c in per_server.items():
            print(f"{'cpu ' + figure + '/' + name:40s} client {c['client_per_job']:9.2f}  "
                  f"server {c['server_per_job']:9.2f}  ({c['unit']})")  # fmt: skip
    for key, r in report_["ratios"].items():
        bound = r.get("client_bound")
        alone = "" if bound is None else f"; the client alone: {bound:.2f}x"
        print(f"{key:48s} {r['median_of_round_ratios']:6.2f}x  (target {r['target']}{alone})")
    print(f"total {report_['seconds']} s")


if __name__ == "__main__":
    cli()
