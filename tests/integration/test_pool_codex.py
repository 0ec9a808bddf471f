"""A pool with one codex exec-server (0.169.0) member next to one of ours: both
take work, and killing the codex member fails only its processes.

The pool checks the codex member as it checks ours: ``environment/status`` (codex
answers ``{"status": "ready"}``) and ``GET /readyz`` (codex 0.169-0.171 answers 200).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

import unified_exec as ue
from unified_exec.backends.pool import PoolBackend

from .._support import fetch_codex
from .test_pool_backend import _collect, _serve, _stop, _wait_req


def _codex() -> str:
    return fetch_codex("0.169.0")


async def test_codex_member_takes_work_and_fails_alone(tmp_path: Path) -> None:
    codex = subprocess.Popen(
        [_codex(), "exec-server", "--listen", "ws://127.0.0.8:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env={"CODEX_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    ours, our_url = _serve("127.0.0.9")
    try:
        assert codex.stdout is not None
        codex_url = codex.stdout.readline().decode().strip()
        assert codex_url.startswith("ws://127.0.0.8:"), codex_url
        with trio.fail_after(90):
            async with PoolBackend.connect(
                [codex_url, our_url], wait_for=2, health_interval=0.3
            ) as pool:
                handles = [await pool.start(_wait_req(f"x{i}")) for i in range(4)]
                where = {h.process_id: pool.server_for(h.process_id) for h in handles}
                assert set(where.values()) == {codex_url, our_url}
                results: dict[str, tuple[str, bytes, int | None]] = {}
                async with trio.open_nursery() as nursery:

                    async def keep(h: ue.ProcessHandle) -> None:
                        results[h.process_id] = await _collect(h)

                    for h in handles:
                        nursery.start_soon(keep, h)
                    codex.kill()
                    codex.wait()
                    for h in handles:
                        if where[h.process_id] == our_url:
                            await h.write(b"go\n")
                for pid, url in where.items():
                    if url == codex_url:
                        assert results[pid][0] == "failed"
                    else:
                        assert results[pid] == ("closed", b"ok go\n", 0)
    finally:
        if codex.poll() is None:
            codex.kill()
            codex.wait()
        if codex.stdout is not None:
            codex.stdout.close()
        _stop(ours)
