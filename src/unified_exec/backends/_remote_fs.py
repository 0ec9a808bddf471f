"""Typed file methods over an exec-server's ``fs/*`` (issue 8): read, write, stat,
list, mkdir, remove, copy and canonicalize on the server's machine, over the same
connection (and session) as its processes, so an agent framework can move files to
and from a sandbox without a second channel.

Wire shapes and error codes are codex's (``codex exec-server`` 0.169-0.171, and ours
in ``server/_fs``): paths travel as ``file://`` URIs, file contents as base64.

Design, in one place:

- **Paths** must be absolute; ``.`` components, repeated and trailing slashes are
  removed, ``..`` is refused (servers disagree on it: codex resolves it lexically,
  ours refuses it), so every server sees the same path. Anything else is an
  ``InvalidRequestError`` before a byte is sent.
- **Errors**: every refusal by the server is a ``RemoteFileError`` (an ``RpcError``,
  so ``.code`` and ``.message`` are the server's; ``.method``, ``.path`` and
  ``.errno`` — parsed from codex's ``"... (os error N)"`` — are added). A missing
  path (``-32004``, or ENOENT) is ``RemoteFileNotFoundError``, which is also a
  ``FileNotFoundError``. A method the server lacks (``-32601``) or params it rejects
  (``-32602``) is an ``InvalidRequestError``.
- **Sizes** are bounded by the client's ``Limits``: ``read_file`` asks for the size
  first and refuses a file over ``Limits.fs_file_budget`` (or ``max_bytes``) with a
  ``RemoteFileError`` (errno EFBIG) instead of pulling it into memory; ``write_file``
  refuses data over the budget before sending; a listing over
  ``Limits.max_fs_dir_entries`` is refused.
- **Retries**: what is safe to repeat (reads, writes, ``recursive`` mkdir,
  ``force`` remove) is sent again, once, if the link is cut and the session resumes;
  the rest fails with ``TransportLostError`` rather than run twice. (Once: a file
  that reports a small size and then answers more than ``Limits.max_message_bytes``
  — it grew, or it is a /proc file — makes the client drop the link; a second time
  is the caller's ``TransportLostError``, and the session resumes as usual.)
"""

from __future__ import annotations

import binascii
import errno as errno_codes
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import (
    InvalidRequestError,
    RemoteProtocolError,
    RpcError,
    TransportLostError,
)
from .._protocol import _jsonrpc as rpc
from .._uri import file_uri, uri_path
from ._remote_fswatch import WATCH_CAPABILITY, WATCH_MISSING, MissingWatcher

if TYPE_CHECKING:
    from .._protocol._limits import Limits
    from ._remote_link import Link

__all__ = [
    "DirectoryEntry",
    "FileMetadata",
    "RemoteFileError",
    "RemoteFileMethods",
    "RemoteFileNotFoundError",
    "remote_path",
]

NOT_FOUND = -32004  # codex: io::ErrorKind::NotFound
_OS_ERROR = re.compile(r"\(os error (\d+)\)\s*$")


class RemoteFileError(RpcError):
    """A file operation the exec-server refused (or the client refused for it).

    ``code``/``message`` are the server's JSON-RPC error; ``method`` and ``path`` say
    what was asked; ``errno`` is the OS error number when the server reported one.
    """

    def __init__(
        self, code: int, message: str, *, method: str, path: str, errno: int | None = None
    ) -> None:
        super().__init__(code, message)
        self.method = method
        self.path = path
        self.errno = errno

    def __str__(self) -> str:
        return f"{self.method} {self.path}: {self.message} (code {self.code})"


class RemoteFileNotFoundError(RemoteFileError, FileNotFoundError):
    """The path does not exist on the exec-server's machine."""

    def __init__(self, code: int, message: str, *, method: str, path: str) -> None:
        super().__init__(code, message, method=method, path=path, errno=errno_codes.ENOENT)
        self.strerror = message
        self.filename = path

    def __str__(self) -> str:
        return RemoteFileError.__str__(self)


@attrs.frozen
class FileMetadata:
    """``fs/getMetadata``: what the server's ``stat`` says (symlinks followed unless
    asked not to; ``is_symlink`` says whether the path itself is a link). Times are
    milliseconds since the epoch; ``created_at_ms`` is 0 where the OS has no birth time."""

    is_directory: bool
    is_file: bool
    is_symlink: bool
    size: int
    created_at_ms: int
    modified_at_ms: int


@attrs.frozen
class DirectoryEntry:
    """One entry of ``fs/readDirectory`` (links followed: a link to a file is a file;
    servers leave out entries they cannot stat, such as broken links)."""

    name: str
    is_directory: bool
    is_file: bool


