"""posix_spawn through ctypes: a PTY child with a controlling terminal, a working
directory and no inherited descriptors, without forking the interpreter.

Python's ``os.posix_spawn`` (3.11) cannot change directory or close the fds beyond
2, and ``subprocess`` cannot give a child a controlling tty without a
``preexec_fn`` — which forces a full fork of the interpreter (4x slower, see
perf-baselines.md). glibc >= 2.34 and musl expose what is needed as
``posix_spawn_file_actions_add{chdir,closefrom}_np``; setsid happens before the
file actions, so opening the pty slave by path makes it the controlling terminal.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping, Sequence

import attrs

__all__ = ["DupFd", "OpenPath", "spawn"]

_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_HAS_CLOSEFROM = hasattr(_libc, "posix_spawn_file_actions_addclosefrom_np")
_HAS_CHDIR = hasattr(_libc, "posix_spawn_file_actions_addchdir_np")

# Opaque libc structs; generous sizes (glibc: 80, 336 and 128 bytes).
_FA_SIZE = 256
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256


@attrs.frozen
class DupFd:
    """Give the child this parent fd."""

    fd: int


@attrs.frozen
class OpenPath:
    """Have the child open this path (after setsid: a tty becomes its terminal)."""

    path: str
    flags: int


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(rc, f"{what}: {os.strerror(rc)}")


# The C library's own environment: what os.environ's changes are written to
# (putenv/unsetenv), and what a child inherits from subprocess with env=None.
_ENVIRON = ctypes.c_void_p.in_dll(_libc, "environ")


def _environment(env: Mapping[str, str]) -> ctypes.Array[ctypes.c_char_p]:
    """A NULL-terminated array of ``KEY=value``."""
    items = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdio: tuple[DupFd | OpenPath, DupFd | OpenPath, DupFd | OpenPath],
) -> int:
    """Start ``path`` as the leader of a new session; return its pid.

    ``env`` None: the child inherits this process's environment.

    Raises OSError with the errno of whatever failed (chdir, open or exec).
    """
    if cwd is not None and not _HAS_CHDIR:
        raise OSError(0, "this C library lacks posix_spawn_file_actions_addchdir_np")
    fa = ctypes.create_string_buffer(_FA_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    _check(_libc.posix_spawn_file_actions_init(fa), "file_actions_init")
    try:
        _check(_libc.posix_spawnattr_init(attr), "spawnattr_init")
        try:
            for target, source in enumerate(stdio):
                if isinstance(source, OpenPath):
                    _check(
                        _libc.posix_spawn_file_actions_addopen(
                            fa, target, os.fsencode(source.path), source.flags, 0
                        ),
                        "addopen",
                    )
                else:
                    _check(_libc.posix_spawn_file_actions_adddup2(fa, source.fd, target), "adddup2")
            if _HAS_CLOSEFROM:
                _check(_libc.posix_spawn_file_actions_addclosefrom_np(fa, 3), "addclosefrom")
            else:  # pragma: no cover - old C libraries only
                for name in os.listdir("/proc/self/fd"):
                    if int(name) > 2:
                        _libc.posix_spawn_file_actions_addclose(fa, int(name))
            if cwd is not None:
                _check(_libc.posix_spawn_file_actions_addchdir_np(fa, os.fsencode(cwd)), "chdir")
            # Every signal back to its default (Python ignores SIGPIPE, and ignored
            # dispositions survive exec), and nothing blocked.
            sigdef = ctypes.create_string_buffer(_SIGSET_SIZE)
            sigmask = ctypes.create_string_buffer(_SIGSET_SIZE)
            _libc.sigfillset(sigdef)
            _libc.sigemptyset(sigmask)
            _check(_libc.posix_spawnattr_setsigdefault(attr, sigdef), "setsigdefault")
            _check(_libc.posix_spawnattr_setsigmask(attr, sigmask), "setsigmask")
            _check(
                _libc.posix_spawnattr_setflags(
                    attr, ctypes.c_short(_SETSID | _SETSIGDEF | _SETSIGMASK)
                ),
                "setflags",
            )
            c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
            # None: this process's environment as it is now, passed as is (building
            # a copy of it was ~5% of a spawn of /bin/true).
            c_env = _ENVIRON if env is None else _environment(env)
            pid = ctypes.c_int(0)
            rc = _libc.posix_spawn(ctypes.byref(pid), os.fsencode(path), fa, attr, c_argv, c_env)
            if rc != 0:
                raise OSError(rc, os.strerror(rc))
            return pid.value
        finally:
            _libc.posix_spawnattr_destroy(attr)
    finally:
        _libc.posix_spawn_file_actions_destroy(fa)
