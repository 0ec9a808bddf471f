"""Backends describe themselves (issue 9): the front doors take a new process's
default cwd, base environment and shell from ``describe_backend()``.

- a third-party backend without a description still works (UNKNOWN: this process's
  cwd, ``BASELINE_ENV``, /bin/bash);
- one with a description has its cwd, env and shell honoured by ``exec_command``, by
  the MCP server and by ``check_backend``'s checks of that description;
- through our exec-server (and a pool of them) the default cwd is the server's, not
  the client's.

The third-party backends here are thin wrappers over a real ``LocalPtyBackend``
(real processes); only ``LyingHandle`` injects a fault: a handle that declares
close-stdin but ignores it, which no real backend does on demand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import mcp_types as types
import pytest
import trio
from mcp.client.client import Client

import unified_exec as ue
from unified_exec.backends._description import BASELINE_ENV
from unified_exec.mcp_server._hub import McpOptions
from unified_exec.mcp_server._tools import build_server
from unified_exec.testing import check_backend
from unified_exec.tools import open_manager

from .._support import announced_server, fetch_codex

OPTIONS: dict[str, Any] = {"allow_login_shell": False, "deterministic_ids": True}


class Undescribed:
    """A backend written before descriptions existed: start and aclose only."""

    def __init__(self) -> None:
        self._inner = ue.LocalPtyBackend()

    async def start(self, request: ue.ExecRequest) -> ue.ProcessHandle:
        return await self._inner.start(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Undescribed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Described(Undescribed):
    """A third-party backend that says where it runs (and runs there: a request
    without cwd or env gets the described ones)."""

    def __init__(self, description: ue.BackendDescription) -> None:
        super().__init__()
        self.description = description

    async def start(self, request: ue.ExecRequest) -> ue.ProcessHandle:
        request = attrs.evolve(
            request,
            cwd=self.description.cwd if request.cwd is None else request.cwd,
            env=self.description.default_env if request.env is None else request.env,
        )
        return await super().start(request)


def _shell_script(tmp_path: Path) -> str:
    """A shell of the backend's own: /bin/sh that marks its children."""
    shell = tmp_path / "my shell"
    shell.write_text('#!/bin/sh\nMYSHELL=yes exec /bin/sh "$@"\n')
    shell.chmod(0o755)
    return str(shell)


def _description(tmp_path: Path) -> ue.BackendDescription:
    there = tmp_path / "described cwd"
    (there / "sub").mkdir(parents=True)
    return ue.BackendDescription(
        location=ue.Location.LOCAL,
        cwd=str(there),
        home=str(tmp_path),
        shell=_shell_script(tmp_path),
        platform="linux",
        default_env={"PATH": BASELINE_ENV["PATH"], "MARK": "described", "HOME": str(tmp_path)},
        capabilities={ue.Capability.CLOSE_STDIN, ue.Capability.RESIZE, ue.Capability.INTERRUPT},
    )


async def test_an_undescribed_backend_still_runs_exec_command() -> None:
    backend = Undescribed()
    assert ue.describe_backend(backend).location is ue.Location.UNKNOWN
    assert isinstance(backend, ue.ExecBackend)  # the Protocol did not grow a member
    with trio.fail_after(60):
        async with backend, open_manager(backend, **OPTIONS) as mgr:
            assert mgr.cwd == os.getcwd()  # what such a backend always got
            out = await mgr.exec_command(
                'pwd; echo "$PATH|${HOME-unset}|$0|${MARK-none}"', yield_time_ms=10_000
            )
    assert out.exit_code == 0, out
    assert out.output.splitlines() == [
        os.getcwd(),
        f"{BASELINE_ENV['PATH']}|unset|/bin/bash|none",
    ]


async def test_a_described_backend_has_its_cwd_env_and_shell_honoured(tmp_path: Path) -> None:
    desc = _description(tmp_path)
    backend = Described(desc)
    assert ue.describe_backend(backend) is desc
    with trio.fail_after(60):
        async with backend, open_manager(backend, **OPTIONS) as mgr:
            assert mgr.cwd == desc.cwd
            out = await mgr.exec_command('pwd; echo "$MARK $MYSHELL $HOME"')
            sub = await mgr.exec_command("pwd", workdir="sub")
            theirs = await mgr.exec_command("echo $0", shell="/bin/bash")
    assert out.output.splitlines() == [str(desc.cwd), f"described yes {tmp_path}"]
    assert sub.output.strip() == os.path.join(str(desc.cwd), "sub")
    assert theirs.output.strip() == "/bin/bash"  # an explicit shell still wins


