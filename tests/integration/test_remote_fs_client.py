"""RemoteExecBackend's typed file methods (issue 8), the same assertions against our
exec-server and the real codex 0.171.0 one (both subprocesses on 127.0.0.1, working
on this test's tmp_path, which is on the same machine, so the test checks the disk).
"""

from __future__ import annotations

import errno
import os
import pathlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import unified_exec as ue
from unified_exec import DirectoryEntry, FileMetadata, RemoteFileError, RemoteFileNotFoundError

from ..interop._cutproxy import CutProxy
from .test_remote_description import KINDS, served

BLOB = bytes(range(256)) * 64 + b"\x00\xff\r\n"  # every byte value, NULs, no UTF-8


@asynccontextmanager
async def files(
    kind: str, tmp_path: pathlib.Path, **kw: object
) -> AsyncIterator[ue.RemoteExecBackend]:
    with trio.fail_after(120):
        async with (
            served(kind, tmp_path) as (url, _),
            ue.RemoteExecBackend.connect(url, **kw) as backend,  # type: ignore[arg-type]
        ):
            yield backend


@pytest.mark.parametrize("kind", KINDS)
async def test_bytes_round_trip(kind: str, tmp_path: pathlib.Path) -> None:
    async with files(kind, tmp_path) as be:
        target = tmp_path / "blob.bin"
        await be.write_file(target, BLOB)
        assert target.read_bytes() == BLOB  # it is really on the server's disk
        assert await be.read_file(target) == BLOB
        await be.write_file(str(target), b"")  # truncates
        assert await be.read_file(str(target)) == b"" and target.stat().st_size == 0
        (tmp_path / "local.txt").write_bytes(b"made here\n")
        assert await be.read_file(tmp_path / "local.txt") == b"made here\n"
        await be.write_file(tmp_path / "ba.bin", bytearray(b"ab"))
        await be.write_file(tmp_path / "mv.bin", memoryview(b"xyz"))
        assert (tmp_path / "ba.bin").read_bytes() + (tmp_path / "mv.bin").read_bytes() == b"abxyz"


