"""The `fs/*` methods the codex CLI calls on an exec-server, with codex's semantics.

codex runs every file operation of a turn through its exec-server: `.git` discovery and
`AGENTS.md` (`fs/getMetadata`, `fs/readFile`), `apply_patch` (`fs/readFile`,
`fs/writeFile`, `fs/createDirectory`, `fs/remove`), `view_image` (`fs/readFile`), and
more. Without them `AGENTS.md` silently drops out of the model's instructions and
every patch fails to write. Field names, defaults and error codes follow codex's
server: a missing path is ``-32004 No such file or directory (os error 2)``, an
invalid input or a denied operation ``-32600``, anything else ``-32603`` with the OS
text (``"<strerror> (os error N)"``, as Rust prints an ``io::Error``).

Security stance: paths are ``file://`` URIs (or plain paths) that must be absolute and
normalised (no ``.``/``..``/empty components), file contents moved in one message are
bounded by ``Limits.fs_file_budget`` and directory listings by
``Limits.max_fs_dir_entries``; reads and writes open with ``O_NONBLOCK`` and refuse
anything but a regular file (no FIFO can hang a worker), ``followSymlinks: false``
opens with ``O_NOFOLLOW``; ``fs/remove`` never follows a link (it removes the link). A
request that carries a sandbox policy is checked against it (see `_sandbox`). The
blocking calls run in worker threads, a few at a time.

Wiring: ``fs_methods(server)`` gives ``{method: (handler, lane)}`` with the handler
signature of ``Methods`` (``async (state, session, params) -> result``).
"""

from __future__ import annotations

import binascii
import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import trio

from .._protocol import _jsonrpc as rpc
from .._protocol._limits import Limits
from .._protocol._messages import ParamsError
from .._uri import file_uri, uri_path
from ._errors_map import Fail
from ._sandbox import FsPolicy, fs_policy

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._conn import ConnState
    from ._session import Session

__all__ = ["FS_METHODS", "NOT_FOUND", "FileOps", "fs_methods", "fs_path"]

NOT_FOUND = -32004
FS_METHODS = (
    "fs/getMetadata", "fs/readFile", "fs/writeFile", "fs/createDirectory",
    "fs/readDirectory", "fs/remove", "fs/copy", "fs/canonicalize",
)  # fmt: skip
T = TypeVar("T")


class _HasLimits(Protocol):
    @property
    def limits(self) -> Limits: ...


