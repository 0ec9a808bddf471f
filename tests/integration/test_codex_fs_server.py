"""codex's fs/*, fs/watchMissing, envPolicy and sandboxed starts through a real ExecServer
(real dispatcher, real LocalPtyBackend children, real bwrap), in raw JSON-RPC as the
codex CLI sends them (the params are the ones recorded from codex 0.169.0/0.171.0).

The server gets codex's methods with ``codex_methods`` exactly as ``Methods.__init__``
is to wire them (issue 8); once it does, that update changes nothing.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from unified_exec._uri import file_uri
from unified_exec.server._codex_start import codex_methods

from ..unit.test_fs_sandbox import read_only
from .server_core_harness import connect, served, start_params
from .test_server_protocol import Raw


@asynccontextmanager
async def codex_server() -> AsyncIterator[Raw]:
    async with served() as server:
        server.methods.table.update(codex_methods(server.methods))
        async with connect(server) as raw:
            await raw.handshake()
            yield raw


def u(path: pathlib.Path) -> str:
    return file_uri(str(path))


async def test_fs_methods_through_the_dispatcher(tmp_path: pathlib.Path) -> None:
    with trio.fail_after(20):
        async with codex_server() as raw:
            code, text = await raw.error(
                "fs/getMetadata", {"path": u(tmp_path / ".git"), "sandbox": None}
            )
            assert (code, text) == (-32004, "No such file or directory (os error 2)")
            data = base64.b64encode(b"hello from patch\n").decode()
            target = tmp_path / "hello.txt"
            params = {"path": u(target), "dataBase64": data, "sandbox": None}
            assert await raw.call("fs/writeFile", params) == {}
            got = await raw.call("fs/readFile", {"path": u(target), "sandbox": None})
            assert got == {"dataBase64": data}
            meta = await raw.call("fs/getMetadata", {"path": u(target), "sandbox": None})
            assert meta["isFile"] and meta["size"] == 17
            code, _ = await raw.error("fs/readFile", {"path": "relative", "sandbox": None})
            assert code == -32602


async def test_watch_missing_notifies_once_when_a_path_appears(tmp_path: pathlib.Path) -> None:
    skills = tmp_path / ".agents" / "skills"
    git = tmp_path / ".git"
    with trio.fail_after(20):
        async with codex_server() as raw:
            params = {"watchId": 1, "missing": [u(skills), u(git)], "present": None}
            assert await raw.call("fs/watchMissing", params) == {"watching": True}
            await trio.sleep(1.2)
            assert raw.notes(method="fs/missingChanged") == []
            skills.mkdir(parents=True)
            note = await raw.wait_for(lambda m: m.get("method") == "fs/missingChanged")
            assert note["params"] == {"watchId": 1}
            git.mkdir()
            await trio.sleep(1.2)
            assert len(raw.notes(method="fs/missingChanged")) == 1


async def test_env_policy_gives_the_child_the_servers_environment(tmp_path: pathlib.Path) -> None:
    policy = {"inherit": "all", "ignoreDefaultExcludes": True, "exclude": ["CODEX_VERSION"],
              "set": {}, "includeOnly": []}  # fmt: skip
    params = start_params(
        "e1", ["/bin/sh", "-c", "echo home=$HOME path=${PATH:+set} term=$TERM"],
        envPolicy=policy, env={"TERM": "dumb"}, cwd=u(tmp_path),
    )  # fmt: skip
    with trio.fail_after(20):
        async with codex_server() as raw:
            result = await raw.call("process/start", params)
            assert result["sandboxType"] == "none"
            await raw.wait_for(lambda m: m.get("method") == "process/closed")
    out = output(raw, "e1")
    assert out == f"home={os.environ['HOME']} path=set term=dumb\n"


def output(raw: Raw, pid: str) -> str:
    notes = raw.notes(pid, "process/output")
    return b"".join(base64.b64decode(n["params"]["chunk"]) for n in notes).decode()


async def test_read_only_sandboxed_start_cannot_write(tmp_path: pathlib.Path) -> None:
    params: dict[str, Any] = start_params(
        "s1", ["/bin/sh", "-c", "echo x > ro.txt; echo rc=$?"],
        cwd=u(tmp_path), sandbox=read_only(tmp_path),
    )  # fmt: skip
    with trio.fail_after(20):
        async with codex_server() as raw:
            result = await raw.call("process/start", params)
            assert result == {"processId": "s1", "sandboxType": "linuxSeccomp"}
            await raw.wait_for(lambda m: m.get("method") == "process/closed")
            exited = raw.notes("s1", "process/exited")
    assert "Read-only file system" in output(raw, "s1") and "rc=0" not in output(raw, "s1")
    assert exited[0]["params"]["exitCode"] == 0
    assert not (tmp_path / "ro.txt").exists()
