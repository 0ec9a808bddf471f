"""Controller memory per idle PTY session: ``bash --norc --noprofile -i`` waited to
its prompt, N at once, ours (LocalPtyBackend) against ptyprocess.

Each measurement runs in a fresh interpreter (``python _memory.py VARIANT N``) that
imports the same modules either way, reads its VmRSS, starts N sessions, waits for
every prompt, reads VmRSS again and prints KiB per session as JSON. A fresh process
per sample keeps one variant's heap from hiding the other's.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import trio
from ptyprocess import PtyProcess

import unified_exec as ue

BASH = ["bash", "--norc", "--noprofile", "-i"]
_PROMPT_WAIT = 30.0
_FLOOR_KIB = 0.1


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _prompted(data: bytes) -> bool:
    return data.rstrip(b" ").endswith((b"$", b"#"))


def ptyprocess_kib(count: int) -> float:
    gc.collect()
    before = _rss_kib()
    procs = [
        PtyProcess.spawn(BASH, env={"PS1": "$ ", "PATH": "/usr/bin:/bin"}) for _ in range(count)
    ]
    try:
        for p in procs:
            seen = b""
            deadline = time.monotonic() + _PROMPT_WAIT
            while not _prompted(seen):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no prompt from bash: {seen!r}")
                seen += p.read(4096)
        gc.collect()
        return (_rss_kib() - before) / count
    finally:
        for p in procs:
            p.delayafterterminate = 0
            p.terminate(force=True)
            p.close(force=True)


async def _ours(count: int) -> float:
    gc.collect()
    before = _rss_kib()
    request = ue.ExecRequest(argv=BASH, tty=True, env={"PS1": "$ ", "PATH": "/usr/bin:/bin"})
    # kill_grace=0: an interactive bash ignores SIGTERM, so the teardown would wait
    # out a second's grace per session (it is not measured, only slow).
    async with ue.LocalPtyBackend(kill_grace=0) as backend:
        procs = [await ue.UnifiedExecProcess.start(backend, request) for _ in range(count)]
        try:
            with trio.fail_after(_PROMPT_WAIT):
                for p in procs:
                    seen, cursor = b"", 0
                    while not _prompted(seen):
                        r = await p.read(after_seq=cursor, wait=_PROMPT_WAIT)
                        if r.closed:
                            raise RuntimeError(f"bash closed: {r.state}")
                        seen += b"".join(c.data for c in r.chunks)
                        cursor = r.cursor
            gc.collect()
            return (_rss_kib() - before) / count
        finally:
            for p in procs:
                await p.terminate()


def ours_kib(count: int) -> float:
    return trio.run(_ours, count)


def measure(variant: str, count: int) -> float:
    """KiB per session, measured in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), variant, str(count)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    # RSS moves in 4 KiB pages: with few sessions the growth can round to 0 (or
    # below, after a collection); such a sample reads as the floor, 0.1 KiB.
    return max(_FLOOR_KIB, float(json.loads(out.stdout)["kib_per_session"]))


if __name__ == "__main__":
    name, n = sys.argv[1], int(sys.argv[2])
    fn = {"ours": ours_kib, "ptyprocess": ptyprocess_kib}[name]
    print(json.dumps({"variant": name, "sessions": n, "kib_per_session": fn(n)}))
