"""benchmarks/run.py --quick runs end to end and writes a complete results file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
CHART_PY = RUN_PY.with_name("chart.py")

EXPECTED = {
    "spawn": {
        "ours_pipe",
        "ours_tty",
        "subprocess_run",
        "posix_spawn",
        "ptyprocess",
        "trio_run_process",
    },
    "throughput": {"ours_pipe", "ours_tty", "pipe_osread", "pty_osread", "trio_pty"},
    "roundtrip": {"ours_pipe", "ours_tty", "pipe_osrw", "trio_pipe", "pty_osrw_echo", "trio_pty"},
    "concurrency": {"ours_pipe", "subprocess_popen", "trio_run_process"},
    "memory": {"ours_tty", "ptyprocess"},
}


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_run_writes_every_metric(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--quick", "--silent", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text(encoding="utf-8"))

    assert results["mode"] == "quick"
    assert results["versions"]["python"]
    assert results["versions"]["trio"]
    assert results["machine"]["cpu_count"]
    assert set(results["metrics"]) == set(EXPECTED)

    for name, want in EXPECTED.items():
        metric = results["metrics"][name]
        variants = metric["variants"]
        assert want <= set(variants), (name, sorted(variants))
        for vname, v in variants.items():
            for key in ("median", "p90", "min", "max", "mean"):
                assert _positive(v[key]), (name, vname, key, v[key])
            assert v["min"] <= v["median"] <= v["max"], (name, vname)
            assert v["n"] == len(v["samples"]) >= 1
            assert all(_positive(s) for s in v["samples"]), (name, vname)

        ours = {n for n, v in variants.items() if v["kind"] == "ours"}
        baselines = {n for n, v in variants.items() if v["kind"] == "baseline"}
        assert ours and baselines, name
        expected_ratios = set()
        for o in ours:
            compared = variants[o]["compared_with"]
            assert compared and set(compared) <= baselines, (name, o, compared)
            expected_ratios |= {f"{o}/{b}" for b in compared}
        assert set(metric["ratios"]) == expected_ratios, name
        for key, ratio in metric["ratios"].items():
            assert _positive(ratio), (name, key, ratio)
        assert set(metric["primary_ratios"]) == ours, name
        for primary in metric["primary_ratios"].values():
            assert primary["baseline"] in baselines
            assert _positive(primary["ratio"])
            assert _positive(primary["paired_ratio"])
            # Every figure of issue 12 carries its target.
            assert _positive(primary["target"]), (name, primary)
            assert primary["target_kind"] in ("max", "min")
            assert isinstance(primary["met"], bool)

    # The table names every metric.
    for name in EXPECTED:
        assert name in proc.stdout

    # chart.py turns these tiny results (and a remote.json, if any) into the chart
    # and the README table.
    chart = subprocess.run(
        [sys.executable, str(CHART_PY), "--local", str(out), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert chart.returncode == 0, chart.stdout + chart.stderr
    png = (tmp_path / "performance.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    table = (tmp_path / "performance.md").read_text(encoding="utf-8")
    assert table.startswith("| figure | ours | baseline")
    for figure in ("pipes", "PTY", "round trip", "concurrent", "memory"):
        assert figure in table, figure
