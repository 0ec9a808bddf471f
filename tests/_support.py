"""Helpers that several test packages share: one copy of each, so that a fix lands once.

- **Processes found by a marker.** A test puts ``VAR=<unique marker>`` into the
  environment of what it starts and finds every survivor by a scan of
  ``/proc/*/environ``, whoever its parent is by then. The marker must be unique per
  test (``new_marker()``): under pytest-xdist other workers run other tests at the
  same time, and a fixed marker would find their processes too.
- **Loopback servers.** ``serving_tcp`` listens on 127.0.0.1 on a free port (port 0:
  never a fixed one, so parallel workers cannot collide); ``bridge`` joins an accepted
  connection to an upstream one (the proxies' inner loop); ``embedded_server`` runs our
  exec-server in this trio run; ``announced_server`` starts a server subprocess and
  reads the URL it prints first.
- **The real codex binary.** ``fetch_codex`` runs scripts/fetch-codex.sh under a file
  lock, so that two workers fetching on a clean machine do not unpack over each other.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pathlib
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import unified_exec as ue

ROOT = pathlib.Path(__file__).resolve().parents[1]

# -- processes found by a marker in their environment -------------------------------


def new_marker(tag: str = "ue") -> str:
    """A marker no other test (nor another xdist worker) uses."""
    return f"{tag}-{os.getpid()}-{secrets.token_hex(6)}"


def process_state(pid: int | str) -> bytes | None:
    """The state letter of ``/proc/PID/stat`` (b"R", b"S", b"Z", ...); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[0] if fields else None


def alive(pid: int) -> bool:
    """True if pid is a live (non-zombie) process."""
    state = process_state(pid)
    return state is not None and state != b"Z"


def marked_pids(
    var: str, marker: str, *, derived: bool = False, zombies: bool = False
) -> list[int]:
    """Processes whose environment holds ``VAR=marker`` (with ``derived``, also
    ``VAR=marker-<suffix>``), this process excluded; zombies only if asked for."""
    want = f"{var}={marker}".encode()
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:
            continue
        hit = want in entries or (derived and any(e.startswith(want + b"-") for e in entries))
        if hit and (zombies or process_state(name) not in (None, b"Z")):
            found.append(int(name))
    return found


def cmdline_pids(needle: str, *, exclude: str = "pytest") -> list[str]:
    """``"pid: command line"`` of the processes whose command line holds ``needle``
    (and not ``exclude``): for children whose environment we do not choose."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and exclude not in cmd:
            out.append(f"{name}: {cmd}")
    return out


async def wait_until_none(scan: Callable[[], list[Any]], timeout: float) -> list[Any]:
    """Poll ``scan()`` until it finds nothing; what it still finds after ``timeout``."""
    with trio.move_on_after(timeout):
        while scan():
            await trio.sleep(0.1)
    return scan()


# -- loopback servers --------------------------------------------------------------

LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
Handler = Callable[[trio.SocketStream], Awaitable[None]]
Pump = Callable[[trio.SocketStream, trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def serving_tcp(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Serve ``handler`` on a free port of ``host`` while the block runs; yields the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=host))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def bridge(client: trio.SocketStream, host: str, port: int, up: Pump, down: Pump) -> None:
    """Connect to ``host:port`` and run ``up(client, upstream)`` beside
    ``down(upstream, client)`` until both end; a dropped link ends it quietly. The
    upstream connection is closed at the end, the client's is the caller's."""
    try:
        upstream = await trio.open_tcp_stream(host, port)
        async with upstream, trio.open_nursery() as nursery:
            nursery.start_soon(up, client, upstream)
            nursery.start_soon(down, upstream, client)
    except LINK_ERRORS:
        pass


def host_port(url: str) -> tuple[str, int]:
    """``ws://HOST:PORT/...`` -> (HOST, PORT); an IPv6 host loses its brackets."""
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return host.strip("[]"), int(port)


@asynccontextmanager
async def embedded_server(**kw: Any) -> AsyncIterator[str]:
    """Our exec-server (``serve_exec_server``) in this trio run; yields its ws URL."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(ue.serve_exec_server, **kw))
        yield url
        nursery.cancel_scope.cancel()


async def read_first_line(stream: trio.abc.ReceiveStream, what: str, timeout: float) -> str:
    """The first line a child prints (a server announces its URL so)."""
    buf = b""
    with trio.fail_after(timeout):
        while b"\n" not in buf:
            data = await stream.receive_some(4096)
            assert data, f"{what} exited before printing its first line: {buf!r}"
            buf += data
    return buf.split(b"\n", 1)[0].decode().strip()


@asynccontextmanager
async def announced_server(
    argv: list[str],
    env: dict[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 30,
) -> AsyncIterator[str]:
    """A server subprocess in a session of its own (stdin closed, stderr dropped);
    yields the URL it prints first; SIGKILLs its whole process group at the end."""
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=env, cwd=cwd, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = await read_first_line(proc.stdout, argv[0], timeout)
        assert url.startswith("ws://"), url
        yield url
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            await proc.wait()


# -- the real codex binary ---------------------------------------------------------

CODEX_VERSIONS = ["0.169.0", "0.171.0"]


def _cache_dir() -> pathlib.Path:
    # where scripts/fetch-codex.sh puts its cache
    base = os.environ.get("UNIFIED_EXEC_CACHE")
    if base:
        return pathlib.Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(xdg) / "unified_exec"


@functools.cache
def fetch_codex(version: str = "0.169.0") -> str:
    """The path of the pinned codex ``version`` (fetched and checked by
    scripts/fetch-codex.sh on first use); fails the test, saying why, if it cannot be.

    One fetch at a time per machine (an exclusive lock beside the cache): xdist workers
    that both need a binary on a clean machine would otherwise unpack it over each other.
    """
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".fetch.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "fetch-codex.sh"), version],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(
            f"the real codex exec-server {version} is needed for this test and could not "
            f"be fetched:\n{done.stderr.strip()}",
            pytrace=False,
        )
    return done.stdout.strip().splitlines()[-1]
