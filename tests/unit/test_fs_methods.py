"""The `fs/*` handlers (server/_fs.py) over real temp dirs, called as the dispatcher calls
them: codex's field names, defaults and error codes (recorded from codex 0.169.0's own
exec-server: a missing path is -32004 "No such file or directory (os error 2)")."""

from __future__ import annotations

import base64
import os
import pathlib
import types
from typing import Any

import pytest
import trio

from unified_exec._protocol._limits import Limits
from unified_exec._protocol._messages import ParamsError
from unified_exec._uri import file_uri
from unified_exec.server._errors_map import Fail
from unified_exec.server._fs import FS_METHODS, fs_methods, fs_path


def table(limits: Limits | None = None) -> dict[str, Any]:
    return fs_methods(types.SimpleNamespace(limits=limits or Limits()))


async def call(method: str, params: Any, limits: Limits | None = None) -> Any:
    handler, lane = table(limits)[method]
    assert lane == "free"
    with trio.fail_after(10):
        return await handler(None, None, params)


async def fail(method: str, params: Any, limits: Limits | None = None) -> Fail:
    with pytest.raises(Fail) as info:
        await call(method, params, limits)
    return info.value


def u(path: pathlib.Path | str) -> str:
    return file_uri(str(path))


def test_table_has_every_method_codex_calls() -> None:
    assert set(table()) == set(FS_METHODS)
    assert {"fs/getMetadata", "fs/readFile", "fs/writeFile"} <= set(FS_METHODS)


