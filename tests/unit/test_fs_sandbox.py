"""Sandbox requests are never silently dropped (issue 8): the policies below are the ones
codex 0.169.0 sent on the wire (recorded with tests/interop/_recording_proxy.py) for
`codex exec -s read-only` and `-s workspace-write`. fs/* requests are checked against
them on resolved paths; a process/start that asks for any restriction is refused."""

from __future__ import annotations

import base64
import os
import pathlib
import types
from typing import Any

import pytest
import trio

from unified_exec._protocol._limits import Limits
from unified_exec._uri import file_uri
from unified_exec.server._errors_map import Fail
from unified_exec.server._fs import fs_methods
from unified_exec.server._sandbox import fs_policy, process_sandbox_refusal


def special(kind: str, access: str, subpath: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"kind": kind}
    if subpath is not None:
        value["subpath"] = subpath
    entry: dict[str, Any] = {"path": {"type": "special", "value": value}, "access": access}
    if subpath is not None:
        entry["missing_path_behavior"] = "skip"
    return entry


def context(root: pathlib.Path, entries: list[dict[str, Any]], network: str = "restricted") -> Any:
    return {
        "permissions": {
            "type": "managed",
            "file_system": {"type": "restricted", "entries": entries},
            "network": network,
        },
        "cwd": file_uri(str(root)),
        "workspaceRoots": [file_uri(str(root))],
        "windowsSandboxLevel": "disabled",
        "useLegacyLandlock": False,
    }


def read_only(root: pathlib.Path) -> Any:
    return context(root, [special("root", "read")])


def workspace_write(root: pathlib.Path, tmp: bool = True) -> Any:
    """codex's workspace-write policy; ``tmp=False`` leaves out its /tmp and $TMPDIR
    grants (the test's own dirs live under /tmp)."""
    tmp_grants = [special("slash_tmp", "write"), special("tmpdir", "write")] if tmp else []
    return context(
        root,
        [
            special("root", "read"),
            special("project_roots", "write"),
            *tmp_grants,
            special("project_roots", "read", ".git"),
            special("project_roots", "read", ".agents"),
            special("project_roots", "read", ".codex"),
        ],
    )


async def call(method: str, params: Any) -> Any:
    handler, _ = fs_methods(types.SimpleNamespace(limits=Limits()))[method]
    with trio.fail_after(10):
        return await handler(None, None, params)


def write_params(path: pathlib.Path, sandbox: Any) -> dict[str, Any]:
    return {"path": file_uri(str(path)), "dataBase64": base64.b64encode(b"x").decode(),
            "sandbox": sandbox}  # fmt: skip


