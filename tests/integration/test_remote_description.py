"""RemoteExecBackend and PoolBackend describe where they run (issue 9), from what a real
server announces: ours (``unified-exec serve``) and the real codex 0.171.0 exec-server,
both started as subprocesses in a fresh cwd with their own HOME.

Also the servers used by the fs-client and pool-health tests (``served``).
"""

from __future__ import annotations

import os
import pathlib
import pwd
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import unified_exec as ue
from unified_exec.backends._description import BASELINE_ENV

from .._support import fetch_codex

ROOT = pathlib.Path(__file__).resolve().parents[2]
KINDS = [pytest.param("ours", id="ours"), pytest.param("codex", id="codex-0.171.0")]
OURS_CAPS = {ue.Capability.CLOSE_STDIN, ue.Capability.RESIZE, ue.Capability.INTERRUPT}
CODEX_CAPS = {ue.Capability.INTERRUPT}  # codex 0.171.0: no process/resize, no closeStdin


def codex_binary(version: str = "0.171.0") -> str:
    return fetch_codex(version)


def server_argv(kind: str, host: str = "127.0.0.1") -> list[str]:
    if kind == "ours":
        return [sys.executable, "-m", "unified_exec", "serve", "--ws-auth", "none",
                "--listen", f"ws://{host}:0", "--log-level", "ERROR"]  # fmt: skip
    return [codex_binary(), "exec-server", "--listen", f"ws://{host}:0"]


