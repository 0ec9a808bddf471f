"""Print the stress figures of benchmarks/results/stress-<mode>.json as a Markdown table.

Usage: python scripts/stress_table.py [long|short]   (default: long, what `make stress` writes)
The README's "Reliability" table is meant to be pasted from this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def get(section: str, key: str) -> Any:
        return s.get(section, {}).get(key, "n/a")

    for name in ("fuzz_stdio", "fuzz_websocket"):
        if name in s:
            out.append(
                (
                    f"fuzz cases ({name.split('_')[1]})",
                    f"{get(name, 'cases')} cases, {get(name, 'crashes')} failures, "
                    f"server RSS peak {get(name, 'server_rss_mib_peak')} MiB",
                )
            )
    if "fuzz_tcp_openings" in s:
        out.append(
            (
                "raw TCP openings (cut upgrades, bad tokens, bad frames, FIN/RST)",
                f"{get('fuzz_tcp_openings', 'cases')} openings, "
                f"{get('fuzz_tcp_openings', 'failures')} failures",
            )
        )
    if "client_fuzz" in s:
        out.append(
            (
                "our client vs a hostile server",
                f"{get('client_fuzz', 'examples')} sessions, "
                f"{get('client_fuzz', 'foreign_exceptions')} foreign exceptions",
            )
        )
    if "load_bytes" in s:
        out.append(
            (
                "concurrent processes, sha256-verified",
                f"{get('load_bytes', 'verified')}/{get('load_bytes', 'processes')} x "
                f"{get('load_bytes', 'bytes_per_process')} B in {get('load_bytes', 'seconds')} s",
            )
        )
    if "load_flood_echo" in s:
        out.append(
            (
                "echo start->closed while one process floods",
                f"p50 {get('load_flood_echo', 'p50_ms')} ms, "
                f"p99 {get('load_flood_echo', 'p99_ms')} ms",
            )
        )
    if "load_paused_reader" in s:
        out.append(
            (
                f"server RSS, reader paused {get('load_paused_reader', 'paused_s')} s",
                f"{get('load_paused_reader', 'server_rss_mib_before')} -> "
                f"{get('load_paused_reader', 'server_rss_mib_after_pause')} MiB",
            )
        )
    if "load_unread_answers" in s:
        out.append(
            (
                f"server RSS, {get('load_unread_answers', 'requests_sent')} unread answers",
                f"{get('load_unread_answers', 'server_rss_mib_before')} -> "
                f"{get('load_unread_answers', 'server_rss_mib_peak')} MiB (peak)",
            )
        )
    if "chaos" in s:
        c = s["chaos"]
        out.append(
            (
                "chaos (seed {seed})".format(seed=c.get("seed")),
                f"{c.get('steps')} steps, {c.get('server_incarnations')} servers "
                f"({c.get('actions', {}).get('server_sigkill', 0)} SIGKILL, "
                f"{c.get('actions', {}).get('server_sigterm', 0)} SIGTERM), "
                f"survivors {c.get('survivors')}",
            )
        )
    return out


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "long"
    path = ROOT / "benchmarks" / "results" / f"stress-{mode}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1
    print(f"Stress figures ({mode} mode, {data.get('updated')}, {data['machine']['cpus']} CPUs)\n")
    print("| what | measured |\n| --- | --- |")
    for what, measured in rows(data.get("sections", {})):
        print(f"| {what} | {measured} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