async def test_get_metadata_file_dir_symlink_and_missing(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "a.txt"
    f.write_bytes(b"12345")
    (tmp_path / "link").symlink_to(f)
    meta = await call("fs/getMetadata", {"path": u(f), "sandbox": None})
    assert meta["isFile"] and not meta["isDirectory"] and not meta["isSymlink"]
    assert meta["size"] == 5
    assert meta["createdAtMs"] == 0
    assert abs(meta["modifiedAtMs"] - f.stat().st_mtime * 1000) < 2
    assert (await call("fs/getMetadata", {"path": u(tmp_path)}))["isDirectory"]
    link = await call("fs/getMetadata", {"path": u(tmp_path / "link")})
    assert link["isSymlink"] and link["isFile"] and link["size"] == 5
    nofollow = await call("fs/getMetadata", {"path": u(tmp_path / "link"), "followSymlinks": False})
    assert nofollow["isSymlink"] and not nofollow["isFile"]
    err = await fail("fs/getMetadata", {"path": u(tmp_path / ".git"), "sandbox": None})
    assert (err.code, err.message) == (-32004, "No such file or directory (os error 2)")


async def test_read_and_write_round_trip(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "sub dir" / "x.bin"
    target.parent.mkdir()
    data = bytes(range(256)) * 10
    params = {"path": u(target), "dataBase64": base64.b64encode(data).decode(), "sandbox": None}
    assert await call("fs/writeFile", params) == {}
    assert target.read_bytes() == data
    got = await call("fs/readFile", {"path": u(target), "sandbox": None})
    assert base64.b64decode(got["dataBase64"]) == data
    # overwrite truncates
    await call("fs/writeFile", {"path": u(target), "dataBase64": "aGk="})
    assert target.read_bytes() == b"hi"


async def test_write_into_missing_dir_is_not_found(tmp_path: pathlib.Path) -> None:
    err = await fail("fs/writeFile", {"path": u(tmp_path / "no" / "x"), "dataBase64": ""})
    assert err.code == -32004


async def test_write_bad_base64_is_invalid_request(tmp_path: pathlib.Path) -> None:
    err = await fail("fs/writeFile", {"path": u(tmp_path / "x"), "dataBase64": "***"})
    assert err.code == -32600
    assert "requires valid base64 dataBase64" in err.message
    assert not (tmp_path / "x").exists()


async def test_read_directory_is_an_error(tmp_path: pathlib.Path) -> None:
    err = await fail("fs/readFile", {"path": u(tmp_path)})
    assert err.code == -32603
    assert err.message == "Is a directory (os error 21)"


async def test_fifo_never_hangs_a_read_or_a_write(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    err = await fail("fs/readFile", {"path": u(fifo)})
    assert err.code == -32600 and "is not a file" in err.message
    err = await fail("fs/writeFile", {"path": u(fifo), "dataBase64": "aGk="})
    assert err.code in (-32600, -32603)  # ENXIO: no reader; never blocks


async def test_sizes_are_bounded(tmp_path: pathlib.Path) -> None:
    small = Limits(max_fs_file_bytes=1000)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1001)
    err = await fail("fs/readFile", {"path": u(big)}, small)
    assert err.code == -32600 and "too large" in err.message
    (tmp_path / "ok").write_bytes(b"x" * 1000)
    assert await call("fs/readFile", {"path": u(tmp_path / "ok")}, small)
    payload = base64.b64encode(b"y" * 1001).decode()
    err = await fail("fs/writeFile", {"path": u(tmp_path / "w"), "dataBase64": payload}, small)
    assert err.code == -32600 and not (tmp_path / "w").exists()
    # the budget also fits a message once base64 grows it
    assert Limits(max_message_bytes=8192).fs_file_budget <= (8192 - 4096) * 3 // 4


async def test_no_follow_read_of_a_symlink_fails(tmp_path: pathlib.Path) -> None:
    (tmp_path / "t").write_text("t")
    (tmp_path / "l").symlink_to(tmp_path / "t")
    got = await call("fs/readFile", {"path": u(tmp_path / "l")})
    assert base64.b64decode(got["dataBase64"]) == b"t"
    err = await fail("fs/readFile", {"path": u(tmp_path / "l"), "followSymlinks": False})
    assert "os error 40" in err.message


async def test_create_directory_recursive_default_and_not(tmp_path: pathlib.Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    assert await call("fs/createDirectory", {"path": u(deep), "recursive": None}) == {}
    assert deep.is_dir()
    await call("fs/createDirectory", {"path": u(deep)})  # exists: fine when recursive
    err = await fail("fs/createDirectory", {"path": u(deep), "recursive": False})
    assert err.message == "File exists (os error 17)"
    err = await fail("fs/createDirectory", {"path": u(tmp_path / "x" / "y"), "recursive": False})
    assert err.code == -32004


async def test_read_directory_entries(tmp_path: pathlib.Path) -> None:
    (tmp_path / "f").write_text("")
    (tmp_path / "d").mkdir()
    (tmp_path / "ld").symlink_to(tmp_path / "d")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    got = await call("fs/readDirectory", {"path": u(tmp_path), "sandbox": None})
    entries = {e["fileName"]: (e["isDirectory"], e["isFile"]) for e in got["entries"]}
    assert entries == {"f": (False, True), "d": (True, False), "ld": (True, False)}
    limited = Limits(max_fs_dir_entries=2)
    err = await fail("fs/readDirectory", {"path": u(tmp_path)}, limited)
    assert err.code == -32603 and "limit is 2" in err.message


async def test_remove_semantics(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    tree = tmp_path / "tree"
    (tree / "x").mkdir(parents=True)
    (tree / "x" / "f").write_text("f")
    (tree / "link").symlink_to(outside)
    assert await call("fs/remove", {"path": u(tree)}) == {}  # recursive, force by default
    assert not tree.exists() and (outside / "keep").exists()  # links are not followed
    await call("fs/remove", {"path": u(tmp_path / "gone")})  # force: missing is fine
    err = await fail("fs/remove", {"path": u(tmp_path / "gone"), "force": False})
    assert err.code == -32004
    err = await fail("fs/remove", {"path": u(outside), "recursive": False})
    assert "os error 39" in err.message  # not empty


async def test_copy_file_dir_symlink(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "src"
    (src / "in").mkdir(parents=True)
    (src / "in" / "f").write_text("data")
    (src / "l").symlink_to("in/f")
    dst = tmp_path / "dst"
    params = {"sourcePath": u(src), "destinationPath": u(dst), "recursive": True}
    assert await call("fs/copy", params) == {}
    assert (dst / "in" / "f").read_text() == "data"
    assert os.readlink(dst / "l") == "in/f"
    err = await fail("fs/copy", {**params, "recursive": False})
    assert err.code == -32600 and "requires recursive: true" in err.message
    into_self = {**params, "destinationPath": u(src / "in" / "deeper")}
    err = await fail("fs/copy", into_self)
    assert "itself or one of its descendants" in err.message
    one = {"sourcePath": u(src / "in" / "f"), "destinationPath": u(tmp_path / "g"),
           "recursive": False}  # fmt: skip
    await call("fs/copy", one)
    assert (tmp_path / "g").read_text() == "data"


async def test_canonicalize(tmp_path: pathlib.Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    got = await call("fs/canonicalize", {"path": u(tmp_path / "alias")})
    assert got == {"path": u(os.path.realpath(tmp_path / "real"))}
    err = await fail("fs/canonicalize", {"path": u(tmp_path / "none")})
    assert err.code == -32004


@pytest.mark.parametrize(
    "value",
    [
        "relative/path",
        "file://host/x",
        "http://x/y",
        "/a/../b",
        "/a/./b",
        "/a//b",
        7,
        None,
        "/tmp/\ud800",  # a lone surrogate (sent as a JSON escape): no OS path has it
    ],
)
def test_paths_must_be_absolute_file_uris_and_normalised(value: Any) -> None:
    with pytest.raises(ParamsError):
        fs_path(value)


def test_path_forms() -> None:
    assert fs_path("file:///a%20b/c") == "/a b/c"
    assert fs_path("/plain/path/") == "/plain/path"
    assert fs_path("file:///") == "/"


async def test_missing_field_is_invalid_params() -> None:
    with pytest.raises(ParamsError, match="missing field `path`"):
        await call("fs/readFile", {"sandbox": None})
    with pytest.raises(ParamsError):
        await call("fs/readFile", ["not", "an", "object"])
