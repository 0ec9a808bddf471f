"""Run one `codex exec` turn of the real codex CLI against an exec-server, recorded.

The pieces are all real and all on loopback: the codex binary (fetched and hash-checked
by scripts/fetch-codex.sh), a throw-away ``CODEX_HOME`` whose config points the model
provider at :class:`MockModel`, an exec-server (codex's own ``codex exec-server`` or
ours, ``python -m unified_exec serve``) started as a child process, and a
:class:`RecordingProxy` between codex and it (``CODEX_EXEC_SERVER_URL``), so the test
sees every JSON-RPC message of the turn.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .._support import cmdline_pids, host_port, read_first_line, wait_until_none
from ._mock_model import Item, MockModel
from ._recording_proxy import RecordingProxy

__all__ = ["TurnResult", "exec_server", "run_turn", "write_codex_home"]


def write_codex_home(home: pathlib.Path, base_url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'model = "gpt-5.5"\n'
        'model_provider = "mock"\n'
        'approval_policy = "never"\n'
        "[analytics]\nenabled = false\n"
        "[model_providers.mock]\n"
        'name = "mock"\n'
        f'base_url = "{base_url}"\n'
        'env_key = "MOCK_MODEL_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )


@asynccontextmanager
async def exec_server(
    kind: str,
    codex_bin: str,
    env: dict[str, str],
    cwd: pathlib.Path,
    ours: tuple[str, ...] = (sys.executable, "-m", "unified_exec"),
) -> AsyncIterator[tuple[str, trio.Process]]:
    """Start codex's (``kind="codex"``) or our (``"ours"``) exec-server on a ws port."""
    if kind == "codex":
        argv = [codex_bin, "exec-server", "--listen", "ws://127.0.0.1:0"]
    else:
        argv = [*ours, "serve", "--listen", "ws://127.0.0.1:0", "--ws-auth", "none"]
    proc = await trio.lowlevel.open_process(
        argv, stdout=-1, stderr=-1, env=env, cwd=str(cwd), start_new_session=True
    )
    assert proc.stdout is not None
    try:
        url = await read_first_line(proc.stdout, f"the {kind} exec-server", 20)
        yield url, proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(5) as scope:
                await proc.wait()
            if scope.cancelled_caught:
                proc.kill()
                await proc.wait()


@attrs.define
class TurnResult:
    returncode: int
    stdout: str
    stderr: str
    model: MockModel
    proxy: RecordingProxy
    server_stderr: str = ""
    leftover: list[str] = attrs.Factory(list)  # marked processes alive after the turn


async def _wait_gone(marker: str, timeout: float = 10.0) -> list[str]:
    """Processes whose command line holds ``marker`` still alive ``timeout`` s after
    the turn ended (codex terminates what is left at the end of a turn)."""
    return await wait_until_none(lambda: cmdline_pids(marker), timeout)


async def run_turn(
    codex_bin: str,
    server: str,
    replies: list[list[Item]],
    workdir: pathlib.Path,
    home: pathlib.Path,
    prompt: str = "do the scripted thing",
    extra_args: tuple[str, ...] = ("-s", "danger-full-access"),
    timeout: float = 60.0,
    ours: tuple[str, ...] = (sys.executable, "-m", "unified_exec"),
    marker: str | None = None,
) -> TurnResult:
    model = MockModel(replies)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    # The agent's commands run in login shells: a HOME of their own keeps this
    # machine's rc files (pyenv rehash, which warns on stderr when shells race for
    # its lock) out of the output both servers must agree on.
    base_env["HOME"] = str(home.parent / "shell-home")
    pathlib.Path(base_env["HOME"]).mkdir(exist_ok=True)
    async with model.running():
        write_codex_home(home, model.base_url)
        # codex's exec-server refuses to put its sandbox helper aliases (which its
        # bubblewrap sandbox execs) under /tmp, so its home lives in the user's cache.
        cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
        cache = cache / "unified_exec"
        cache.mkdir(parents=True, exist_ok=True)
        server_home = pathlib.Path(tempfile.mkdtemp(prefix="codex-server-home-", dir=cache))
        server_env = {**base_env, "CODEX_HOME": str(server_home)}
        async with exec_server(server, codex_bin, server_env, workdir, ours) as (url, sproc):
            proxy = RecordingProxy(*host_port(url))
            async with proxy.running():
                env = {
                    **base_env,
                    "CODEX_HOME": str(home),
                    "CODEX_EXEC_SERVER_URL": proxy.url,
                    "MOCK_MODEL_API_KEY": "dummy-key",
                    "RUST_LOG": "warn",
                }
                argv = [codex_bin, "exec", "--skip-git-repo-check", "-C", str(workdir),
                        *extra_args, prompt]  # fmt: skip
                with trio.fail_after(timeout):
                    done = await trio.run_process(
                        argv, env=env, capture_stdout=True, capture_stderr=True, check=False,
                        stdin=b"",
                    )  # fmt: skip
                await trio.sleep(0.2)  # the last frames through the proxy
                leftover = await _wait_gone(marker) if marker else []
            sproc.terminate()
            err = b""
            if sproc.stderr is not None:
                with trio.move_on_after(5):
                    while chunk := await sproc.stderr.receive_some(65536):
                        err += chunk
    shutil.rmtree(server_home, ignore_errors=True)
    return TurnResult(
        returncode=done.returncode,
        stdout=done.stdout.decode(errors="replace"),
        stderr=done.stderr.decode(errors="replace"),
        model=model,
        proxy=proxy,
        server_stderr=err.decode(errors="replace"),
        leftover=leftover,
    )


def summary(result: TurnResult) -> list[dict[str, Any]]:
    """The recorded calls, with long payloads cut, for reading by a human."""
    out = []
    for method, params, answer in result.proxy.calls():
        out.append({"method": method, "params": _cut(params), "answer": _cut(answer)})
    return out


def _cut(value: Any, n: int = 300) -> Any:
    if isinstance(value, str):
        return value if len(value) <= n else value[:n] + f"...<{len(value)}>"
    if isinstance(value, dict):
        return {k: _cut(v, n) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, n) for v in value[:50]]
    return value
