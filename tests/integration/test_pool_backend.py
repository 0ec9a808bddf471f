"""PoolBackend over real exec-servers: placement, a SIGKILLed member, re-admission,
DNS discovery against a real DNS server on loopback, and the short scale run.

Servers are ``unified-exec serve`` subprocesses on 127.0.0.2.. (loopback stands in
for pods), so a member can be SIGKILLed like a pod that dies.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import unified_exec as ue
from tests._dns import LoopbackDnsServer
from unified_exec._events import ClosedEvent, ExitedEvent, FailedEvent, OutputEvent
from unified_exec.backends.pool import DnsDiscovery, PoolBackend

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def _serve(host: str, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "unified_exec", "serve", "--ws-auth", "none",
         "--listen", f"ws://{host}:{port}", "--log-level", "ERROR"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def three_servers() -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    servers = [_serve(f"127.0.0.{i}") for i in (2, 3, 4)]
    try:
        yield servers
    finally:
        for proc, _ in servers:
            _stop(proc)


async def _collect(handle: ue.ProcessHandle) -> tuple[str, bytes, int | None]:
    out, code, status = b"", None, "open"
    async for event in handle.events():
        if isinstance(event, OutputEvent):
            out += event.data
        elif isinstance(event, ExitedEvent):
            code = event.exit_code
        elif isinstance(event, ClosedEvent):
            status = "closed"
        elif isinstance(event, FailedEvent):
            status = "failed"
    return status, out, code


def _wait_req(pid: str) -> ue.ExecRequest:
    return ue.ExecRequest(
        argv=["sh", "-c", 'read x; echo "ok $x"'], env=ENV, pipe_stdin=True, process_id=pid
    )


async def test_placement_spreads_and_a_killed_server_fails_only_its_own(
    three_servers: list[tuple[subprocess.Popen[bytes], str]],
) -> None:
    urls = [url for _, url in three_servers]
    with trio.fail_after(90):
        async with PoolBackend.connect(urls, wait_for=3, health_interval=0.3) as pool:
            assert sorted(s.url for s in pool.servers) == sorted(urls)
            assert all(s.healthy for s in pool.servers)
            handles = [await pool.start(_wait_req(f"p{i}")) for i in range(9)]
            assert sorted(s.live for s in pool.servers) == [3, 3, 3]
            for h in handles:
                assert pool.server_for(h.process_id) in urls
            with pytest.raises(ue.InvalidRequestError):
                pool.server_for("nope")
            with pytest.raises(ue.InvalidRequestError):
                await pool.start(_wait_req("p0"))  # the id is taken in the pool

            victim_proc, victim_url = three_servers[0]
            results: dict[str, tuple[str, bytes, int | None]] = {}
            async with trio.open_nursery() as nursery:

                async def keep(h: ue.ProcessHandle) -> None:
                    results[h.process_id] = await _collect(h)

                for h in handles:
                    nursery.start_soon(keep, h)
                victim_proc.kill()
                victim_proc.wait()
                with trio.fail_after(15):  # "within a few seconds"
                    while not any(s.url == victim_url and not s.healthy for s in pool.servers):
                        await trio.sleep(0.1)
                # New work goes only to live servers.
                extra = [await pool.start(_wait_req(f"q{i}")) for i in range(4)]
                assert victim_url not in {pool.server_for(h.process_id) for h in extra}
                for h in handles + extra:
                    if pool.server_for(h.process_id) != victim_url:
                        await h.write(b"go\n")
                for h in extra:
                    nursery.start_soon(keep, h)
            for h in handles + extra:
                status, out, code = results[h.process_id]
                if pool.server_for(h.process_id) == victim_url:
                    assert status == "failed"
                else:
                    assert (status, out, code) == ("closed", b"ok go\n", 0)

            # The server comes back on the same address: it is re-admitted.
            host, port = victim_url.removeprefix("ws://").rsplit(":", 1)
            back, url2 = _serve(host, int(port))
            try:
                assert url2 == victim_url
                with trio.fail_after(20):
                    while not any(s.url == victim_url and s.healthy for s in pool.servers):
                        await trio.sleep(0.1)
                placed = [await pool.start(_wait_req(f"r{i}")) for i in range(6)]
                assert victim_url in {pool.server_for(h.process_id) for h in placed}
                for h in placed:
                    await h.terminate()
            finally:
                await pool.aclose()
                _stop(back)


async def test_max_per_server_caps_placement(
    three_servers: list[tuple[subprocess.Popen[bytes], str]],
) -> None:
    urls = [url for _, url in three_servers[:2]]
    with trio.fail_after(60):
        async with PoolBackend.connect(urls, wait_for=2, max_per_server=2) as pool:
            for i in range(4):
                await pool.start(_wait_req(f"c{i}"))
            with pytest.raises(ue.TransportLostError, match="room"):
                await pool.start(_wait_req("c-over"))


async def test_dns_discovery_admits_new_pods_and_drains_vanished_ones() -> None:
    """Every A record of the headless Service's name is a pod; all pods share a port."""
    first, url_a = _serve("127.0.0.6")
    port = int(url_a.rsplit(":", 1)[1])
    try:
        second, url_b = _serve("127.0.0.7", port)
    except Exception:
        _stop(first)
        raise
    dns_server = LoopbackDnsServer("exec.pool.svc.cluster.local.")
    dns_server.addresses = ["127.0.0.6"]
    source = DnsDiscovery(
        "exec.pool.svc.cluster.local.", port, interval=0.3,
        nameserver="127.0.0.1", nameserver_port=dns_server.port,
    )  # fmt: skip
    try:
        assert url_b == f"ws://127.0.0.7:{port}"
        with trio.fail_after(60):
            async with PoolBackend.connect(source, health_interval=0.3) as pool:
                assert [s.url for s in pool.servers] == [url_a]
                h1 = await pool.start(_wait_req("d1"))
                assert pool.server_for("d1") == url_a

                dns_server.addresses = ["127.0.0.6", "127.0.0.7"]  # a pod appears
                while not any(s.url == url_b and s.healthy for s in pool.servers):
                    await trio.sleep(0.1)
                h2 = await pool.start(_wait_req("d2"))
                assert pool.server_for("d2") == url_b  # the emptier server

                dns_server.addresses = ["127.0.0.7"]  # the first pod vanishes
                while not any(s.url == url_a and s.draining for s in pool.servers):
                    await trio.sleep(0.1)
                h3 = await pool.start(_wait_req("d3"))
                assert pool.server_for("d3") == url_b  # no new work on a draining pod
                for h in (h1, h2, h3):
                    await h.write(b"go\n")
                    assert await _collect(h) == ("closed", b"ok go\n", 0)
                while any(s.url == url_a for s in pool.servers):  # drained, then dropped
                    await trio.sleep(0.1)
        assert dns_server.queries >= 3
    finally:
        dns_server.close()
        _stop(first)
        _stop(second)


def test_short_scale_run_with_a_killed_server(tmp_path: Path) -> None:
    """benchmarks/pool_scale.py at 4 servers x 40 processes, one SIGKILLed."""
    out = tmp_path / "pool.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pool_scale.py"),
         "--servers", "4", "--procs", "40", "--output", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert sum(result["spread"].values()) == 40
    assert result["spread_min_max"][1] - result["spread_min_max"][0] <= 1
    assert result["victims"] == result["victims_failed"] > 0
    assert result["victim_children_before_kill"] == result["victims"]
    assert result["victim_children_alive"] == 0
    assert result["survivors_intact"] == result["expected_survivors"] == 40 - result["victims"]
