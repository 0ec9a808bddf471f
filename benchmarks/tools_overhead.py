"""What the agent-tool layer costs: ``exec_command("true")`` against the same
command run on ``LocalPtyBackend`` directly (issue 12: target ≤ 1.3x).

    python benchmarks/tools_overhead.py           # full run (about a minute on 2 cores)
    python benchmarks/tools_overhead.py --quick   # smoke run (a few seconds)

Every variant runs the same child — ``[shell, "-c", "true"]`` with the manager's
environment (Codex's forced variables over ours) and cwd — so the difference is the
tool layer alone: argument checks, session ids, the session's feeder task, the
collect/drain of the output and the model-visible text.

- ``exec_command`` — ``await mgr.exec_command("true")`` until it returns (the
  process has exited and its output was drained); ``exec_command_tty`` the same
  with ``tty=True``.
- ``backend_direct`` — the baseline: ``LocalPtyBackend.start()`` and the handle's
  ``events()`` consumed until the closed event; ``backend_direct_tty`` on a PTY.
- ``process_api`` — in between, for the record: ``UnifiedExecProcess.start`` +
  ``wait()`` + ``read()``.

All variants share one trio run and one backend, and run round-robin one call at a
time (the order rotating every round), so drift on a shared machine hits them alike.
Each call is checked (exit code 0, no output, no failure), never its timing. A
wall-clock budget bounds the run. Results: medians, p90, min/max, raw samples and
the ratios of the medians, in ``benchmarks/results/tools-overhead.json``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import unified_exec as ue
from _stats import machine_info, summarize, versions
from unified_exec.tools import UnifiedExecManager, apply_unified_exec_env, open_manager

RESULTS = Path(__file__).resolve().parent / "results" / "tools-overhead.json"
TARGET = 1.3  # issue 12: exec_command("true") ≤ 1.3x LocalPtyBackend direct

# name -> (full default, --quick default)
PRESETS: dict[str, tuple[int, int]] = {"rounds": (300, 20), "warmup": (20, 3)}
BUDGET_S: dict[bool, float] = {False: 240.0, True: 60.0}  # quick -> seconds

Variant = Callable[[], Awaitable[None]]


class BenchmarkError(RuntimeError):
    """The work was not done right: the figure would be meaningless."""


def _check(what: str, state: ue.ProcessState, output: bytes | str) -> None:
    if state.failure_message is not None or state.exit_code != 0 or output:
        raise BenchmarkError(f"{what}: {state}, output {output!r}")


def variants(mgr: UnifiedExecManager, backend: ue.LocalPtyBackend) -> dict[str, Variant]:
    argv = mgr.command_argv("true")
    env = apply_unified_exec_env(dict(ue.describe_backend(backend).default_env))
    cwd = mgr.cwd

    async def exec_command() -> None:
        out = await mgr.exec_command("true")
        if out.exit_code != 0 or out.output or out.session_id is not None:
            raise BenchmarkError(f"exec_command: {out!r}")

    async def exec_command_tty() -> None:
        out = await mgr.exec_command("true", tty=True)
        if out.exit_code != 0 or out.output or out.session_id is not None:
            raise BenchmarkError(f"exec_command tty: {out!r}")

    async def direct(tty: bool) -> None:
        handle = await backend.start(ue.ExecRequest(argv=argv, cwd=cwd, env=env, tty=tty))
        state = ue.ProcessState()
        data = b""
        async for event in handle.events():
            if isinstance(event, ue.OutputEvent):
                data += event.data
            elif isinstance(event, ue.ExitedEvent):
                state = state.exited(event.exit_code)
            elif isinstance(event, ue.FailedEvent):
                state = state.failed(event.message)
        _check("backend direct", state, data)

    async def backend_direct() -> None:
        await direct(False)

    async def backend_direct_tty() -> None:
        await direct(True)

    async def process_api() -> None:
        request = ue.ExecRequest(argv=argv, cwd=cwd, env=env)
        async with ue.open_process(backend, request) as proc:
            state = await proc.wait()
            res = await proc.read()
        _check("process api", state, b"".join(c.data for c in res.chunks))

    return {
        "exec_command": exec_command,
        "backend_direct": backend_direct,
        "process_api": process_api,
        "exec_command_tty": exec_command_tty,
        "backend_direct_tty": backend_direct_tty,
    }


KIND = {
    "exec_command": "ours",
    "exec_command_tty": "ours",
    "process_api": "ours",
    "backend_direct": "baseline",
    "backend_direct_tty": "baseline",
}
RATIOS = {  # name -> (ours, baseline, target)
    "exec_command/backend_direct": ("exec_command", "backend_direct", TARGET),
    "exec_command_tty/backend_direct_tty": ("exec_command_tty", "backend_direct_tty", TARGET),
    "process_api/backend_direct": ("process_api", "backend_direct", None),
}


async def measure(rounds: int, warmup: int, budget: float) -> tuple[dict[str, list[float]], bool]:
    """Samples (ms) per variant, round-robin; True if the budget cut the run short."""
    deadline = time.monotonic() + budget
    async with ue.LocalPtyBackend() as backend:
        options: dict[str, Any] = {"allow_login_shell": False, "deterministic_ids": True}
        async with open_manager(backend, **options) as mgr:
            table = variants(mgr, backend)
            names = list(table)
            samples: dict[str, list[float]] = {n: [] for n in names}
            for i in range(warmup + rounds):
                if time.monotonic() > deadline and i > warmup:
                    return samples, True
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    gc.collect()
                    t0 = time.perf_counter()
                    await table[name]()
                    elapsed = (time.perf_counter() - t0) * 1e3
                    if i >= warmup:
                        samples[name].append(elapsed)
            return samples, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few rounds")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--budget", type=float, help="seconds the measuring may take")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--silent", action="store_true")
    args = ap.parse_args(argv)
    pick = 1 if args.quick else 0
    rounds = args.rounds or PRESETS["rounds"][pick]
    warmup = args.warmup if args.warmup is not None else PRESETS["warmup"][pick]
    budget = args.budget or BUDGET_S[args.quick]

    started = datetime.datetime.now(datetime.UTC)
    samples, cut = trio.run(measure, rounds, warmup, budget)
    results: dict[str, Any] = {
        "benchmark": "tools_overhead",
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "cut_short_by_budget": cut,
        "unit": "ms",
        "machine": machine_info(),
        "versions": versions(),
        "variants": {
            name: {"kind": KIND[name], **summarize(values), "samples": values}
            for name, values in samples.items()
        },
        "ratios": {},
    }
    for label, (ours, baseline, target) in RATIOS.items():
        ratio = results["variants"][ours]["median"] / results["variants"][baseline]["median"]
        results["ratios"][label] = {
            "ratio": ratio,
            "target": target,
            "met": None if target is None else ratio <= target,
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if not args.silent:
        print(f"{'variant':<22}{'median ms':>10}{'p90 ms':>10}{'n':>6}")
        for name, v in results["variants"].items():
            print(f"{name:<22}{v['median']:>10.3f}{v['p90']:>10.3f}{v['n']:>6}")
        for label, r in results["ratios"].items():
            goal = "" if r["target"] is None else f"  (target ≤ {r['target']}x)"
            print(f"{label:<38}{r['ratio']:>6.2f}x{goal}")
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
