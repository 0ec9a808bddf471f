"""Run a `process/start` child inside bubblewrap, as the request's sandbox policy says.

codex's own exec-server runs a sandboxed turn's commands under bubblewrap (plus a
seccomp filter) and answers ``sandboxType: "linuxSeccomp"``. We do the same with the
system ``bwrap`` (Debian package ``bubblewrap``) when it is installed and works here,
and refuse the start otherwise (see `_sandbox`), never run it unsandboxed.

What the bwrap command line enforces, from the policy's resolved entries, parents
before children so the most specific entry wins:

- a readable root is ``--ro-bind / /`` (recursive, so every mount below is read-only
  too); without one the root is an empty tmpfs and only the listed paths exist;
- a ``read`` entry is ``--ro-bind``, a ``write`` entry ``--bind`` (writable), a
  ``deny`` entry hides the path (an empty read-only tmpfs over a directory,
  ``/dev/null`` over a file); entries that do not exist are skipped;
- a fresh minimal ``/dev`` (``--dev /dev``: null, zero, random, tty, its own ptys);
- ``network: restricted`` is a new, empty network namespace (``--unshare-net``: not even
  loopback reaches the host);
- ``--die-with-parent``: the child is SIGKILLed if bwrap dies, so a kill of the
  process group (how our backends end a process) ends it.

No seccomp filter is installed (codex's adds one to block new sockets of other
families; the empty network namespace already cuts the network). Glob deny patterns
cannot be expressed as mounts, so a policy with one is refused. ``sandboxType`` is
answered ``"linuxSeccomp"``: it is the only Linux value codex's protocol has (it means
"ran under the Linux platform sandbox").
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from ._sandbox import FsPolicy

__all__ = ["SANDBOX_TYPE", "bwrap_argv", "bwrap_path"]

SANDBOX_TYPE = "linuxSeccomp"
_KERNEL_FS = ("/dev", "/proc", "/sys")


@functools.cache
def bwrap_path() -> str | None:
    """The system bwrap, if it is installed and can build a sandbox here (checked once:
    a kernel or container without user namespaces makes it fail at run time)."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    try:
        done = subprocess.run(
            [path, "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-net", "--", "/bin/true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return path if done.returncode == 0 else None


def _under_kernel_fs(path: str) -> bool:
    return any(path == k or path.startswith(k + "/") for k in _KERNEL_FS)


def bwrap_argv(
    bwrap: str, policy: FsPolicy | None, network_enabled: bool, cwd: str
) -> list[str] | None:
    """The bwrap prefix (ending in ``--``) for ``policy`` (None: the file system is
    unrestricted); None when the policy cannot be expressed as mounts."""
    if policy is not None and policy.deny_globs:
        return None
    argv = [bwrap, "--die-with-parent"]
    if policy is None:
        argv += ["--bind", "/", "/"]
    else:
        root = policy.access("/")
        if root == "deny":
            argv += ["--tmpfs", "/"]
        else:
            argv += ["--bind" if root == "write" else "--ro-bind", "/", "/"]
        for path, access in sorted(set(policy.entries), key=lambda e: (len(e[0]), e[0])):
            if path == "/" or _under_kernel_fs(path) or policy.access(path) != access:
                continue  # the root is done; a tie lost to a stronger entry is skipped
            if not os.path.lexists(path):
                continue
            if access == "read":
                argv += ["--ro-bind", path, path]
            elif access == "write":
                argv += ["--bind", path, path]
            elif os.path.isdir(path):
                argv += ["--tmpfs", path, "--remount-ro", path]
            else:
                argv += ["--ro-bind", "/dev/null", path]
    argv += ["--dev", "/dev"]
    if not network_enabled:
        argv.append("--unshare-net")
    argv += ["--chdir", cwd, "--"]
    return argv
