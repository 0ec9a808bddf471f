"""Our exec-server against the real codex exec-server 0.169.0, in one run.

    python benchmarks/remote.py            # full run
    python benchmarks/remote.py --quick    # smoke test

Both servers are driven by the same client (RemoteExecBackend) over the same
transport, alternating run by run, so the ratio ours/codex is what matters:

- throughput: one ``head -c N /dev/zero`` streamed as process/output notifications
  (pipes and tty), MiB/s, byte count checked;
- spawn: process/start of /bin/true until closed, ms;
- roundtrip: process/write of a 32-byte line to ``cat`` until its echo is back, µs.

Results go to benchmarks/results/remote.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import unified_exec as ue
from _stats import machine_info, summarize, versions

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
LINE = b"unified_exec round-trip probe!!\n"

Factory = Callable[[], AbstractAsyncContextManager[ue.RemoteExecBackend]]


def codex_binary() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-codex.sh")],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


@asynccontextmanager
async def ws_server(argv: list[str], env: dict[str, str]) -> AsyncIterator[str]:
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        assert proc.stdout is not None
        first = b""
        with trio.fail_after(30):
            while b"\n" not in first:
                first += await proc.stdout.receive_some(4096)
        yield first.split(b"\n")[0].decode().strip()
    finally:
        proc.terminate()
        await proc.wait()


async def throughput(factory: Factory, nbytes: int, tty: bool) -> float:
    async with factory() as backend:
        t0 = time.perf_counter()
        total = 0
        req = ue.ExecRequest(["head", "-c", str(nbytes), "/dev/zero"], tty=tty)
        async with ue.open_process(backend, req) as proc:
            async for event in proc.events():
                if isinstance(event, ue.OutputEvent):
                    total += len(event.data)
        elapsed = time.perf_counter() - t0
    assert total == nbytes, (total, nbytes)
    return nbytes / MIB / elapsed


async def spawn(factory: Factory, iterations: int) -> list[float]:
    out = []
    async with factory() as backend:
        for _ in range(iterations):
            t0 = time.perf_counter()
            async with ue.open_process(backend, ue.ExecRequest(["/bin/true"])) as proc:
                await proc.wait()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


async def roundtrip(factory: Factory, trips: int) -> list[float]:
    out = []
    async with factory() as backend:
        req = ue.ExecRequest(["cat"], pipe_stdin=True)
        async with ue.open_process(backend, req) as proc:
            cursor = 0
            for _ in range(trips):
                t0 = time.perf_counter()
                await proc.write(LINE)
                got = b""
                while len(got) < len(LINE):
                    res = await proc.read(after_seq=cursor, wait=5)
                    cursor = res.next_seq - 1
                    got += b"".join(c.data for c in res.chunks)
                out.append((time.perf_counter() - t0) * 1e6)
            await proc.terminate()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    codex = codex_binary()
    home = tempfile.mkdtemp(prefix="codex-home-")
    codex_env = {**os.environ, "CODEX_HOME": home}
    ours = [sys.executable, "-m", "unified_exec", "serve"]
    results: dict[str, Any] = {}
    async with (
        ws_server([*ours, "--listen", "ws://127.0.0.1:0"], dict(os.environ)) as ours_url,
        ws_server([codex, "exec-server", "--listen", "ws://127.0.0.1:0"], codex_env) as cx_url,
    ):
        servers: dict[str, Factory] = {
            "ours_stdio": lambda: ue.RemoteExecBackend.connect_stdio([*ours, "--listen", "stdio"]),
            "codex_stdio": lambda: ue.RemoteExecBackend.connect_stdio(
                [codex, "exec-server", "--listen", "stdio"], env=codex_env
            ),
            "ours_ws": lambda: ue.RemoteExecBackend.connect(ours_url),
            "codex_ws": lambda: ue.RemoteExecBackend.connect(cx_url),
        }
        samples: dict[str, list[float]] = {}
        for _ in range(args.runs):  # alternate servers run by run
            for name, factory in servers.items():
                for tty in (False, True):
                    size = args.bytes if not tty else args.bytes // 4
                    key = f"throughput_{'tty' if tty else 'pipe'}/{name}"
                    samples.setdefault(key, []).append(await throughput(factory, size, tty))
        for name, factory in servers.items():
            samples[f"spawn/{name}"] = await spawn(factory, args.spawns)
            samples[f"roundtrip/{name}"] = await roundtrip(factory, args.trips)
        for key, values in samples.items():
            results[key] = summarize(values)
    ratios = {}
    for key in results:
        metric, name = key.split("/")
        if name.startswith("ours"):
            other = f"{metric}/codex{name[4:]}"
            ratios[f"{metric}/{name[5:]}: ours/codex"] = (
                results[key]["median"] / results[other]["median"]
            )
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "settings": vars(args),
        "results": results,
        "ratios": ratios,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bytes", type=int, default=None, help="bytes per throughput run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--spawns", type=int, default=None)
    parser.add_argument("--trips", type=int, default=None)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "remote.json"))
    args = parser.parse_args()
    quick = args.quick
    args.bytes = args.bytes or (16 * MIB if quick else 64 * MIB)
    args.runs = args.runs or (1 if quick else 3)
    args.spawns = args.spawns or (10 if quick else 100)
    args.trips = args.trips or (20 if quick else 200)
    report = trio.run(main, args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    for key, summary in report["results"].items():
        lo, hi = summary["min"], summary["max"]
        print(f"{key:36s} median {summary['median']:10.2f}  min-max {lo:.2f}-{hi:.2f}")
    for key, ratio in report["ratios"].items():
        print(f"{key:36s} {ratio:6.2f}x")


if __name__ == "__main__":
    cli()