@pytest.mark.parametrize("kind", KINDS)
async def test_metadata_of_file_directory_and_symlink(kind: str, tmp_path: pathlib.Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to("f.txt")
    async with files(kind, tmp_path) as be:
        meta = await be.get_metadata(f)
        assert isinstance(meta, FileMetadata)
        assert (meta.is_file, meta.is_directory, meta.is_symlink, meta.size) == (
            True, False, False, 5)  # fmt: skip
        assert meta.modified_at_ms == f.stat().st_mtime_ns // 1_000_000
        assert meta.created_at_ms >= 0
        d = await be.get_metadata(tmp_path / "d")
        assert (d.is_file, d.is_directory, d.is_symlink) == (False, True, False)
        link = await be.get_metadata(tmp_path / "link")  # followed: a link to a file
        assert (link.is_file, link.is_symlink, link.size) == (True, True, 5)
        with pytest.raises(AttributeError):
            meta.size = 1  # type: ignore[misc]


@pytest.mark.parametrize("kind", KINDS)
async def test_directory_listing(kind: str, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "to-a").symlink_to("a.txt")
    (root / "to-sub").symlink_to("sub")
    async with files(kind, tmp_path) as be:
        entries = sorted(await be.read_directory(root), key=lambda e: e.name)
        assert entries == [
            DirectoryEntry("a.txt", is_directory=False, is_file=True),
            DirectoryEntry("sub", is_directory=True, is_file=False),
            DirectoryEntry("to-a", is_directory=False, is_file=True),
            DirectoryEntry("to-sub", is_directory=True, is_file=False),
        ]
        assert await be.read_directory(root / "sub") == []
        with pytest.raises(RemoteFileError) as info:
            await be.read_directory(root / "a.txt")
        assert info.value.errno == errno.ENOTDIR


@pytest.mark.parametrize("kind", KINDS)
async def test_missing_path_is_a_file_not_found_error(kind: str, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope"
    async with files(kind, tmp_path) as be:
        for call in (be.read_file, be.get_metadata, be.read_directory, be.canonicalize):
            with pytest.raises(RemoteFileNotFoundError) as info:
                await call(missing)
            err = info.value
            assert isinstance(err, FileNotFoundError) and isinstance(err, ue.RpcError)
            assert (err.code, err.errno, err.path) == (-32004, errno.ENOENT, str(missing))
            assert str(missing) in str(err)
        with pytest.raises(FileNotFoundError):
            await be.write_file(tmp_path / "no-dir" / "x", b"x")  # the parent is missing
        with pytest.raises(FileNotFoundError):
            await be.remove(missing, force=False)
        await be.remove(missing)  # force (the default): nothing to do


@pytest.mark.parametrize("kind", KINDS)
async def test_remove_create_copy_canonicalize(kind: str, tmp_path: pathlib.Path) -> None:
    async with files(kind, tmp_path) as be:
        deep = tmp_path / "a" / "b" / "c"
        await be.create_directory(deep)
        assert deep.is_dir()
        await be.create_directory(deep)  # recursive: exists is fine
        with pytest.raises(RemoteFileError) as info:
            await be.create_directory(deep, recursive=False)
        assert info.value.errno == errno.EEXIST
        with pytest.raises(FileNotFoundError):
            await be.create_directory(tmp_path / "x" / "y", recursive=False)
        (deep / "f.txt").write_bytes(b"F")

        await be.copy(deep / "f.txt", tmp_path / "g.txt")
        assert (tmp_path / "g.txt").read_bytes() == b"F"
        with pytest.raises(RemoteFileError) as info:
            await be.copy(tmp_path / "a", tmp_path / "a2")  # a directory needs recursive
        assert info.value.code == -32600
        await be.copy(tmp_path / "a", tmp_path / "a2", recursive=True)
        assert (tmp_path / "a2" / "b" / "c" / "f.txt").read_bytes() == b"F"

        (tmp_path / "ln").symlink_to(deep / "f.txt")
        assert await be.canonicalize(tmp_path / "ln") == str(deep / "f.txt")

        with pytest.raises(RemoteFileError) as info:
            await be.remove(tmp_path / "a", recursive=False)
        assert info.value.errno == errno.ENOTEMPTY
        await be.remove(tmp_path / "ln")  # the link, not its target
        assert not (tmp_path / "ln").is_symlink() and (deep / "f.txt").exists()
        await be.remove(tmp_path / "g.txt")
        await be.remove(tmp_path / "a")
        assert not (tmp_path / "a").exists() and not (tmp_path / "g.txt").exists()
        with pytest.raises(FileNotFoundError):
            await be.get_metadata(tmp_path / "a")


@pytest.mark.parametrize("kind", KINDS)
async def test_relative_and_unnormalised_paths(kind: str, tmp_path: pathlib.Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"ok")
    async with files(kind, tmp_path) as be:
        for bad in ("relative.txt", "./f.txt", "", f"{tmp_path}/../x", f"{tmp_path}/\0"):
            with pytest.raises(ue.InvalidRequestError):
                await be.read_file(bad)
        with pytest.raises(ue.InvalidRequestError, match="absolute"):
            await be.write_file("f.txt", b"x")
        with pytest.raises(ue.InvalidRequestError):
            await be.remove(b"/tmp/x")  # type: ignore[arg-type]
        # `.`, doubled and trailing slashes are normalised away (both servers see one path)
        assert await be.read_file(f"{tmp_path}/./f.txt") == b"ok"
        assert await be.get_metadata(f"/{tmp_path}//") == await be.get_metadata(tmp_path)
        assert (tmp_path / "f.txt").read_bytes() == b"ok"  # nothing was written


@pytest.mark.parametrize("kind", KINDS)
async def test_sizes_are_bounded_by_the_clients_limits(kind: str, tmp_path: pathlib.Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(200_000))
    limits = ue.Limits(max_fs_file_bytes=100_000)
    async with files(kind, tmp_path, limits=limits) as be:
        with pytest.raises(RemoteFileError, match="too large") as info:
            await be.read_file(big)
        assert info.value.errno == errno.EFBIG
        with pytest.raises(RemoteFileError, match="too large"):
            await be.read_file(tmp_path / "big.bin", max_bytes=10)
        with pytest.raises(ue.InvalidRequestError, match="too large"):
            await be.write_file(tmp_path / "out.bin", bytes(100_001))
        assert not (tmp_path / "out.bin").exists()
        # The link is intact: the refused calls sent nothing that could break it.
        await be.write_file(tmp_path / "out.bin", bytes(100_000))
        assert await be.read_file(tmp_path / "out.bin") == bytes(100_000)
        with pytest.raises(ue.InvalidRequestError):
            await be.read_file(big, max_bytes=-1)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_directory_or_a_device_is_not_a_file(kind: str, tmp_path: pathlib.Path) -> None:
    async with files(kind, tmp_path) as be:
        with pytest.raises(RemoteFileError):
            await be.read_file(tmp_path)
        dev = await be.get_metadata("/dev/null")
        assert (dev.is_file, dev.is_directory) == (False, False)
        with pytest.raises(RemoteFileError, match="not a file"):
            await be.read_file("/dev/null")


async def test_file_methods_over_stdio(tmp_path: pathlib.Path) -> None:
    serve = [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"]
    with trio.fail_after(60):
        async with ue.RemoteExecBackend.connect_stdio(serve) as be:
            await be.write_file(tmp_path / "s.bin", BLOB)
            assert await be.read_file(tmp_path / "s.bin") == BLOB
            assert [e.name for e in await be.read_directory(tmp_path)] == ["s.bin"]
        with pytest.raises(ue.InvalidRequestError, match="closed"):
            await be.read_file(tmp_path / "s.bin")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_answer_too_big_for_a_message_fails_the_call_not_the_session(
    kind: str, tmp_path: pathlib.Path
) -> None:
    """/proc/kallsyms reports size 0 but holds megabytes: the size check passes, the
    server's answer is over the client's message limit and the client drops the link.
    The read is resent once after the resume, then fails; the session lives on."""
    kallsyms = pathlib.Path("/proc/kallsyms")
    assert kallsyms.stat().st_size == 0 and len(kallsyms.read_bytes()) > 2**20
    limits = ue.Limits(max_message_bytes=1 << 20)
    async with files(kind, tmp_path, limits=limits) as be:
        proc = await ue.UnifiedExecProcess.start(be, ue.ExecRequest(argv=["cat"], pipe_stdin=True))
        with pytest.raises(ue.TransportLostError):
            await be.read_file("/proc/kallsyms")
        assert be.resumes >= 1
        await be.write_file(tmp_path / "after.txt", b"still here")
        assert await be.read_file(tmp_path / "after.txt") == b"still here"
        assert await proc.write(b"echo\n") is ue.WriteStatus.ACCEPTED
        res = await proc.read(wait=5.0)
        assert b"echo\n" in b"".join(c.data for c in res.chunks)
        await proc.terminate()


@pytest.mark.parametrize("kind", KINDS)
async def test_watch_missing_returns_when_a_path_appears(kind: str, tmp_path: pathlib.Path) -> None:
    async with files(kind, tmp_path) as be:
        with trio.move_on_after(1.5) as early:  # nothing appears: it keeps waiting
            await be.watch_missing([tmp_path / "never"])
        assert early.cancelled_caught
        done: list[str] = []

        async def watch(name: str) -> None:
            await be.watch_missing([tmp_path / "never", tmp_path / name])
            done.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, "first")
            nursery.start_soon(watch, "second")
            await trio.sleep(1.0)
            assert done == []
            (tmp_path / "first").mkdir()
            with trio.fail_after(20):
                while done != ["first"]:
                    await trio.sleep(0.05)
            (tmp_path / "second").write_bytes(b"")
        assert done == ["first", "second"]
        with pytest.raises(ue.InvalidRequestError):
            await be.watch_missing([])
        with pytest.raises(ue.InvalidRequestError):
            await be.watch_missing(["relative"])
        with pytest.raises(ue.InvalidRequestError):
            await be.watch_missing(str(tmp_path))


@pytest.mark.parametrize("kind", KINDS)
async def test_watch_missing_survives_a_resumed_session(kind: str, tmp_path: pathlib.Path) -> None:
    """A server's watch ends with its connection: after a cut link and a resume the
    client watches again on the new one (through a real TCP proxy that cuts)."""
    with trio.fail_after(120):
        async with served(kind, tmp_path) as (url, _):
            host, port = url.removeprefix("ws://").rsplit(":", 1)
            async with (
                CutProxy(host, int(port)).running() as proxy,
                ue.RemoteExecBackend.connect(proxy.url) as be,
            ):
                done = trio.Event()

                async def watch() -> None:
                    await be.watch_missing([tmp_path / "later"])
                    done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    await trio.sleep(1.0)
                    assert proxy.cut() >= 1
                    while be.resumes < 1:
                        await trio.sleep(0.05)
                    await trio.sleep(0.5)
                    assert not done.is_set()
                    (tmp_path / "later").mkdir()
                    with trio.fail_after(20):
                        await done.wait()
