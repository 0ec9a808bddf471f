"""r09 / defect 12: a client that pipelines requests and never reads the answers holds
a bounded amount of server memory (it used to be ~1.3 MB per 70-byte request)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

SERVE_STDIO = [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def _send(proc: subprocess.Popen[bytes], *msgs: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in msgs))
    proc.stdin.flush()


def test_unread_answers_do_not_grow_the_server() -> None:
    proc = subprocess.Popen(
        SERVE_STDIO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    try:
        _send(
            proc,
            {"id": 1, "method": "initialize", "params": {"clientName": "flood"}},
            {"method": "initialized"},
        )
        assert json.loads(proc.stdout.readline())["id"] == 1
        script = "head -c 1000000 /dev/urandom; exec sleep 30"
        start = {
            "processId": "p", "argv": ["sh", "-c", script], "cwd": "/tmp",
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "tty": False,
        }  # fmt: skip
        _send(proc, {"id": 2, "method": "process/start", "params": start})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # drain the pushed 1 MB
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                break
            proc.stdout.readline()
        before = _rss_mb(proc.pid)
        reads = [
            {"id": 100 + i, "method": "process/read", "params": {"processId": "p"}}
            for i in range(300)
        ]
        _send(proc, *reads)  # ~1.3 MB of answer each; none is read
        time.sleep(3)
        grown = _rss_mb(proc.pid) - before
        assert grown < 100, f"server RSS grew by {grown} MB for 300 unread answers"
        assert proc.poll() is None
        # Hanging up our reading end fails the server's blocked send: that ends the
        # connection, and with it (stdio) the session's processes and the server.
        proc.stdout.close()
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=15) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        assert proc.stdin is not None
        proc.stdin.close()
