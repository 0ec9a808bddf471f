"""benchmarks/tools_overhead.py runs end to end on tiny inputs and writes a complete
results file (the figures themselves are never asserted: the machine is shared)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tools_overhead.py"
VARIANTS = {
    "exec_command": "ours",
    "exec_command_tty": "ours",
    "process_api": "ours",
    "backend_direct": "baseline",
    "backend_direct_tty": "baseline",
}


@pytest.mark.slow
def test_quick_run_writes_every_variant_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "tools-overhead.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--rounds", "4", "--warmup", "1",
         "--silent", "--output", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["mode"] == "quick" and results["benchmark"] == "tools_overhead"
    assert results["machine"]["cpu_count"] and results["versions"]["trio"]
    assert {n: v["kind"] for n, v in results["variants"].items()} == VARIANTS
    for name, v in results["variants"].items():
        assert v["n"] == len(v["samples"]) == 4, name
        assert v["min"] <= v["median"] <= v["max"], name
        assert all(s > 0 and math.isfinite(s) for s in v["samples"]), name
    ratios = results["ratios"]
    assert set(ratios) == {
        "exec_command/backend_direct",
        "exec_command_tty/backend_direct_tty",
        "process_api/backend_direct",
    }
    assert ratios["exec_command/backend_direct"]["target"] == 1.3
    for r in ratios.values():
        assert r["ratio"] > 0 and math.isfinite(r["ratio"])
        assert r["met"] is None if r["target"] is None else isinstance(r["met"], bool)
