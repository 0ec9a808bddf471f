"""Scale figure for PoolBackend: one client, many processes over many exec-servers.

Loopback addresses 127.0.0.2.. stand in for pods. Each server is a real
``unified-exec serve`` subprocess; each process is ``sh -c 'read x; echo ok $x'``
kept live until the client writes to it. Mid-run one server is SIGKILLed: its
processes must fail (transport lost), its children must die (the warden; checked by
scanning /proc for a marker in the children's environment), and every other process
must finish intact after it is written to.

    python benchmarks/pool_scale.py                      # 16 servers x 1000 processes
    python benchmarks/pool_scale.py --servers 4 --procs 40 --output /tmp/x.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import trio

import unified_exec as ue
from unified_exec._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent
from unified_exec.backends.pool import PoolBackend

RESULTS = Path(__file__).resolve().parent / "results" / "pool-scale.json"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def start_servers(n: int) -> list[tuple[subprocess.Popen[bytes], str]]:
    """``n`` exec-servers on 127.0.0.2.. (ports picked by the kernel)."""
    servers = []
    for i in range(n):
        proc = subprocess.Popen(
            [sys.executable, "-m", "unified_exec", "serve", "--ws-auth", "none",
             "--listen", f"ws://127.0.0.{2 + i}:0", "--log-level", "WARNING"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        servers.append((proc, proc.stdout.readline().decode().strip()))
    return servers


def stop_servers(servers: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    for proc, _ in servers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in servers:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def marked_pids(run_id: str, process_ids: set[str]) -> list[int]:
    """Live processes whose environment carries this run's marker for ``process_ids``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"UE_POOL_RUN={run_id}".encode() not in env:
            continue
        for item in env:
            if item.startswith(b"UE_POOL_PID=") and item[12:].decode() in process_ids:
                found.append(int(entry))
    return found


async def run(n_servers: int, n_procs: int, *, kill: bool = True) -> dict[str, Any]:
    servers = start_servers(n_servers)
    run_id = uuid.uuid4().hex[:12]
    result: dict[str, Any] = {"servers": n_servers, "processes": n_procs}
    try:
        urls = [url for _, url in servers]
        outcome: dict[str, tuple[str, bytes, int | None]] = {}
        handles: dict[str, Any] = {}
        async with PoolBackend.connect(urls, wait_for=n_servers, connect_timeout=30) as pool:

            async def watch(handle: Any) -> None:
                out, code, status = b"", None, "open"
                async for event in handle.events():
                    if isinstance(event, OutputEvent):
                        out += event.data
                    elif isinstance(event, ExitedEvent):
                        code = event.exit_code
                    elif isinstance(event, ClosedEvent):
                        status = "closed"
                    elif isinstance(event, FailedEvent):
                        status = "failed"
                outcome[handle.process_id] = (status, out, code)

            async with trio.open_nursery() as nursery:
                t0 = time.perf_counter()
                limiter = trio.CapacityLimiter(64)

                async def one(i: int) -> None:
                    async with limiter:
                        pid = f"p{i:05d}"
                        req = ue.ExecRequest(
                            argv=["sh", "-c", 'read x; echo "ok $x"'],
                            env={**ENV, "UE_POOL_RUN": run_id, "UE_POOL_PID": pid},
                            pipe_stdin=True, process_id=pid,
                        )  # fmt: skip
                        handle = await pool.start(req)
                        handles[pid] = handle
                        nursery.start_soon(watch, handle)

                async with trio.open_nursery() as starters:
                    for i in range(n_procs):
                        starters.start_soon(one, i)
                elapsed = time.perf_counter() - t0
                result["start_seconds"] = round(elapsed, 3)
                result["starts_per_second"] = round(n_procs / elapsed, 1)
                spread = {s.url: s.live for s in pool.servers}
                result["spread"] = spread
                result["spread_min_max"] = [min(spread.values()), max(spread.values())]
                print(f"{n_procs} starts over {n_servers} servers in {elapsed:.2f} s"
                      f" = {n_procs / elapsed:.0f}/s; per server {min(spread.values())}"
                      f"..{max(spread.values())}")  # fmt: skip

                victims: set[str] = set()
                if kill:
                    proc, url = servers[0]
                    victims = {pid for pid in handles if pool.server_for(pid) == url}
                    # One /proc scan can miss a child (a read that races its exec, or a
                    # scan under load): look again, bounded, before calling it missing.
                    before = len(marked_pids(run_id, victims))
                    with trio.move_on_after(5):
                        while before < len(victims):
                            await trio.sleep(0.05)
                            before = len(marked_pids(run_id, victims))
                    t1 = time.perf_counter()
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    with trio.move_on_after(30):
                        while not all(outcome.get(v, ("",))[0] == "failed" for v in victims):
                            await trio.sleep(0.05)
                    result["victims"] = len(victims)
                    result["victim_children_before_kill"] = before
                    result["victims_failed"] = sum(
                        outcome.get(v, ("",))[0] == "failed" for v in victims
                    )
                    result["fail_seconds"] = round(time.perf_counter() - t1, 3)
                    with trio.move_on_after(10):
                        while marked_pids(run_id, victims):
                            await trio.sleep(0.1)
                    result["victim_children_alive"] = len(marked_pids(run_id, victims))
                    healthy = [s for s in pool.servers if s.healthy]
                    result["healthy_after_kill"] = len(healthy)

                async def finish(pid: str) -> None:
                    async with limiter:
                        await handles[pid].write(b"go\n")

                async with trio.open_nursery() as writers:
                    for pid in handles:
                        if pid not in victims:
                            writers.start_soon(finish, pid)
                with trio.move_on_after(60):
                    while len(outcome) < len(handles):
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        survivors = [
            p for p, (status, out, code) in outcome.items()
            if p not in victims and status == "closed" and code == 0 and out == b"ok go\n"
        ]  # fmt: skip
        result["survivors_intact"] = len(survivors)
        result["expected_survivors"] = n_procs - len(victims)
        print(f"killed server: {len(victims)} processes, {result.get('victims_failed')} failed"
              f" in {result.get('fail_seconds')} s, children alive"
              f" {result.get('victim_children_alive')}; survivors intact"
              f" {len(survivors)}/{n_procs - len(victims)}")  # fmt: skip
    finally:
        stop_servers(servers)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=16)
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-kill", action="store_true")
    args = parser.parse_args()
    result = trio.run(functools.partial(run, args.servers, args.procs, kill=not args.no_kill))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