async def test_the_conformance_check_accepts_a_true_description(tmp_path: Path) -> None:
    desc = _description(tmp_path)
    passed = await check_backend(lambda: Described(desc), only=["description"])
    assert passed == ["description"]
    assert await check_backend(Undescribed, only=["description"]) == ["description"]


async def test_the_conformance_check_refuses_a_false_cwd(tmp_path: Path) -> None:
    """The description says processes start in tmp_path; they start in our cwd."""
    desc = ue.BackendDescription(location=ue.Location.LOCAL, cwd=str(tmp_path), default_env={})

    class Claims(Undescribed):
        description = desc  # claimed, while start() runs requests where they say

    with pytest.raises(AssertionError, match="not the described"):
        await check_backend(Claims, only=["description"])


async def test_the_conformance_check_refuses_a_malformed_description() -> None:
    backend = Undescribed()
    backend.description = {"cwd": "/"}  # type: ignore[attr-defined]
    assert ue.describe_backend(backend).location is ue.Location.UNKNOWN  # ignored...

    @asynccontextmanager
    async def factory() -> AsyncIterator[Undescribed]:
        yield backend

    with pytest.raises(AssertionError, match="not a BackendDescription"):  # ...but flagged
        await check_backend(factory, only=["description"])
    await backend.aclose()


class LyingHandle:
    """Fault injection: declares CLOSE_STDIN, but close_stdin() does nothing."""

    capabilities = frozenset({ue.Capability.CLOSE_STDIN})

    def __init__(self, inner: ue.ProcessHandle) -> None:
        self._inner = inner
        self.process_id = inner.process_id
        self.events = inner.events
        self.write = inner.write
        self.terminate = inner.terminate
        self.interrupt = inner.interrupt
        self.resize = inner.resize

    async def close_stdin(self) -> None:
        pass


class Lying(Undescribed):
    async def start(self, request: ue.ExecRequest) -> Any:
        return LyingHandle(await super().start(request))


async def test_the_conformance_check_refuses_a_capability_that_does_not_hold() -> None:
    with pytest.raises(AssertionError, match="close_stdin declared, but cat did not see EOF"):
        await check_backend(Lying, only=["description"])


async def test_the_mcp_server_honours_a_described_backend(tmp_path: Path) -> None:
    desc = _description(tmp_path)

    @asynccontextmanager
    async def factory() -> AsyncIterator[ue.ExecBackend]:
        async with Described(desc) as backend:
            yield backend

    server = build_server(factory, McpOptions(manager_options={"allow_login_shell": False}))
    with trio.fail_after(60):
        async with Client(server) as client:
            result = await client.call_tool(
                "exec_command", {"cmd": 'pwd; echo "$MARK $MYSHELL"', "yield_time_ms": 10_000}
            )
    assert not result.is_error
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    assert f"{desc.cwd}\ndescribed yes\n" in block.text, block.text


# -- through our exec-server ------------------------------------------------------------


async def _serve_in(where: Path, nursery: trio.Nursery) -> str:
    """``unified-exec serve`` with ``where`` as its cwd; its ws:// URL."""
    proc = await nursery.start(
        lambda task_status: trio.run_process(
            [sys.executable, "-m", "unified_exec", "serve", "--listen", "ws://127.0.0.1:0",
             "--ws-auth", "none"],
            cwd=str(where), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, check=False, task_status=task_status,
        )
    )  # fmt: skip
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive_some(1)
    return line.decode().strip()