def remote_path(path: str | os.PathLike[str]) -> str:
    """``path`` as it goes on the wire: absolute and normalised (see the module doc)."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise InvalidRequestError(
            f"a remote path must be a str or os.PathLike, not {type(path).__name__}"
        ) from None
    if not isinstance(text, str):
        raise InvalidRequestError("a remote path must be text, not bytes")
    if not text.startswith("/"):
        raise InvalidRequestError(f"a remote path must be absolute, not {text!r}")
    if "\x00" in text:
        raise InvalidRequestError(f"a remote path must not contain NUL: {text!r}")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidRequestError(f"a remote path must not contain '..': {text!r}")
    return "/" + "/".join(parts)


def _uri(path: str) -> str:
    try:
        return file_uri(path)
    except UnicodeEncodeError:
        raise InvalidRequestError(f"a remote path must be valid UTF-8: {path!r}") from None


def _fs_error(method: str, path: str, exc: RpcError) -> Exception:
    if exc.code == rpc.METHOD_NOT_FOUND:
        return InvalidRequestError(f"this exec-server does not implement {method}")
    if exc.code == rpc.INVALID_PARAMS:
        return InvalidRequestError(f"the exec-server refused {method} {path}: {exc.message}")
    found = _OS_ERROR.search(exc.message)
    os_errno = int(found.group(1)) if found else None
    if exc.code == NOT_FOUND or os_errno == errno_codes.ENOENT:
        return RemoteFileNotFoundError(exc.code, exc.message, method=method, path=path)
    return RemoteFileError(exc.code, exc.message, method=method, path=path, errno=os_errno)


def _get(result: Any, key: str, kind: type, method: str) -> Any:
    value = result.get(key) if isinstance(result, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RemoteProtocolError(f"{method} answered without a valid `{key}`: {result!r}")
    return value


class RemoteFileMethods:
    """The file methods of ``RemoteExecBackend`` (mixed in; it provides the link and
    the watcher, and hands it ``fs/missingChanged`` and resumes)."""

    _fs_watcher: MissingWatcher

    def _fs_link(self) -> Link:
        raise NotImplementedError

    async def _fs(self, method: str, path: str, params: dict[str, Any], *, retry: bool) -> Any:
        link = self._fs_link()
        for attempt in (1, 2):
            try:
                return await link.call(method, params)
            except RpcError as exc:
                raise _fs_error(method, path, exc) from None
            except TransportLostError:
                # Sent again once, after the resume (``Link.call`` would keep resending:
                # an answer too big for a message, from a file that grew or that
                # reports no size, as /proc files do, would then cut the link forever).
                if not retry or attempt == 2 or link.lost is not None:
                    raise
        raise AssertionError("unreachable")

    @property
    def _fs_limits(self) -> Limits:
        return self._fs_link().limits

    async def get_metadata(
        self, path: str | os.PathLike[str], *, follow_symlinks: bool = True
    ) -> FileMetadata:
        """``fs/getMetadata``. With ``follow_symlinks=False`` codex refuses a link
        ("path contains a symbolic link"); ours describes the link itself."""
        p = remote_path(path)
        params: dict[str, Any] = {"path": _uri(p)}
        if not follow_symlinks:
            params["followSymlinks"] = False
        method = "fs/getMetadata"
        r = await self._fs(method, p, params, retry=True)
        return FileMetadata(
            is_directory=_get(r, "isDirectory", bool, method),
            is_file=_get(r, "isFile", bool, method),
            is_symlink=_get(r, "isSymlink", bool, method),
            size=_get(r, "size", int, method),
            created_at_ms=_get(r, "createdAtMs", int, method),
            modified_at_ms=_get(r, "modifiedAtMs", int, method),
        )

    async def read_file(
        self,
        path: str | os.PathLike[str],
        *,
        follow_symlinks: bool = True,
        max_bytes: int | None = None,
    ) -> bytes:
        """The whole content of a regular file. A file over ``max_bytes`` (default and
        ceiling: ``Limits.fs_file_budget``) is refused before it is transferred."""
        p = remote_path(path)
        budget = self._fs_limits.fs_file_budget
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
                raise InvalidRequestError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
            budget = min(budget, max_bytes)
        meta = await self.get_metadata(p, follow_symlinks=follow_symlinks)
        method = "fs/readFile"
        if meta.size > budget:
            raise RemoteFileError(
                rpc.INVALID_REQUEST,
                f"file is too large to read: {meta.size} bytes, the limit is {budget}",
                method=method, path=p, errno=errno_codes.EFBIG,
            )  # fmt: skip
        params: dict[str, Any] = {"path": _uri(p)}
        if not follow_symlinks:
            params["followSymlinks"] = False
        raw = _get(await self._fs(method, p, params, retry=True), "dataBase64", str, method)
        if len(raw) > (budget + 2) // 3 * 4:
            raise RemoteFileError(
                rpc.INVALID_REQUEST,
                f"file grew past the limit of {budget} bytes while it was read",
                method=method, path=p, errno=errno_codes.EFBIG,
            )  # fmt: skip
        try:
            return binascii.a2b_base64(raw.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise RemoteProtocolError(f"{method} answered invalid base64: {exc}") from None

    async def write_file(
        self,
        path: str | os.PathLike[str],
        data: bytes | bytearray | memoryview,
        *,
        follow_symlinks: bool = True,
    ) -> None:
        """Create or truncate a regular file and write ``data`` (at most
        ``Limits.fs_file_budget`` bytes). The parent directory must exist."""
        p = remote_path(path)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidRequestError(f"data must be bytes, not {type(data).__name__}")
        budget = self._fs_limits.fs_file_budget
        if len(data) > budget:
            raise InvalidRequestError(
                f"{len(data)} bytes is too large to write in one fs/writeFile; "
                f"the limit is {budget} bytes (Limits.fs_file_budget)"
            )
        params: dict[str, Any] = {
            "path": _uri(p),
            "dataBase64": binascii.b2a_base64(data, newline=False).decode("ascii"),
        }
        if not follow_symlinks:
            params["followSymlinks"] = False
        await self._fs("fs/writeFile", p, params, retry=True)

    async def read_directory(self, path: str | os.PathLike[str]) -> list[DirectoryEntry]:
        """The entries of a directory (no ``.``/``..``), in the server's order."""
        p = remote_path(path)
        method = "fs/readDirectory"
        r = await self._fs(method, p, {"path": _uri(p)}, retry=True)
        entries = _get(r, "entries", list, method)
        cap = self._fs_limits.max_fs_dir_entries
        if len(entries) > cap:
            raise RemoteFileError(
                rpc.INTERNAL_ERROR,
                f"the directory has more than {cap} entries (Limits.max_fs_dir_entries)",
                method=method, path=p,
            )  # fmt: skip
        return [
            DirectoryEntry(
                name=_get(e, "fileName", str, method),
                is_directory=_get(e, "isDirectory", bool, method),
                is_file=_get(e, "isFile", bool, method),
            )
            for e in entries
        ]

    async def create_directory(
        self, path: str | os.PathLike[str], *, recursive: bool = True
    ) -> None:
        """``mkdir -p`` (``recursive``, the protocol's default), else one ``mkdir``
        (which fails if the path exists or its parent does not)."""
        p = remote_path(path)
        params = {"path": _uri(p), "recursive": bool(recursive)}
        await self._fs("fs/createDirectory", p, params, retry=bool(recursive))

    async def remove(
        self, path: str | os.PathLike[str], *, recursive: bool = True, force: bool = True
    ) -> None:
        """Remove a file, a link (never what it points to) or a directory tree
        (``recursive``); with ``force`` (the protocol's default) a missing path is fine."""
        p = remote_path(path)
        params = {"path": _uri(p), "recursive": bool(recursive), "force": bool(force)}
        await self._fs("fs/remove", p, params, retry=bool(force))

    async def copy(
        self,
        source: str | os.PathLike[str],
        destination: str | os.PathLike[str],
        *,
        recursive: bool = False,
    ) -> None:
        """Copy a file or a link (as a link); a directory only with ``recursive``."""
        src, dst = remote_path(source), remote_path(destination)
        params = {"sourcePath": _uri(src), "destinationPath": _uri(dst),
                  "recursive": bool(recursive)}  # fmt: skip
        await self._fs("fs/copy", src, params, retry=False)

    async def watch_missing(self, missing: Sequence[str | os.PathLike[str]]) -> None:
        """Return once one of the ``missing`` paths exists on the server's machine
        (at once if one does). Needs a server announcing ``fsWatchMissing`` (ours
        and codex do; see ``_remote_fswatch`` for how one server watch serves every
        caller); bound it with a trio timeout."""
        link = self._fs_link()
        caps = link.environment_info.get("capabilities")
        if not (isinstance(caps, dict) and caps.get(WATCH_CAPABILITY) is True):
            raise InvalidRequestError(f"this exec-server does not announce {WATCH_CAPABILITY}")
        if isinstance(missing, str | bytes | os.PathLike):
            raise InvalidRequestError("missing is a sequence of paths, not one path")
        paths = [remote_path(x) for x in missing]
        if not paths:
            raise InvalidRequestError("watch_missing needs at least one path")

        async def request(params: dict[str, Any]) -> Any:
            return await self._fs(WATCH_MISSING, f"({len(paths)} paths)", params, retry=True)

        async def appeared() -> bool:
            for path in paths:
                try:
                    await self.get_metadata(path)
                except RemoteFileNotFoundError:
                    continue
                return True
            return False

        await self._fs_watcher.wait([_uri(p) for p in paths], request, appeared)

    async def canonicalize(self, path: str | os.PathLike[str]) -> str:
        """The path with every symlink resolved (the path must exist)."""
        p = remote_path(path)
        method = "fs/canonicalize"
        r = await self._fs(method, p, {"path": _uri(p)}, retry=True)
        got = _get(r, "path", str, method)
        resolved = got if got.startswith("/") else uri_path(got)
        if resolved is None:
            raise RemoteProtocolError(f"{method} answered a path that is not a file URI: {got!r}")
        return resolved
