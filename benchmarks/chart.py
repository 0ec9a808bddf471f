"""The README's performance chart and table, from the benchmark results.

    python benchmarks/chart.py [--local results/local.json] [--remote results/remote.json]
                               [--out-dir benchmarks/results]

Reads local.json (benchmarks/run.py) and, when present, remote.json
(benchmarks/remote.py); writes performance.png (each figure's ratio ours/baseline
against its target, matplotlib with the Agg backend) and performance.md (the table:
figure, ours, baseline, ratio, target, met). Ratios are medians over blocks of
ours/baseline taken in the same block, where the results carry them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"

# Figure names for the local ours/baseline pairs that carry a target (run.py TARGETS).
LOCAL_NAMES = {
    ("spawn", "ours_pipe"): "spawn → closed of `true`, pipes",
    ("spawn", "ours_tty"): "spawn → closed of `true`, PTY",
    ("throughput", "ours_pipe"): "256 MiB through pipes",
    ("throughput", "ours_tty"): "256 MiB through a PTY",
    ("roundtrip", "ours_pipe"): "32-byte round trip, pipes",
    ("roundtrip", "ours_tty"): "32-byte round trip, PTY",
    ("concurrency", "ours_pipe"): "100 concurrent `echo` until all closed",
    ("memory", "ours_tty"): "controller memory per idle PTY session",
}


class Row:
    def __init__(
        self,
        figure: str,
        ours: str,
        baseline: str,
        ratio: float,
        target: float | None,
        kind: str,
        where: str,
    ) -> None:
        self.figure = figure
        self.ours = ours
        self.baseline = baseline
        self.ratio = ratio
        self.target = target
        self.kind = kind  # "max": ratio must stay at or below target; "min": at or above
        self.where = where

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio <= self.target if self.kind == "max" else self.ratio >= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return ("≤ " if self.kind == "max" else "≥ ") + f"{self.target:g}x"


def _num(x: float, unit: str) -> str:
    if x >= 100:
        s = f"{x:.0f}"
    elif x >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return f"{s} {unit}"


def local_rows(results: dict[str, Any]) -> list[Row]:
    rows = []
    for mname, metric in results.get("metrics", {}).items():
        unit = metric.get("unit", "")
        for vname, primary in metric.get("primary_ratios", {}).items():
            base = primary["baseline"]
            variants = metric["variants"]
            ratio = primary.get("paired_ratio") or primary["ratio"]
            rows.append(
                Row(
                    LOCAL_NAMES.get((mname, vname), f"{mname} {vname}"),
                    _num(variants[vname]["median"], unit),
                    f"{_num(variants[base]['median'], unit)} ({variants[base]['label']})",
                    float(ratio),
                    primary.get("target"),
                    primary.get("target_kind", "min" if metric.get("higher_is_better") else "max"),
                    "local",
                )
            )
    return rows


_TARGET = re.compile(r"^\s*(<=|>=|≤|≥)\s*([0-9.]+)")


def remote_rows(results: dict[str, Any]) -> list[Row]:
    """remote.json (benchmarks/remote.py): {"ratios": {name: {median_of_round_ratios,
    ratio_of_medians, target: ">= 3", ...}}}; anything unreadable is skipped."""
    rows = []
    for name, r in (results.get("ratios") or {}).items():
        if not isinstance(r, dict):
            continue
        ratio = r.get("median_of_round_ratios", r.get("ratio_of_medians"))
        if not isinstance(ratio, int | float):
            continue
        target, kind = None, "min" if r.get("higher_is_better") else "max"
        m = _TARGET.match(str(r.get("target", "")))
        if m:
            target = float(m.group(2))
            kind = "max" if m.group(1) in ("<=", "≤") else "min"
        ours = r.get("ours")
        base = r.get("baseline")
        unit = r.get("unit", "")
        codex = name.rpartition("ours/")[2] or "codex exec-server"
        baseline = f"{_num(base, unit)} ({codex})" if isinstance(base, int | float) else codex
        bound = r.get("client_bound")
        if isinstance(bound, int | float):  # the ratio even a server costing nothing gets
            baseline += f"; client alone {bound:.2f}x"
        rows.append(
            Row(
                name,
                _num(ours, unit) if isinstance(ours, int | float) else "see remote.json",
                baseline,
                float(ratio),
                target,
                kind,
                "remote",
            )
        )
    return rows


def markdown(rows: list[Row], machine: dict[str, Any] | None) -> str:
    lines = [
        "| figure | ours | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        lines.append(
            f"| {r.figure} | {r.ours} | {r.baseline} | {r.ratio:.2f}x | {r.target_text} | {met} |"
        )
    if machine:
        lines.append("")
        lines.append(
            f"Machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} cores (shared, "
            f"load average {machine.get('loadavg_at_start', ['?'])[0]:.2f} at start), "
            f"{machine.get('platform')}."
        )
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: Path) -> None:
    """One horizontal bar per figure: ratio / target on a log scale, where 1 is the
    target; green when met. "Better" is to the left for ≤ targets and to the right
    for ≥ targets, so each bar is shown as how far it is from its target."""
    shown = [r for r in rows if r.target]
    fig, ax = plt.subplots(figsize=(9, 0.42 * max(len(shown), 1) + 1.4), dpi=110)
    labels, values, colors = [], [], []
    for r in shown:
        assert r.target is not None
        # >1 means "target missed by this factor", <1 "met with this margin".
        miss = r.ratio / r.target if r.kind == "max" else r.target / max(r.ratio, 1e-9)
        labels.append(f"[{r.where}] {r.figure}  ({r.ratio:.2f}x vs {r.target_text})")
        values.append(miss)
        colors.append("#2e8b57" if r.met else "#c0392b")
    y = list(range(len(shown)))
    ax.barh(y, values, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("distance from target (1 = on target; left of the line = met)")
    ax.set_title("unified_exec vs baselines in the same run: ratio / target", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", type=Path, default=RESULTS / "local.json")
    parser.add_argument("--remote", type=Path, default=RESULTS / "remote.json")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    cfg = parser.parse_args(argv)
    local = json.loads(cfg.local.read_text(encoding="utf-8"))
    rows = local_rows(local)
    if cfg.remote.exists():
        try:
            rows += remote_rows(json.loads(cfg.remote.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            print(f"chart.py: skipping {cfg.remote}: {exc}", file=sys.stderr)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    (cfg.out_dir / "performance.md").write_text(
        markdown(rows, local.get("machine")), encoding="utf-8"
    )
    chart(rows, cfg.out_dir / "performance.png")
    print(f"wrote {cfg.out_dir / 'performance.png'} and {cfg.out_dir / 'performance.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