@asynccontextmanager
async def served(
    kind: str, cwd: pathlib.Path, *, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, trio.Process]]:
    """A server subprocess (``ours`` or ``codex``) running in ``cwd`` with HOME
    ``cwd/home``; yields its ws URL and the process (for signals)."""
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home),
           "CODEX_HOME": str(cwd / "codex-home"), "PYTHONPATH": str(ROOT / "src")}  # fmt: skip
    (cwd / "codex-home").mkdir(exist_ok=True)
    proc = await trio.lowlevel.open_process(
        server_argv(kind, host), cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(60):
            while b"\n" not in buf:
                data = await proc.stdout.receive_some(4096)
                assert data, f"the {kind} server exited before printing its URL"
                buf += data
        url = buf.split(b"\n", 1)[0].decode().strip()
        assert url.startswith(f"ws://{host}:"), url
        yield url, proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()  # SIGKILL also ends a SIGSTOPped server
                await proc.wait()


def login_shell() -> str:
    return pwd.getpwuid(os.getuid()).pw_shell


async def pwd_of(backend: ue.ExecBackend) -> tuple[bytes, ue.ProcessHandle]:
    handle = await backend.start(ue.ExecRequest(argv=["sh", "-c", "pwd; echo $HOME"]))
    out = b""
    async for event in handle.events():
        if isinstance(event, ue.OutputEvent):
            out += event.data
    return out, handle


@pytest.mark.parametrize("kind", KINDS)
async def test_remote_description_comes_from_the_server(kind: str, tmp_path: pathlib.Path) -> None:
    with trio.fail_after(90):
        async with served(kind, tmp_path) as (url, _), ue.RemoteExecBackend.connect(url) as be:
            desc = be.description
            assert ue.describe_backend(be) is desc
            assert desc.location is ue.Location.REMOTE
            assert desc.cwd == str(tmp_path)
            assert desc.home == str(tmp_path / "home")
            assert desc.shell == login_shell()
            assert desc.platform == "linux"
            assert dict(desc.default_env) == {**BASELINE_ENV, "HOME": str(tmp_path / "home")}
            assert ue.REMOTE_DEFAULT_ENV == BASELINE_ENV
            assert desc.capabilities == (OURS_CAPS if kind == "ours" else CODEX_CAPS)
            # A start without cwd or env runs where the description says, with its env.
            out, handle = await pwd_of(be)
            assert out == f"{tmp_path}\n{tmp_path / 'home'}\n".encode()
            assert ue.capabilities_of(handle) == desc.capabilities


@pytest.mark.parametrize("kind", KINDS)
async def test_declared_capabilities_are_the_ones_that_work(
    kind: str, tmp_path: pathlib.Path
) -> None:
    """INTERRUPT is declared everywhere and delivers SIGINT; CLOSE_STDIN only where it
    works (through UnifiedExecProcess, which reads the declaration)."""
    with trio.fail_after(90):
        async with served(kind, tmp_path) as (url, _), ue.RemoteExecBackend.connect(url) as be:
            req = ue.ExecRequest(argv=["sh", "-c", "trap 'echo int; exit 7' INT; cat"],
                                 pipe_stdin=True)  # fmt: skip
            async with ue.open_process(be, req) as proc:
                if ue.Capability.CLOSE_STDIN in be.description.capabilities:
                    await proc.close_stdin()
                    state = await proc.wait()
                    assert state.exit_code == 0  # cat saw EOF
                else:
                    with pytest.raises(ue.UnifiedExecError):
                        await proc.close_stdin()
                    await trio.sleep(0.3)  # let sh install its trap
                    await proc.interrupt()
                    state = await proc.wait()
                    assert state.exit_code == 7


async def test_pool_description_is_what_members_agree_on(tmp_path: pathlib.Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with trio.fail_after(120):
        async with (
            served("ours", a, host="127.0.0.21") as (ours, _),
            served("codex", b, host="127.0.0.22") as (codex, _),
            ue.PoolBackend.connect([ours, codex], wait_for=2, health_interval=0.3) as pool,
        ):
            desc = ue.describe_backend(pool)
            assert desc.location is ue.Location.POOL
            assert desc.cwd is None and desc.home is None  # the members differ
            assert desc.platform == "linux" and desc.shell == login_shell()
            assert desc.capabilities == CODEX_CAPS  # the intersection
            assert dict(desc.default_env) == dict(BASELINE_ENV)
            handles = [
                await pool.start(ue.ExecRequest(argv=["cat"], pipe_stdin=True)) for _ in range(2)
            ]
            by_server = {pool.server_for(h.process_id): h for h in handles}
            assert set(by_server) == {ours, codex}
            assert ue.capabilities_of(by_server[ours]) == OURS_CAPS
            assert ue.capabilities_of(by_server[codex]) == CODEX_CAPS
            with pytest.raises(ue.InvalidRequestError, match="closeStdin"):
                await by_server[codex].close_stdin()  # type: ignore[attr-defined]
            await by_server[ours].close_stdin()  # type: ignore[attr-defined]
            for h in handles:
                await h.terminate()


async def test_pool_of_agreeing_members_keeps_their_facts(tmp_path: pathlib.Path) -> None:
    with trio.fail_after(120):
        async with (
            served("ours", tmp_path, host="127.0.0.23") as (one, _),
            served("ours", tmp_path, host="127.0.0.24") as (two, _),
            ue.PoolBackend.connect([one, two], wait_for=2, health_interval=0.3) as pool,
        ):
            desc = pool.description
            assert (desc.location, desc.cwd, desc.home) == (
                ue.Location.POOL, str(tmp_path), str(tmp_path / "home"))  # fmt: skip
            assert desc.capabilities == OURS_CAPS
            assert dict(desc.default_env) == {**BASELINE_ENV, "HOME": str(tmp_path / "home")}
            req = ue.ExecRequest(argv=["sh", "-c", "cat; pwd"], pipe_stdin=True)
            async with ue.open_process(pool, req) as proc:
                await proc.close_stdin()  # declared by the pool's handle: it works
                assert (await proc.wait()).exit_code == 0
                res = await proc.read()
                assert b"".join(c.data for c in res.chunks) == f"{tmp_path}\n".encode()


async def test_a_pool_with_a_member_not_connected_names_no_cwd(tmp_path: pathlib.Path) -> None:
    """A process may land on the member that is not connected yet, whose directory
    nobody knows: until every member is in, the pool claims no cwd, home or shell
    (a front door would otherwise send one member's directory to another)."""
    with trio.fail_after(120):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.25", 0))  # bound, never accepting: not connectable
        silent = f"ws://127.0.0.25:{listener.getsockname()[1]}"
        listener.close()
        async with (
            served("ours", tmp_path, host="127.0.0.26") as (one, _),
            ue.PoolBackend.connect([one, silent], wait_for=1, health_interval=0.3) as pool,
        ):
            desc = pool.description
            assert desc.location is ue.Location.POOL
            assert (desc.cwd, desc.home, desc.shell) == (None, None, None)
            assert desc.capabilities == OURS_CAPS  # what the connected member can do
