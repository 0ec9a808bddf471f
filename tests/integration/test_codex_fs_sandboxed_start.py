"""A sandboxed `process/start` (server/_codex_start.py + _bwrap.py) with real children
under the real system bubblewrap: what codex's policies allow happens, what they do not
allow fails in the child, exactly as under codex's own exec-server (issue 8).

The policies are the ones codex 0.169.0 sent on the wire. The inner handler runs the
(wrapped) argv as a real child; only the dispatch around it is left out. These tests
need ``bwrap`` (Debian package ``bubblewrap``) and fail, never skip, without it.
"""

from __future__ import annotations

import os
import pathlib
import socket
from typing import Any

import pytest
import trio

from unified_exec._uri import file_uri
from unified_exec.server._bwrap import bwrap_path
from unified_exec.server._codex_start import codex_start
from unified_exec.server._errors_map import Fail

from ..unit.test_fs_sandbox import context, read_only, special, workspace_write


@pytest.fixture(scope="module", autouse=True)
def need_bwrap() -> None:
    if bwrap_path() is None:
        pytest.fail("bubblewrap is needed: apt-get install bubblewrap", pytrace=False)


async def run(params: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], int, str]:
    seen: dict[str, Any] = {}

    async def inner(state: Any, session: Any, p: Any) -> Any:
        seen.update(p)
        done = await trio.run_process(
            p["argv"], env=p["env"], capture_stdout=True, capture_stderr=True, check=False,
            cwd=p["cwd"].removeprefix("file://"),
        )  # fmt: skip
        seen["rc"] = done.returncode
        seen["out"] = (done.stdout + done.stderr).decode()
        return {"processId": p["processId"], "sandboxType": "none"}

    with trio.fail_after(30):
        result = await codex_start(inner, local=True, **kw)(None, None, params)
    return result, seen["rc"], seen["out"]


def start(work: pathlib.Path, script: str, sandbox: Any) -> dict[str, Any]:
    return {
        "processId": "p1",
        "argv": ["/bin/sh", "-c", script],
        "cwd": file_uri(str(work)),
        "envPolicy": {
            "inherit": "all",
            "ignoreDefaultExcludes": True,
            "exclude": [],
            "set": {},
            "includeOnly": [],
        },
        "env": {"MARK": "m1"},
        "tty": False,
        "arg0": None,
        "sandbox": sandbox,
    }


@pytest.fixture
def work(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "work"
    (root / ".git").mkdir(parents=True)
    (root / "AGENTS.md").write_text("agents\n")
    return root


async def test_read_only_turn_cannot_write(work: pathlib.Path) -> None:
    script = "cat AGENTS.md; echo $MARK; echo x > new.txt; echo rc=$?"
    result, rc, out = await run(start(work, script, read_only(work)))
    assert result["sandboxType"] == "linuxSeccomp"
    assert "agents\nm1\n" in out and "rc=" in out and "rc=0" not in out
    assert "Read-only file system" in out
    assert not (work / "new.txt").exists()
    assert rc == 0


async def test_workspace_write_turn(work: pathlib.Path, tmp_path: pathlib.Path) -> None:
    (tmp_path / "sibling").mkdir()
    script = (
        "echo a > in.txt; echo in=$?; echo b > .git/x; echo git=$?; "
        f"echo c > {tmp_path}/sibling/out.txt; echo out=$?"
    )
    _, _, out = await run(start(work, script, workspace_write(work, tmp=False)))
    assert "in=0" in out and "git=0" not in out and "out=0" not in out
    assert (work / "in.txt").read_text() == "a\n"
    assert not (work / ".git" / "x").exists()
    assert not (tmp_path / "sibling" / "out.txt").exists()


async def test_restricted_network_reaches_nothing(work: pathlib.Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        script = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected || echo refused"
        params = start(work, script, read_only(work))
        params["argv"] = ["/bin/bash", "-c", script]
        _, _, out = await run(params)
    assert "refused" in out and "connected" not in out
    enabled = context(work, [special("root", "read")], network="enabled")
    params = start(work, "echo ok", enabled)
    result, _, out = await run(params)
    assert result["sandboxType"] == "linuxSeccomp" and "ok" in out


async def test_deny_entry_hides_a_path(work: pathlib.Path) -> None:
    (work / "secret.txt").write_text("s3cret")
    deny = {"path": {"type": "path", "path": str(work / "secret.txt")}, "access": "deny"}
    sandbox = context(work, [special("root", "read"), deny])
    _, _, out = await run(start(work, "cat secret.txt; echo done", sandbox))
    assert "s3cret" not in out and "done" in out


async def test_without_bwrap_or_off_host_it_is_refused_not_run(work: pathlib.Path) -> None:
    marker = work / "ran"
    for kw in ({"bwrap": lambda: None}, {}):
        local = "bwrap" in kw
        wrapped = codex_start(_never, local=local, **kw)
        with pytest.raises(Fail) as info:
            await wrapped(None, None, start(work, f"touch {marker}", read_only(work)))
        assert info.value.code == -32600 and "was not run" in info.value.message
    assert not marker.exists()


async def test_unsandboxed_start_passes_through_with_env_policy(work: pathlib.Path) -> None:
    result, _, out = await run(start(work, "echo $MARK $HOME", None))
    assert result["sandboxType"] == "none"
    assert out.strip() == f"m1 {os.environ['HOME']}"


async def _never(state: Any, session: Any, params: Any) -> Any:
    raise AssertionError("a refused start reached the handler")