async def test_a_remote_default_cwd_is_the_servers_not_the_clients(tmp_path: Path) -> None:
    where = tmp_path / "server side"
    client_cwd = tmp_path / "client side"
    where.mkdir()
    client_cwd.mkdir()
    async with trio.open_nursery() as nursery:
        url = await _serve_in(where, nursery)
        with trio.fail_after(60):
            async with (
                ue.RemoteExecBackend.connect(url) as backend,
                open_manager(backend, **OPTIONS) as mgr,
            ):
                desc = ue.describe_backend(backend)
                assert desc.location is ue.Location.REMOTE and desc.cwd == str(where)
                assert mgr.cwd == str(where)
                out = await mgr.exec_command("pwd")
            done = await trio.run_process(
                [sys.executable, "-m", "unified_exec", "exec", "--server", url, "--", "pwd"],
                cwd=str(client_cwd), capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
        nursery.cancel_scope.cancel()
    assert out.output.strip() == str(where)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == str(where)


async def test_a_pool_takes_the_cwd_its_members_agree_on(tmp_path: Path) -> None:
    same = tmp_path / "same"
    same.mkdir()
    async with trio.open_nursery() as nursery:
        urls = [await _serve_in(same, nursery) for _ in range(2)]
        with trio.fail_after(60):
            async with (
                ue.PoolBackend.connect(urls, wait_for=2) as pool,
                open_manager(pool, **OPTIONS) as mgr,
            ):
                assert ue.describe_backend(pool).location is ue.Location.POOL
                assert mgr.cwd == str(same)
                outs = [await mgr.exec_command("pwd") for _ in range(4)]
            # ...and what the pool says of itself holds on it (check_backend).
            passed = await check_backend(
                lambda: ue.PoolBackend.connect(urls, wait_for=2), only=["description"]
            )
        nursery.cancel_scope.cancel()
    assert {o.output.strip() for o in outs} == {str(same)}
    assert passed == ["description"]


async def test_a_pool_of_different_dirs_runs_each_in_its_servers_own(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    async with trio.open_nursery() as nursery:
        urls = [await _serve_in(d, nursery) for d in dirs]
        with trio.fail_after(60):
            async with (
                ue.PoolBackend.connect(urls, wait_for=2) as pool,
                open_manager(pool, **OPTIONS) as mgr,
            ):
                assert ue.describe_backend(pool).cwd is None  # the members differ
                assert mgr.cwd is None  # so neither ours nor a guess
                # Kept running, so placement (fewest live) puts the second on the other.
                outs = [
                    await mgr.exec_command("pwd; exec sleep 60", yield_time_ms=3000)
                    for _ in range(2)
                ]
                refused = await mgr.handle_tool_call("exec_command", {"cmd": "pwd", "workdir": "x"})
                absolute = await mgr.exec_command("pwd", workdir=str(tmp_path))
        nursery.cancel_scope.cancel()
    assert {o.output.strip() for o in outs} == {str(d) for d in dirs}  # both took work
    assert "relative" in refused and "absolute workdir" in refused, refused
    assert absolute.output.strip() == str(tmp_path)


# -- declared, not probed: close-stdin in `unified-exec exec -i` ------------------------


async def _exec_i(url: str, stdin: bytes, *argv: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "unified_exec", "exec", "--server", url, "-i", "--", *argv]
    with trio.fail_after(60):
        return await trio.run_process(
            cmd, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )


async def test_exec_i_closes_stdin_where_the_server_declares_it(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        url = await _serve_in(tmp_path, nursery)
        assert ue.Capability.CLOSE_STDIN in await _capabilities(url)
        done = await _exec_i(url, b"a\nb\n", "wc", "-l")
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"2" and b"stays open" not in done.stderr


async def test_exec_i_says_so_where_the_server_cannot_close_stdin(tmp_path: Path) -> None:
    """codex 0.169.0 has no process/closeStdin: EOF here cannot reach the command, and
    the client says so instead of leaving the user to wonder why it waits."""
    home = tmp_path / "codex-home"
    home.mkdir()
    argv = [fetch_codex("0.169.0"), "exec-server", "--listen", "ws://127.0.0.1:0"]
    async with announced_server(argv, {**os.environ, "CODEX_HOME": str(home)}) as url:
        assert ue.Capability.CLOSE_STDIN not in await _capabilities(url)
        done = await _exec_i(url, b"hi\n", "sh", "-c", "read x; echo got:$x; sleep 1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"got:hi\n"
    assert b"cannot close a process's stdin" in done.stderr, done.stderr
    assert b"the command's stdin stays open" in done.stderr


async def _capabilities(url: str) -> frozenset[ue.Capability]:
    with trio.fail_after(30):
        async with ue.RemoteExecBackend.connect(url) as backend:
            return ue.describe_backend(backend).capabilities
