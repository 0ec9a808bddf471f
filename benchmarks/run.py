"""Benchmark unified_exec's LocalPtyBackend against baselines measured in the same run.

    python benchmarks/run.py            # full run (about 1 minute on 2 cores)
    python benchmarks/run.py --quick    # smoke test (a few seconds)

Four metrics (see perf-baselines.md for what they mean on these machines):

1. spawn: start /bin/true and wait until it is gone (ms).
2. throughput: read all of ``head -c N /dev/zero`` (MiB/s).
3. roundtrip: write a 32-byte line to ``cat`` and wait for it to come back (µs).
4. concurrency: 100 x ``/bin/echo hi`` started at once, until all are closed (ms).

Baselines and our variants are run round-robin in blocks, so drift on a shared
machine hits both alike. Results go to benchmarks/results/local.json (medians,
p90, min/max, raw samples and ratios ours/baseline of the medians); a short
table is printed. Only the work is checked (exit codes, byte counts), never the
timings.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _baselines as base
import _memory
import _ours as ours
from _stats import machine_info, summarize, versions

MIB = base.MIB
# What a default process keeps alive while it streams: the log's retention and the
# local queue (the retaining os.read reference keeps as much).
_RETAINED = 1024 * 1024 + 512 * 1024
LINE = b"unified_exec round-trip probe!!\n"  # 31 characters + newline = 32 bytes
assert len(LINE) == 32

METRICS = ("spawn", "throughput", "roundtrip", "concurrency", "memory")

# Issue 12's targets: metric -> ours variant -> (baseline, target ratio ours/baseline,
# "max" or "min"). The table, the chart and performance.md show these pairs.
TARGETS: dict[str, dict[str, tuple[str, float, str]]] = {
    "spawn": {
        "ours_pipe": ("subprocess_run", 1.3, "max"),
        "ours_tty": ("subprocess_run", 1.5, "max"),
    },
    "throughput": {
        "ours_pipe": ("pipe_osread", 0.7, "min"),
        "ours_tty": ("pty_osread", 0.9, "min"),
    },
    "roundtrip": {
        "ours_pipe": ("trio_pipe", 2.0, "max"),
        "ours_tty": ("pty_osrw_echo", 1.5, "max"),
    },
    "concurrency": {"ours_pipe": ("subprocess_popen", 1.2, "max")},
    "memory": {"ours_tty": ("ptyprocess", 1.5, "max")},
}

# name -> (full default, --quick default)
PRESETS: dict[str, tuple[int, int]] = {
    "spawn_iterations": (200, 20),
    "spawn_warmup": (20, 3),
    "throughput_bytes": (256 * MIB, 64 * MIB),
    "throughput_runs": (5, 2),
    "throughput_warmup": (1, 1),
    "roundtrip_trips": (1000, 100),
    "roundtrip_warmup": (50, 10),
    "concurrency": (100, 100),
    "concurrency_rounds": (5, 2),
    "concurrency_warmup": (1, 1),
    # 256: with 64, a fresh interpreter's free heap (left by its imports) could hold
    # most of a light controller's sessions without growing RSS (ptyprocess read
    # 1.3-2.9 KiB per session at 64 and 7.5 at 256 on the same host).
    "memory_sessions": (256, 4),
    "memory_rounds": (3, 1),
    "blocks": (4, 2),
}


# -- variants ----------------------------------------------------------------------


class Variant:
    """One way of doing a metric's work; ``measure(block_args)`` returns samples."""

    def __init__(
        self,
        name: str,
        kind: str,
        label: str,
        measure: Callable[..., list[float]],
        compare: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.kind = kind  # "baseline" or "ours"
        self.label = label
        self.measure = measure
        # For ours: the baselines it is compared with; the first one is in the table.
        self.compare = compare


def _split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal non-negative counts."""
    parts = max(1, min(parts, total)) if total > 0 else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def round_robin(
    variants: Sequence[Variant], blocks: Sequence[Any], progress: Callable[[str], None]
) -> dict[str, list[float]]:
    """Run every variant once per block, rotating the order from block to block.

    Also records each variant's median per block (key ``"<name>@blocks"``), so a
    ratio can be taken within each block, where drift hits both sides alike.
    """
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for v in variants:
        samples[v.name + "@blocks"] = []
    for i, block in enumerate(blocks):
        k = i % len(variants)
        for v in [*variants[k:], *variants[:k]]:
            progress(f"{v.name} [{i + 1}/{len(blocks)}]")
            got = v.measure(block)
            samples[v.name].extend(got)
            samples[v.name + "@blocks"].append(statistics.median(got))
    return samples


def _ours(fn: Callable[..., Any], *args: Any) -> Callable[[Any], list[float]]:
    """A measure() that runs ``fn(backend, *args, *block)`` in its own trio.run."""

    def measure(block: Any) -> list[float]:
        result = ours.run(fn, *args, *block)
        return result if isinstance(result, list) else [result]

    return measure


# -- the four metrics ----------------------------------------------------------------


def spawn_metric(cfg: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    blocks = [
        (n, max(1, cfg.spawn_warmup // cfg.blocks))
        for n in _split(cfg.spawn_iterations, cfg.blocks)
    ]
    blocks[0] = (blocks[0][0], cfg.spawn_warmup)

    def sync(fn: Callable[[], None]) -> Callable[[Any], list[float]]:
        return lambda block: base.timed_loop_ms(fn, *block)

    variants = [
        Variant("subprocess_run", "baseline", "subprocess.run", sync(base.spawn_subprocess_run)),
        Variant(
            "posix_spawn", "baseline", "os.posix_spawn + waitpid", sync(base.spawn_posix_spawn)
        ),
        Variant(
            "openpty_popen",
            "baseline",
            "openpty + Popen(new session), read to EIO, wait",
            sync(base.spawn_openpty_popen),
        ),
        Variant(
            "ptyprocess",
            "baseline",
            "ptyprocess spawn, read to EOF, wait (delayafterclose=0)",
            sync(base.spawn_ptyprocess),
        ),
        Variant(
            "trio_run_process",
            "baseline",
            "trio.run_process (the floor of a trio-based spawn)",
            lambda block: base.spawn_trio_run_process(*block),
        ),
        Variant(
            "ours_pipe",
            "ours",
            "open_process + wait(), tty=False",
            _ours(ours.spawn_ms, False),
            compare=("subprocess_run", "posix_spawn", "trio_run_process"),
        ),
        Variant(
            "ours_tty",
            "ours",
            "open_process + wait(), tty=True",
            _ours(ours.spawn_ms, True),
            compare=("subprocess_run", "openpty_popen", "ptyprocess"),
        ),
    ]
    return {
        "title": "spawn + exit of /bin/true (until closed)",
        "unit": "ms",
        "higher_is_better": False,
        "params": {"iterations": cfg.spawn_iterations, "warmup": cfg.spawn_warmup},
        "variants": variants,
        "samples": round_robin(variants, blocks, progress),
    }


def throughput_metric(cfg: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    n = cfg.throughput_bytes
    variants = [
        Variant(
            "pipe_osread",
            "baseline",
            "pipe, os.read(fd, 65536)",
            lambda _b: [base.throughput_pipe_mib_s(n)],
        ),
        Variant(
            "pipe_osread_retaining",
            "baseline",
            "pipe, os.read(fd, 65536), keeping the newest 1.5 MiB (our retention + queue)",
            lambda _b: [base.throughput_pipe_retaining_mib_s(n, _RETAINED)],
        ),
        Variant(
            "pty_osread",
            "baseline",
            "PTY (openpty + Popen), os.read(master, 65536)",
            lambda _b: [base.throughput_pty_mib_s(n)],
        ),
        Variant(
            "trio_pty",
            "baseline",
            "PTY, trio FdStream on the master, receive_some(65536)",
            lambda _b: [base.throughput_trio_pty_mib_s(n)],
        ),
        Variant(
            "ours_pipe",
            "ours",
            "events(), tty=False",
            _ours(ours.throughput_mib_s, False, n),
            compare=("pipe_osread", "pipe_osread_retaining"),
        ),
        Variant(
            "ours_tty",
            "ours",
            "events(), tty=True",
            _ours(ours.throughput_mib_s, True, n),
            compare=("pty_osread", "trio_pty"),
        ),
    ]
    rounds = cfg.throughput_warmup + cfg.throughput_runs
    samples = round_robin(variants, [()] * rounds, progress)
    samples = {k: v[cfg.throughput_warmup :] for k, v in samples.items()}
    return {
        "title": f"throughput of head -c {n} /dev/zero ({n // MIB} MiB)",
        "unit": "MiB/s",
        "higher_is_better": True,
        "params": {"bytes": n, "runs": cfg.throughput_runs, "warmup": cfg.throughput_warmup},
        "variants": variants,
        "samples": samples,
    }


def roundtrip_metric(cfg: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    blocks = [
        (LINE, n, max(1, cfg.roundtrip_warmup // cfg.blocks))
        for n in _split(cfg.roundtrip_trips, cfg.blocks)
    ]
    variants = [
        Variant(
            "pipe_osrw",
            "baseline",
            "pipes, os.write / os.read",
            lambda block: base.roundtrip_pipe_us(*block),
        ),
        Variant(
            "trio_pipe",
            "baseline",
            "pipes, trio FdStream send_all / receive_some",
            lambda block: base.roundtrip_trio_pipe_us(*block),
        ),
        Variant(
            "pty_osrw_echo",
            "baseline",
            "PTY echo on, os.write / os.read (both copies)",
            lambda block: base.roundtrip_pty_us(*block),
        ),
        Variant(
            "trio_pty",
            "baseline",
            "PTY echo on, trio FdStream on the master (both copies)",
            lambda block: base.roundtrip_trio_pty_us(*block),
        ),
        Variant(
            "ours_pipe",
            "ours",
            "write + read(after_seq, wait), tty=False, pipe_stdin",
            _ours(ours.roundtrip_us, False),
            compare=("trio_pipe", "pipe_osrw"),
        ),
        Variant(
            "ours_tty",
            "ours",
            "write + read(after_seq, wait), tty=True, echo on (both copies)",
            _ours(ours.roundtrip_us, True),
            compare=("pty_osrw_echo", "trio_pty"),
        ),
    ]
    return {
        "title": f"round trip of a {len(LINE)}-byte line through cat",
        "unit": "µs",
        "higher_is_better": False,
        "params": {
            "trips": cfg.roundtrip_trips,
            "warmup_per_block": blocks[0][2],
            "line_bytes": len(LINE),
        },
        "variants": variants,
        "samples": round_robin(variants, blocks, progress),
    }


def concurrency_metric(cfg: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    count = cfg.concurrency
    variants = [
        Variant(
            "subprocess_popen",
            "baseline",
            f"Popen x {count}, then communicate() each",
            lambda _b: [base.concurrency_popen_ms(count)],
        ),
        Variant(
            "trio_run_process",
            "baseline",
            f"trio.run_process x {count} in one nursery, stdout captured",
            lambda _b: [base.concurrency_trio_ms(count)],
        ),
        Variant(
            "ours_pipe",
            "ours",
            f"{count} x open_process in one nursery, events() to closed",
            _ours(ours.concurrency_ms, count),
            compare=("subprocess_popen", "trio_run_process"),
        ),
    ]
    rounds = cfg.concurrency_warmup + cfg.concurrency_rounds
    samples = round_robin(variants, [()] * rounds, progress)
    samples = {k: v[cfg.concurrency_warmup :] for k, v in samples.items()}
    return {
        "title": f"{count} x /bin/echo hi at once, until all closed",
        "unit": "ms",
        "higher_is_better": False,
        "params": {
            "processes": count,
            "rounds": cfg.concurrency_rounds,
            "warmup": cfg.concurrency_warmup,
        },
        "variants": variants,
        "samples": samples,
    }


def memory_metric(cfg: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    count = cfg.memory_sessions
    variants = [
        Variant(
            "ptyprocess",
            "baseline",
            f"ptyprocess: {count} idle bash -i at their prompt (fresh interpreter)",
            lambda _b: [_memory.measure("ptyprocess", count)],
        ),
        Variant(
            "ours_tty",
            "ours",
            f"LocalPtyBackend: {count} idle bash -i at their prompt (fresh interpreter)",
            lambda _b: [_memory.measure("ours", count)],
            compare=("ptyprocess",),
        ),
    ]
    samples = round_robin(variants, [()] * cfg.memory_rounds, progress)
    return {
        "title": f"controller memory per idle PTY session ({count} x bash -i)",
        "unit": "KiB",
        "higher_is_better": False,
        "params": {"sessions": count, "rounds": cfg.memory_rounds},
        "variants": variants,
        "samples": samples,
    }


RUNNERS: dict[str, Callable[[argparse.Namespace, Callable[[str], None]], dict[str, Any]]] = {
    "spawn": spawn_metric,
    "throughput": throughput_metric,
    "roundtrip": roundtrip_metric,
    "concurrency": concurrency_metric,
    "memory": memory_metric,
}


# -- results -------------------------------------------------------------------------


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def finish_metric(raw: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Summaries per variant, and ratios ours/baseline of the medians."""
    variants: list[Variant] = raw["variants"]
    out_variants: dict[str, Any] = {}
    for v in variants:
        summary = {
            k: _round(x) if isinstance(x, float) else x
            for k, x in summarize(raw["samples"][v.name]).items()
        }
        out_variants[v.name] = {
            "kind": v.kind,
            "label": v.label,
            **summary,
            "samples": [_round(x) for x in raw["samples"][v.name]],
        }
    ratios: dict[str, float] = {}
    primary: dict[str, Any] = {}
    for v in variants:
        if v.kind != "ours":
            continue
        for b in v.compare:
            ratios[f"{v.name}/{b}"] = _round(
                out_variants[v.name]["median"] / out_variants[b]["median"]
            )
        out_variants[v.name]["compared_with"] = list(v.compare)
        if v.compare:
            b = v.compare[0]
            mine, theirs = raw["samples"][v.name + "@blocks"], raw["samples"][b + "@blocks"]
            paired = [o / t for o, t in zip(mine, theirs, strict=True) if t > 0]
            entry: dict[str, Any] = {
                "baseline": b,
                "ratio": ratios[f"{v.name}/{b}"],
                # median over blocks of (ours / baseline) within the same block
                "paired_ratio": _round(statistics.median(paired)) if paired else None,
                "blocks": len(paired),
            }
            target = TARGETS.get(raw["name"], {}).get(v.name)
            if target is not None and target[0] == b:
                entry["target"] = target[1]
                entry["target_kind"] = target[2]
                r = entry["paired_ratio"] or entry["ratio"]
                entry["met"] = r <= target[1] if target[2] == "max" else r >= target[1]
            primary[v.name] = entry
    return {
        "title": raw["title"],
        "unit": raw["unit"],
        "higher_is_better": raw["higher_is_better"],
        "ratio_meaning": "ours/baseline of medians; "
        + ("below" if raw["higher_is_better"] else "above")
        + " 1 means ours is slower",
        "params": raw["params"],
        "seconds": round(seconds, 2),
        "variants": out_variants,
        "ratios": ratios,
        "primary_ratios": primary,
    }


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(metrics: dict[str, Any]) -> str:
    header = ("metric", "variant", "unit", "median", "p90", "min-max", "ours/base")
    rows: list[tuple[str, ...]] = [header]
    for name, m in metrics.items():
        for vname, v in m["variants"].items():
            ratio = ", ".join(
                f"{m['ratios'][f'{vname}/{b}']:.2f}x {b}" for b in v.get("compared_with", ())
            )
            rows.append(
                (
                    name,
                    vname,
                    m["unit"],
                    _fmt(v["median"]),
                    _fmt(v["p90"]),
                    f"{_fmt(v['min'])}-{_fmt(v['max'])}",
                    ratio,
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if j < 2 or j == len(r) - 1 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="few iterations and small sizes (smoke test)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "local.json",
        help="where to write the JSON results (default: benchmarks/results/local.json)",
    )
    parser.add_argument(
        "--metrics",
        default=",".join(METRICS),
        help=f"comma-separated subset of {','.join(METRICS)} (default: all)",
    )
    parser.add_argument("-q", "--silent", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--pin-cpu",
        type=int,
        default=None,
        metavar="CPU",
        help="pin this process (and so every child) to one CPU: steadier round trips, "
        "but everything shares that core",
    )
    for name, (full, quick) in PRESETS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=None,
            metavar="N",
            help=f"default {full}, {quick} with --quick",
        )
    cfg = parser.parse_args(argv)
    for name, (full, quick) in PRESETS.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, quick if cfg.quick else full)
        if getattr(cfg, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("spawn_iterations", "throughput_bytes", "throughput_runs", "roundtrip_trips"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("concurrency", "concurrency_rounds", "blocks", "memory_sessions", "memory_rounds"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    cfg.metrics = [m.strip() for m in cfg.metrics.split(",") if m.strip()]
    unknown = set(cfg.metrics) - set(METRICS)
    if unknown or not cfg.metrics:
        parser.error(f"--metrics takes a subset of {','.join(METRICS)}")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.pin_cpu is not None:
        os.sched_setaffinity(0, {cfg.pin_cpu})

    def progress(msg: str) -> None:
        if not cfg.silent:
            print(f"  {msg}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if cfg.quick else "full",
        "machine": machine_info(),
        "versions": versions(),
        "config": {k: v for k, v in vars(cfg).items() if k not in ("output", "silent")},
        "metrics": {},
    }
    started = time.perf_counter()
    for name in METRICS:
        if name not in cfg.metrics:
            continue
        progress(f"== {name}")
        gc.collect()
        t0 = time.perf_counter()
        raw = RUNNERS[name](cfg, progress)
        raw["name"] = name
        results["metrics"][name] = finish_metric(raw, time.perf_counter() - t0)
    results["total_seconds"] = round(time.perf_counter() - started, 2)
    results["machine"]["loadavg_at_end"] = list(os.getloadavg())

    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.output.with_name(cfg.output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(cfg.output)

    print(table(results["metrics"]))
    print(
        f"\n{results['mode']} run, {results['total_seconds']} s; "
        f"python {results['versions']['python']}, trio {results['versions']['trio']}; "
        f"load {results['machine']['loadavg_at_start'][0]:.2f} -> "
        f"{results['machine']['loadavg_at_end'][0]:.2f}; results in {cfg.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
