"""benchmarks/remote.py runs end to end on tiny inputs against our server and codex
0.171.0, checks its work, and writes every figure and ratio, with the CPU each side
used and the bound the client's own CPU puts on each ratio."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REMOTE_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "remote.py"
FIGURES = ("throughput_pipe", "throughput_tty", "spawn", "roundtrip", "concurrency")


@pytest.mark.slow
def test_remote_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "remote.json"
    proc = subprocess.run(
        [sys.executable, str(REMOTE_PY), "--quick", "--codex", "0.171.0",
         "--bytes", str(1 << 20), "--tty-bytes", str(1 << 20), "--spawns", "10",
         "--trips", "10", "--concurrency", "10", "--output", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    for figure in FIGURES:
        for transport in ("stdio", "ws"):
            for server in ("ours", "codex-0.171.0"):
                summary = report["results"][f"{figure}/{transport}/{server}"]
                assert summary["n"] >= 1 and summary["median"] > 0
                cpu = report["cpu"][f"{figure}/{transport}"][server]
                assert cpu["jobs"] >= 1 and cpu["client_per_job"] > 0, cpu
                assert cpu["server_per_job"] >= 0 and cpu["unit"].startswith("CPU"), cpu
            ratio = report["ratios"][f"{figure}/{transport}: ours/codex-0.171.0"]
            assert math.isfinite(ratio["median_of_round_ratios"]) and ratio["target"]
            # what the ratio would be with a server that took no time (the client's own)
            assert math.isfinite(ratio["client_bound"]) and ratio["client_bound"] > 0
    for transport in ("stdio", "ws"):
        for server in ("ours", "codex-0.171.0"):
            # The right process tree was read: a wrong pid would show no CPU at all.
            used = [report["cpu"][f"{f}/{transport}"][server]["server_per_job"] for f in FIGURES]
            assert sum(used) > 0, (transport, server, used)
    for server in ("ours", "codex-0.171.0"):
        assert report["idle_rss_mib"][server]["after_one_client"] > 1
    assert report["ratios"]["idle_rss/ws: ours/codex-0.171.0"]["median_of_round_ratios"] > 0
