"""Capability-token auth, the codex way, against the real codex exec-server and ours.

Both servers are started with the same flags (``--ws-auth capability-token`` and
``--ws-token-file F`` or ``--ws-token-sha256 HEX``). Our client authenticates with
``RemoteExecBackend.connect(url, token=...)`` and runs a command; a wrong or missing
token is refused with a typed error naming the 401.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import trio

import unified_exec as ue

from .._support import announced_server

TOKEN = "interop-capability-token-42"


async def _echo(url: str, token: str | None) -> bytes:
    out = bytearray()
    with trio.fail_after(30):
        async with (
            ue.RemoteExecBackend.connect(url, token=token) as backend,
            ue.open_process(backend, ue.ExecRequest(["echo", "authenticated"])) as proc,
        ):
            async for ev in proc.events():
                if isinstance(ev, ue.OutputEvent):
                    out.extend(ev.data)
            assert proc.state.exit_code == 0, proc.state
    return bytes(out)


def _auth_flags(mode: str, tmp_path: Path) -> list[str]:
    if mode == "sha256":
        return ["--ws-auth", "capability-token",
                "--ws-token-sha256", hashlib.sha256(TOKEN.encode()).hexdigest()]  # fmt: skip
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # as `echo TOKEN > F` writes it: codex strips the LF
    token_file.chmod(0o600)
    return ["--ws-auth", "capability-token", "--ws-token-file", str(token_file)]


async def _check(url: str) -> None:
    assert await _echo(url, TOKEN) == b"authenticated\n"
    for wrong in ("not-the-token", TOKEN + "x", None):
        with pytest.raises(ue.TransportLostError, match="401"):
            await _echo(url, wrong)
    # Refusals leave the server serving.
    assert await _echo(url, TOKEN) == b"authenticated\n"


@pytest.mark.parametrize("mode", ["file", "sha256"])
async def test_codex_exec_server_capability_token(
    codex_release: tuple[str, str], codex_env: dict[str, str], tmp_path: Path, mode: str
) -> None:
    _version, codex = codex_release
    argv = [codex, "exec-server", "--listen", "ws://127.0.0.1:0", *_auth_flags(mode, tmp_path)]
    async with announced_server(argv, codex_env) as url:
        await _check(url)


@pytest.mark.parametrize("mode", ["file", "sha256"])
async def test_our_server_capability_token(tmp_path: Path, mode: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIFIED_EXEC_")}
    argv = [sys.executable, "-m", "unified_exec", "serve", "--listen", "ws://127.0.0.1:0",
            *_auth_flags(mode, tmp_path)]  # fmt: skip
    async with announced_server(argv, env) as url:
        await _check(url)