def _os_text(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{os.strerror(code)} (os error {code})" if code else str(exc)


def os_fail(exc: OSError) -> Fail:
    """An OSError as codex's exec-server answers it (NotFound / InvalidInput and
    PermissionDenied / the rest)."""
    if exc.errno == errno.ENOENT:
        return Fail(NOT_FOUND, _os_text(exc))
    if exc.errno in (errno.EINVAL, errno.EACCES, errno.EPERM):
        return Fail(rpc.INVALID_REQUEST, _os_text(exc))
    return Fail(rpc.INTERNAL_ERROR, _os_text(exc))


def fs_path(value: Any, field: str = "path") -> str:
    """An absolute, normalised path from a ``file://`` URI (or a plain path)."""
    if not isinstance(value, str):
        raise ParamsError(f"invalid type for `{field}`: expected a file URI string")
    path = value if value.startswith("/") else uri_path(value)
    if path is None:
        raise ParamsError(f"`{field}` is not a file URI: {value!r}")
    if not path.startswith("/") or "\x00" in path:
        raise ParamsError(f"`{field}` must be an absolute path: {value!r}")
    try:
        os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate (a JSON escape): no OS name has it
        raise ParamsError(f"`{field}` cannot be encoded for the OS: {value!r}") from None
    trimmed = path.rstrip("/") or "/"
    parts = trimmed.split("/")[1:]
    if trimmed != "/" and any(p in ("", ".", "..") for p in parts):
        raise ParamsError(f"`{field}` must be a normalised path (no `.`, `..` or `//`): {value!r}")
    return trimmed


def _obj(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise ParamsError("invalid type: expected a params object")
    return params


def _req(params: dict[str, Any], key: str) -> Any:
    if key not in params:
        raise ParamsError(f"missing field `{key}`")
    return params[key]


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ParamsError(f"invalid type for `{key}`: expected a boolean")
    return value


def _resolved(path: str, follow: bool) -> str:
    """Where an operation on ``path`` really lands: the parent's symlinks are always
    resolved; the last component's only if the operation follows it."""
    if follow:
        return os.path.realpath(path)
    parent, name = posixpath.split(path)
    return posixpath.join(os.path.realpath(parent), name) if name else "/"


def _check_tree(policy: FsPolicy, root: str) -> None:
    """A write that replaces a whole tree (remove -r, copy into): the root must be
    writable and no narrower read-only or denied entry may lie inside it."""
    policy.check([root], write=True)
    prefix = root.rstrip("/") + "/"
    for path, access in policy.entries:
        if access != "write" and path.startswith(prefix):
            policy.check([path], write=True)


class FileOps:
    """The blocking file operations, one per method, raising Fail on refusal."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def get_metadata(self, path: str, follow: bool) -> dict[str, Any]:
        lst = os.lstat(path)
        is_link = stat.S_ISLNK(lst.st_mode)
        st = os.stat(path) if (is_link and follow) else lst
        return {
            "isDirectory": stat.S_ISDIR(st.st_mode),
            "isFile": stat.S_ISREG(st.st_mode),
            "isSymlink": is_link,
            "size": st.st_size,
            "createdAtMs": 0,  # Linux reports no birth time through stat (codex: 0 too)
            "modifiedAtMs": st.st_mtime_ns // 1_000_000,
        }

    def read_file(self, path: str, follow: bool) -> bytes:
        budget = self.limits.fs_file_budget
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(st.st_mode):
                raise Fail(rpc.INVALID_REQUEST, f"path `{path}` is not a file")
            too_big = Fail(
                rpc.INVALID_REQUEST, f"file is too large to read: limit is {budget} bytes"
            )
            if st.st_size > budget:
                raise too_big
            chunks: list[bytes] = []
            got = 0
            while got <= budget:
                data = os.read(fd, min(1 << 20, budget + 1 - got))
                if not data:
                    break
                chunks.append(data)
                got += len(data)
            if got > budget:
                raise too_big
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes, follow: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
        flags |= 0 if follow else os.O_NOFOLLOW
        fd = os.open(path, flags, 0o666)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Fail(rpc.INVALID_REQUEST, f"path `{path}` is not a file")
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def create_directory(self, path: str, recursive: bool) -> None:
        if recursive:
            os.makedirs(path, exist_ok=True)
        else:
            os.mkdir(path)

    def read_directory(self, path: str) -> list[dict[str, Any]]:
        cap = self.limits.max_fs_dir_entries
        entries: list[dict[str, Any]] = []
        with os.scandir(os.fsencode(path)) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue  # a broken or unreadable link is left out, as codex does
                if len(entries) >= cap:
                    raise Fail(
                        rpc.INTERNAL_ERROR,
                        f"fs/readDirectory returned more than {cap} entries; limit is {cap}",
                    )
                entries.append({
                    "fileName": entry.name.decode("utf-8", "replace"),
                    "isDirectory": stat.S_ISDIR(st.st_mode),
                    "isFile": stat.S_ISREG(st.st_mode),
                })  # fmt: skip
        return entries

    def remove(self, path: str, recursive: bool, force: bool) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if force:
                return
            raise
        if stat.S_ISDIR(st.st_mode):
            if recursive:
                shutil.rmtree(path)  # never follows a link inside the tree
            else:
                os.rmdir(path)
        else:
            os.unlink(path)

    def copy(self, src: str, dst: str, recursive: bool) -> None:
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                raise Fail(
                    rpc.INVALID_REQUEST,
                    "fs/copy requires recursive: true when sourcePath is a directory",
                )
            real_src = os.path.realpath(src)
            real_dst = os.path.realpath(dst)
            if real_dst == real_src or real_dst.startswith(real_src.rstrip("/") + "/"):
                raise Fail(
                    rpc.INVALID_REQUEST,
                    "fs/copy cannot copy a directory to itself or one of its descendants",
                )
            self._copy_tree(src, dst)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            shutil.copy(src, dst)
        else:
            raise Fail(
                rpc.INVALID_REQUEST,
                "fs/copy only supports regular files, directories, and symlinks",
            )

    def _copy_tree(self, src: str, dst: str) -> None:
        os.makedirs(dst, exist_ok=True)
        with os.scandir(src) as it:
            for entry in it:
                target = os.path.join(dst, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    self._copy_tree(entry.path, target)
                elif entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                elif entry.is_file(follow_symlinks=False):
                    shutil.copy(entry.path, target)

    def canonicalize(self, path: str) -> str:
        return os.path.realpath(path, strict=True)


Handler = Callable[["ConnState", "Session", Any], "Awaitable[Any]"]
Lane = Literal["ordered", "control", "free"]


def fs_methods(server: _HasLimits, workers: int = 4) -> dict[str, tuple[Handler, Lane]]:
    """The `fs/*` handlers bound to ``server.limits``, for ``Methods.table``."""
    ops = FileOps(server.limits)
    limiter = trio.CapacityLimiter(workers)

    async def run(fn: Callable[[], T]) -> T:
        def guarded() -> T:
            try:
                return fn()
            except OSError as exc:
                raise os_fail(exc) from None

        return await trio.to_thread.run_sync(guarded, limiter=limiter)

    def policy_of(p: dict[str, Any]) -> FsPolicy | None:
        return fs_policy(p.get("sandbox"))

    async def get_metadata(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        path, follow = fs_path(_req(p, "path")), _flag(p, "followSymlinks", True)
        policy = policy_of(p)

        def op() -> dict[str, Any]:
            if policy is not None:
                policy.check([_resolved(path, follow)], write=False)
            return ops.get_metadata(path, follow)

        return await run(op)

    async def read_file(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        path, follow = fs_path(_req(p, "path")), _flag(p, "followSymlinks", True)
        policy = policy_of(p)

        def op() -> bytes:
            if policy is not None:
                policy.check([_resolved(path, follow)], write=False)
            return ops.read_file(path, follow)

        data = await run(op)
        return {"dataBase64": binascii.b2a_base64(data, newline=False).decode()}

    async def write_file(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        path, follow = fs_path(_req(p, "path")), _flag(p, "followSymlinks", True)
        raw = _req(p, "dataBase64")
        if not isinstance(raw, str):
            raise ParamsError("invalid type for `dataBase64`: expected a string")
        budget = server.limits.fs_file_budget
        too_big = Fail(rpc.INVALID_REQUEST, f"file is too large to write: limit is {budget} bytes")
        if len(raw) > (budget + 2) // 3 * 4:
            raise too_big  # before decoding it
        try:
            data = binascii.a2b_base64(raw.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise Fail(
                rpc.INVALID_REQUEST, f"fs/writeFile requires valid base64 dataBase64: {exc}"
            ) from None
        if len(data) > budget:
            raise too_big
        policy = policy_of(p)

        def op() -> None:
            if policy is not None:
                policy.check([_resolved(path, False), _resolved(path, follow)], write=True)
            ops.write_file(path, data, follow)

        await run(op)
        return {}

    async def create_directory(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        path, recursive = fs_path(_req(p, "path")), _flag(p, "recursive", True)
        policy = policy_of(p)

        def op() -> None:
            if policy is not None:
                policy.check([_resolved(path, True)], write=True)
            ops.create_directory(path, recursive)

        await run(op)
        return {}

    async def read_directory(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        path = fs_path(_req(p, "path"))
        policy = policy_of(p)

        def op() -> list[dict[str, Any]]:
            if policy is not None:
                policy.check([_resolved(path, True)], write=False)
            return ops.read_directory(path)

        return {"entries": await run(op)}

    async def remove(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        path = fs_path(_req(p, "path"))
        recursive, force = _flag(p, "recursive", True), _flag(p, "force", True)
        policy = policy_of(p)

        def op() -> None:
            if policy is not None:
                _check_tree(policy, _resolved(path, False))
            ops.remove(path, recursive, force)

        await run(op)
        return {}

    async def copy(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        src = fs_path(_req(p, "sourcePath"), "sourcePath")
        dst = fs_path(_req(p, "destinationPath"), "destinationPath")
        recursive = _req(p, "recursive")
        if not isinstance(recursive, bool):
            raise ParamsError("invalid type for `recursive`: expected a boolean")
        policy = policy_of(p)

        def op() -> None:
            if policy is not None:
                policy.check([_resolved(src, False)], write=False)
                _check_tree(policy, _resolved(dst, False))
            ops.copy(src, dst, recursive)

        await run(op)
        return {}

    async def canonicalize(state: ConnState, session: Session, params: Any) -> Any:
        p = _obj(params)
        path = fs_path(_req(p, "path"))
        policy = policy_of(p)

        def op() -> str:
            if policy is not None:
                policy.check([_resolved(path, True)], write=False)
            return ops.canonicalize(path)

        return {"path": file_uri(await run(op))}

    handlers: dict[str, Handler] = {
        "fs/getMetadata": get_metadata,
        "fs/readFile": read_file,
        "fs/writeFile": write_file,
        "fs/createDirectory": create_directory,
        "fs/readDirectory": read_directory,
        "fs/remove": remove,
        "fs/copy": copy,
        "fs/canonicalize": canonicalize,
    }
    return {name: (h, "free") for name, h in handlers.items()}