@pytest.fixture
def work(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "work"
    (root / ".git").mkdir(parents=True)
    (root / "AGENTS.md").write_text("agents")
    return root


async def test_read_only_policy_reads_but_never_writes(work: pathlib.Path) -> None:
    ro = read_only(work)
    got = await call("fs/readFile", {"path": file_uri(str(work / "AGENTS.md")), "sandbox": ro})
    assert base64.b64decode(got["dataBase64"]) == b"agents"
    with pytest.raises(Fail) as info:
        await call("fs/writeFile", write_params(work / "new.txt", ro))
    assert info.value.code == -32600 and "does not allow write" in info.value.message
    assert not (work / "new.txt").exists()
    for method, params in [
        ("fs/createDirectory", {"path": file_uri(str(work / "d")), "sandbox": ro}),
        ("fs/remove", {"path": file_uri(str(work / "AGENTS.md")), "sandbox": ro}),
        ("fs/copy", {"sourcePath": file_uri(str(work / "AGENTS.md")),
                     "destinationPath": file_uri(str(work / "c")), "recursive": False,
                     "sandbox": ro}),
    ]:  # fmt: skip
        with pytest.raises(Fail):
            await call(method, params)
    assert sorted(os.listdir(work)) == [".git", "AGENTS.md"]


async def test_workspace_write_policy(work: pathlib.Path, tmp_path: pathlib.Path) -> None:
    await call("fs/writeFile", write_params(tmp_path / "in-tmp", workspace_write(work)))
    ww = workspace_write(work, tmp=False)
    await call("fs/writeFile", write_params(work / "ok.txt", ww))
    assert (work / "ok.txt").read_bytes() == b"x"
    outside = tmp_path / "outside.txt"
    with pytest.raises(Fail):
        await call("fs/writeFile", write_params(outside, ww))
    with pytest.raises(Fail):  # .git stays read-only inside a writable root
        await call("fs/writeFile", write_params(work / ".git" / "config", ww))
    with pytest.raises(Fail):  # removing the root would remove the read-only .git
        await call("fs/remove", {"path": file_uri(str(work)), "sandbox": ww})
    assert not outside.exists() and (work / ".git").is_dir()


async def test_a_symlink_cannot_lead_a_write_outside(
    work: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (work / "escape").symlink_to(secret)
    (work / "file-link").symlink_to(secret / "f")
    ww = workspace_write(work, tmp=False)
    with pytest.raises(Fail):
        await call("fs/writeFile", write_params(work / "escape" / "f", ww))
    with pytest.raises(Fail):  # followSymlinks (default): the target decides
        await call("fs/writeFile", write_params(work / "file-link", ww))
    assert os.listdir(secret) == []


async def test_deny_entries_and_unknown_policies_fail_closed(work: pathlib.Path) -> None:
    deny = context(work, [special("root", "read"), {"path": {"type": "path",
                   "path": str(work / "AGENTS.md")}, "access": "deny"}])  # fmt: skip
    with pytest.raises(Fail):
        await call("fs/readFile", {"path": file_uri(str(work / "AGENTS.md")), "sandbox": deny})
    md = {"path": {"type": "glob_pattern", "pattern": "*.md"}, "access": "deny"}
    glob = context(work, [special("root", "read"), md])
    with pytest.raises(Fail):
        await call("fs/readFile", {"path": file_uri(str(work / "AGENTS.md")), "sandbox": glob})
    weird = context(work, [special("root", "read"), special("martian", "deny")])
    with pytest.raises(Fail, match="cannot honour"):
        fs_policy(weird)
    with pytest.raises(Fail, match="unknown permissions type"):
        fs_policy({"permissions": {"type": "quantum"}})
    with pytest.raises(Fail):
        fs_policy({"no": "permissions"})
    # a grant we do not understand is simply not granted
    odd_grant = context(work, [special("martian", "write")])
    assert fs_policy(odd_grant) is not None
    with pytest.raises(Fail):
        await call("fs/writeFile", write_params(work / "x", odd_grant))


def test_policies_that_restrict_nothing(work: pathlib.Path) -> None:
    assert fs_policy(None) is None
    assert fs_policy({"permissions": {"type": "disabled"}}) is None
    full = context(work, [special("root", "write")])
    assert fs_policy(full) is None
    unrestricted = {"permissions": {"type": "managed", "file_system": {"type": "unrestricted"},
                                    "network": "enabled"}}  # fmt: skip
    assert fs_policy(unrestricted) is None


def test_process_start_with_a_restriction_is_refused(work: pathlib.Path) -> None:
    for sandbox in (read_only(work), workspace_write(work)):
        fail = process_sandbox_refusal({"argv": ["true"], "sandbox": sandbox})
        assert fail is not None and fail.code == -32600
        assert "was not run" in fail.message
    net_only = context(work, [special("root", "write")], network="restricted")
    assert process_sandbox_refusal({"sandbox": net_only}) is not None
    external = {"permissions": {"type": "external", "network": "restricted"}}
    assert process_sandbox_refusal({"sandbox": external}) is not None
    assert process_sandbox_refusal({"sandbox": {"permissions": {"type": "managed"}}}) is not None
    assert process_sandbox_refusal({"sandbox": None, "enforceManagedNetwork": True}) is not None
    # nothing to enforce: runs
    assert process_sandbox_refusal({"sandbox": None, "enforceManagedNetwork": False}) is None
    assert process_sandbox_refusal({"sandbox": {"permissions": {"type": "disabled"}}}) is None
    full = context(work, [special("root", "write")], network="enabled")
    assert process_sandbox_refusal({"sandbox": full}) is None
