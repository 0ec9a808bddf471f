"""Summaries of timing samples, and facts about the machine they were taken on."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["machine_info", "summarize", "versions"]


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (q in 0..1)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, p90, p99, min, max and mean of a non-empty sample list."""
    if not samples:
        raise ValueError("no samples")
    values = sorted(samples)
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": _quantile(values, 0.90),
        "p99": _quantile(values, 0.99),
        "min": values[0],
        "max": values[-1],
        "mean": statistics.fmean(values),
    }


def _read_first(path: str, prefix: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    mem_kib = _read_first("/proc/meminfo", "MemTotal")
    return {
        "platform": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": _read_first("/proc/cpuinfo", "model name"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "mem_total": mem_kib,
        "loadavg_at_start": list(os.getloadavg()),
    }


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "python_implementation": platform.python_implementation(),
        "trio": _dist_version("trio"),
        "ptyprocess": _dist_version("ptyprocess"),
        "unified_exec": _dist_version("unified_exec"),
    }
