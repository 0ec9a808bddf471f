"""codex's sandbox requests (`process/start.sandbox`, `fs/*.sandbox`): enforced or refused.

codex sends a ``FileSystemSandboxContext`` with a turn's permissions:
``{"permissions": {"type": "managed", "file_system": {"type": "restricted", "entries":
[...]}, "network": "restricted"}, "cwd", "workspaceRoots", ...}`` (read-only: root
readable; workspace-write: also the project roots, ``/tmp`` and ``$TMPDIR`` writable,
with ``.git``/``.agents``/``.codex`` inside them read-only), ``"disabled"``, or
``"external"`` (the caller isolates the file system; only network is asked of us).
A ``null`` sandbox means unsandboxed (codex sends it for ``danger-full-access``).

We never silently drop a sandbox (fail closed):

- ``fs/*``: the request's policy is evaluated here, in the server, on the *resolved*
  path (symlinks followed as the operation would follow them, so a link inside the
  workspace cannot lead a write outside it): the most specific entry covering the path
  decides (on a tie ``deny`` beats ``write`` beats ``read``); no entry means no access.
  A policy we do not understand (unknown profile type, unknown special path in a deny
  entry) refuses every request that carries it. Limits: the check and the operation
  are two steps, so a concurrent process that swaps a path component for a symlink in
  between can win the race; codex's server closes that gap by running the operation
  in a bubblewrap helper.
- ``process/start``: a start whose policy restricts anything (file system or network)
  runs under bubblewrap when the server's backend is local and ``bwrap`` works here
  (`_bwrap`, `_codex_start`), and is refused otherwise with an error that says so
  (the model sees it as the tool's failure). Only a policy that restricts nothing runs
  as it is, answered ``sandboxType: "none"``.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Iterable
from typing import Any

import attrs

from .._protocol import _jsonrpc as rpc
from .._uri import uri_path
from ._errors_map import Fail

__all__ = [
    "FsPolicy",
    "ProcessNeeds",
    "fs_policy",
    "no_sandbox_refusal",
    "process_needs",
    "process_sandbox_refusal",
]

_RANK = {"read": 0, "write": 1, "deny": 2, "none": 2}
_MINIMAL = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/dev/null")


def _uri(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if value.startswith("/"):
        return value
    return uri_path(value)


@attrs.frozen
class FsPolicy:
    """A restricted file-system policy, resolved to absolute paths.

    ``entries`` are (path, access) with access ``read``/``write``/``deny``;
    ``deny_globs`` are deny patterns; ``full_write`` / ``full_read`` mark a policy
    that grants that everywhere (then there is nothing to enforce for it)."""

    entries: tuple[tuple[str, str], ...]
    deny_globs: tuple[str, ...] = ()

    def access(self, path: str) -> str:
        """``deny``, ``read`` or ``write``: what the policy allows on absolute ``path``."""
        for pattern in self.deny_globs:
            if fnmatch.fnmatchcase(path, pattern):
                return "deny"
        best: tuple[int, int] | None = None
        for root, access in self.entries:
            if root in (path, "/") or path.startswith(root.rstrip("/") + "/"):
                key = (len(root), _RANK[access])
                if best is None or key > best:
                    best = key
        if best is None:
            return "deny"
        return {0: "read", 1: "write", 2: "deny"}[best[1]]

    @property
    def full_write(self) -> bool:
        return (
            self.access("/") == "write"
            and not self.deny_globs
            and all(a == "write" for _, a in self.entries)
        )

    def check(self, paths: Iterable[str], write: bool) -> None:
        """Raise Fail (-32600, as codex maps a denied operation) unless every path is
        readable, or with ``write`` writable."""
        need = "write" if write else "read"
        for path in paths:
            got = self.access(path)
            if got == "deny" or (write and got != "write"):
                raise Fail(
                    rpc.INVALID_REQUEST,
                    f"Permission denied (os error 13): the sandbox policy of this request "
                    f"does not allow {need} access to {path}",
                )


def _refuse(reason: str) -> Fail:
    return Fail(rpc.INVALID_REQUEST, f"sandbox policy not supported: {reason}")


def _special(value: Any, roots: list[str]) -> list[str] | None:
    """Absolute paths of a special path; None for a kind we do not know."""
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind in ("project_roots", "current_working_directory"):
        assert isinstance(value, dict)
        sub = value.get("subpath")
        if sub is None:
            return list(roots)
        if not isinstance(sub, str) or sub.startswith("/") or ".." in sub.split("/"):
            return None
        return [posixpath.join(r, sub) for r in roots]
    if kind == "tmpdir":
        tmp = os.environ.get("TMPDIR")
        return [os.path.realpath(tmp)] if tmp and tmp.startswith("/") else []
    fixed = {"root": ["/"], "minimal": list(_MINIMAL), "slash_tmp": ["/tmp"]}
    return fixed.get(kind) if isinstance(kind, str) else None


def _roots(ctx: dict[str, Any]) -> list[str]:
    raw = ctx.get("workspaceRoots")
    if not raw:
        pc = ctx.get("policyContext")
        raw = pc.get("workspaceRoots") if isinstance(pc, dict) else None
    if not raw and ctx.get("cwd") is not None:
        raw = [ctx["cwd"]]
    out = []
    for item in raw or []:
        path = _uri(item)
        if path is None or not path.startswith("/"):
            raise _refuse(f"workspace root {item!r} is not an absolute file URI")
        out.append(os.path.realpath(path))
    return out


def fs_policy(ctx: Any) -> FsPolicy | None:
    """The file-system policy of a wire sandbox context: None when it restricts
    nothing on the file system. Raises Fail for one we cannot enforce."""
    if ctx is None:
        return None
    if not isinstance(ctx, dict) or not isinstance(ctx.get("permissions"), dict):
        raise _refuse("expected an object with `permissions`")
    perms = ctx["permissions"]
    kind = perms.get("type")
    if kind in ("disabled", "external"):
        return None  # "external": the caller isolates the file system
    if kind != "managed":
        raise _refuse(f"unknown permissions type {kind!r}")
    fs = perms.get("file_system")
    if not isinstance(fs, dict):
        raise _refuse("managed permissions without `file_system`")
    if fs.get("type") == "unrestricted":
        return None
    if fs.get("type") != "restricted" or not isinstance(fs.get("entries"), list):
        raise _refuse(f"unknown file_system type {fs.get('type')!r}")
    roots = _roots(ctx)
    entries: list[tuple[str, str]] = []
    globs: list[str] = []
    for entry in fs["entries"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), dict):
            raise _refuse(f"malformed entry {entry!r}")
        access = entry.get("access")
        if access not in _RANK:
            raise _refuse(f"unknown access {access!r}")
        access = "deny" if access == "none" else access
        path = entry["path"]
        ptype = path.get("type")
        if ptype == "path":
            target = _uri(path.get("path"))
            paths = [os.path.realpath(target)] if target and target.startswith("/") else None
        elif ptype == "special":
            paths = _special(path.get("value"), roots)
            paths = [os.path.realpath(p) for p in paths] if paths is not None else None
        elif ptype == "glob_pattern" and isinstance(path.get("pattern"), str):
            if access == "deny":
                globs.append(path["pattern"])
            continue  # a grant by pattern is not taken (narrower is safe)
        else:
            paths = None
        if paths is None:
            if access == "deny":
                raise _refuse(f"cannot honour the deny entry {entry!r}")
            continue  # a grant we do not understand is not granted
        entries.extend((p, access) for p in paths)
    policy = FsPolicy(tuple(entries), tuple(globs))
    return None if policy.full_write else policy


@attrs.frozen
class ProcessNeeds:
    """What a ``process/start`` sandbox asks to enforce: a file-system policy (None:
    the file system is unrestricted) and whether the network stays reachable."""

    fs: FsPolicy | None
    network_enabled: bool

    @property
    def what(self) -> str:
        return "a restricted file system" if self.fs is not None else "restricted network access"


def process_needs(params: Any) -> ProcessNeeds | None:
    """None when ``process/start`` may run its child as it is (no sandbox asked, or one
    that restricts nothing). Raises Fail for a request nothing here can enforce."""
    if not isinstance(params, dict):
        return None
    if params.get("enforceManagedNetwork") or params.get("networkProxy") is not None:
        raise _refuse(
            "this exec-server cannot enforce managed networking or launch a network "
            "proxy; the command was not run"
        )
    ctx = params.get("sandbox")
    if ctx is None:
        return None
    fs = fs_policy(ctx)
    perms = ctx["permissions"]
    network = "enabled" if perms.get("type") == "disabled" else perms.get("network")
    if fs is None and network == "enabled":
        return None
    return ProcessNeeds(fs, network == "enabled")


def no_sandbox_refusal(needs: ProcessNeeds, why: str = "has no OS sandbox") -> Fail:
    return _refuse(
        f"the request asks for {needs.what}, and this exec-server (unified_exec) {why} "
        "to run the command in, so it was not run. Install bubblewrap (`bwrap`) on the "
        "exec-server host, or run codex with `--sandbox danger-full-access` against this "
        "exec-server (isolating the server itself, e.g. in a container)"
    )


def process_sandbox_refusal(params: Any) -> Fail | None:
    """The Fail for a start that asks for any restriction, as a server without an OS
    sandbox answers it (None: nothing to enforce)."""
    try:
        needs = process_needs(params)
    except Fail as exc:
        return exc
    return None if needs is None else no_sandbox_refusal(needs)
