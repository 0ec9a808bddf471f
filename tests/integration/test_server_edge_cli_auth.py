"""``unified-exec serve`` authentication and listener policy (review defect 3, issue §4).

Secure by default: a loopback websocket without auth flags gets a generated token in
a 0600 file; codex's ``--ws-auth capability-token --ws-token-file/--ws-token-sha256``
work as in codex; off loopback a token and TLS (or an explicit opt-out) are required;
``--token`` keeps working but leaves /proc/PID/cmdline.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio_websocket

import unified_exec as ue

from .server_edge_helpers import SERVE, UPGRADE, clean_env, cli_server, http, run_echo, status_of

TOKEN = "cli-edge-token-0123456789"


async def _run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [*SERVE, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env if env is not None else clean_env(),
            stdin=subprocess.DEVNULL,
        )


async def _wait_for(pattern: bytes, buf: bytearray) -> re.Match[bytes]:
    with trio.fail_after(20):
        while (found := re.search(pattern, buf)) is None:
            await trio.sleep(0.02)
    return found


async def test_default_generates_a_token_in_a_0600_file(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    async with cli_server(env=clean_env(XDG_RUNTIME_DIR=str(runtime))) as srv:
        found = await _wait_for(rb"token written to (\S+) ", srv.stderr)
        path = Path(found.group(1).decode())
        assert path.parent.parent == runtime
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        token = path.read_text().strip()
        assert token.encode() in srv.stderr  # printed too, as Jupyter does
        assert status_of(await http(srv.url, UPGRADE + b"\r\n")) == 401
        with pytest.raises(ue.TransportLostError, match="401"):
            await run_echo(srv.url)
        assert await run_echo(srv.url, token=token) == b"edge-ok\n"
        assert token.encode() not in Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes()
        srv.proc.terminate()
        with trio.fail_after(15):
            await srv.proc.wait()
    assert srv.proc.returncode == 0
    assert not path.exists(), "the generated token outlived the server"


@pytest.mark.parametrize("mode", ["file", "file-crlf", "sha256"])
async def test_codex_capability_token_flags(tmp_path: Path, mode: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN.encode() + (b"\r\n" if mode == "file-crlf" else b"\n"))
    token_file.chmod(0o600)
    if mode == "sha256":
        flags = ["--ws-token-sha256", hashlib.sha256(TOKEN.encode()).hexdigest()]
    else:
        flags = ["--ws-token-file", str(token_file)]
    async with cli_server("--ws-auth", "capability-token", *flags) as srv:
        assert await run_echo(srv.url, token=TOKEN) == b"edge-ok\n"
        with pytest.raises(ue.TransportLostError, match="401"):
            await run_echo(srv.url, token=TOKEN + "x")
        with pytest.raises(ue.TransportLostError, match="401"):
            await run_echo(srv.url)
        assert b"token:" not in srv.stderr  # nothing generated, nothing printed


async def test_legacy_token_flag_warns_and_leaves_the_command_line() -> None:
    async with cli_server("--token", TOKEN) as srv:
        assert await run_echo(srv.url, token=TOKEN) == b"edge-ok\n"
        assert TOKEN.encode() not in Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes()
        await _wait_for(rb"WARNING.*--token", srv.stderr)


async def test_env_token_still_works() -> None:
    async with cli_server(env=clean_env(UNIFIED_EXEC_TOKEN=TOKEN)) as srv:
        assert await run_echo(srv.url, token=TOKEN) == b"edge-ok\n"
        with pytest.raises(ue.TransportLostError):
            await run_echo(srv.url)


async def test_ws_auth_none_on_loopback_warns_and_serves() -> None:
    async with cli_server("--ws-auth", "none") as srv:
        assert await run_echo(srv.url) == b"edge-ok\n"
        await _wait_for(rb"WARNING: --ws-auth none", srv.stderr)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--listen", "ws://0.0.0.0:0", "--ws-auth", "none"], b"token is required"),
        (["--listen", "ws://0.0.0.0:0"], b"without a token"),
        (["--ws-token-file", "/nonexistent"], b"require --ws-auth capability-token"),
        (["--ws-auth", "capability-token"], b"needs --ws-token-file"),
        (["--ws-auth", "capability-token", "--ws-token-sha256", "ab"], b"64-character hex"),
        (["--ws-auth", "capability-token", "--ws-token-file", "/nonexistent/t"], b"cannot read"),
        (
            [
                "--ws-auth",
                "capability-token",
                "--ws-token-file",
                "/x",
                "--ws-token-sha256",
                "0" * 64,
            ],
            b"mutually exclusive",
        ),
        (["--tls-cert", "/x"], b"go together"),
    ],
)
async def test_cli_refusals(args: list[str], needle: bytes) -> None:
    done = await _run_cli(*args)
    assert done.returncode == 2, done
    assert done.stdout == b""
    assert needle in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr


async def test_off_loopback_needs_tls_or_an_explicit_opt_out(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    auth = ["--ws-auth", "capability-token", "--ws-token-file", str(token_file)]
    done = await _run_cli("--listen", "ws://0.0.0.0:0", *auth)
    assert done.returncode == 2 and b"without TLS" in done.stderr, done
    async with cli_server("--listen", "ws://0.0.0.0:0", *auth, "--insecure-plaintext") as srv:
        assert srv.url.startswith("ws://0.0.0.0:")
        await _wait_for(b"cleartext", srv.stderr)
        port = srv.url.rsplit(":", 1)[1]
        assert await run_echo(f"ws://127.0.0.1:{port}", token=TOKEN) == b"edge-ok\n"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    # openssl is part of the machine image and of `make test`'s sysdeps: a hard need.
    assert shutil.which("openssl"), "openssl is needed to make a test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_off_loopback(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    args = ["--listen", "ws://0.0.0.0:0", "--tls-cert", str(cert), "--tls-key", str(key),
            "--ws-auth", "capability-token", "--ws-token-file", str(token_file)]  # fmt: skip
    async with cli_server(*args) as srv:
        assert srv.url.startswith("wss://0.0.0.0:")
        port = int(srv.url.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(cert))
        with trio.fail_after(20):
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/", use_ssl=context,
                extra_headers=[(b"Authorization", b"Bearer " + TOKEN.encode())],
            ) as ws:  # fmt: skip
                await ws.send_message('{"id":1,"method":"initialize","params":{"clientName":"t"}}')
                assert '"sessionId"' in await ws.get_message()
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=context):
                    pass
            assert info.value.status_code == 401
            # A plaintext peer on the TLS port is one more impatient peer: it changes nothing.
            plain = await http(f"ws://127.0.0.1:{port}", UPGRADE + b"\r\n")
            assert not plain.startswith(b"HTTP/1.1 101"), plain
        assert srv.proc.returncode is None


async def test_unix_socket_is_0600_and_serves(tmp_path: Path) -> None:
    path = tmp_path / "ue.sock"
    async with cli_server("--listen", f"unix://{path}") as srv:
        assert srv.url == f"unix://{path}"
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        with trio.fail_after(20):
            stream = await trio.open_unix_socket(str(path))
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(nursery, stream, "localhost", "/")
                await ws.send_message('{"id":1,"method":"initialize","params":{"clientName":"t"}}')
                assert '"sessionId"' in await ws.get_message()
                await ws.aclose()
        srv.proc.terminate()
        with trio.fail_after(15):
            await srv.proc.wait()
    assert not path.exists(), "the socket file outlived the server"


async def test_other_local_user_cannot_run_commands() -> None:
    """Review repro n11: uid 65534 against a default `unified-exec serve` started by root.

    Runs as root (as developers and CI do here): acting as another user needs it."""
    assert os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv"
    # The other user runs this checkout's interpreter and packages: every directory on
    # the way must let others through (a clone under `mktemp -d`, mode 0700, does not).
    closed = [d for d in Path(sys.prefix).resolve().parents if not os.stat(d).st_mode & 0o001]
    assert not closed, f"uid 65534 cannot reach {sys.prefix}: {closed} not searchable by others"
    client = (
        "import sys, trio, unified_exec as ue\n"
        "async def main():\n"
        "    try:\n"
        "        async with ue.RemoteExecBackend.connect({url!r}) as be:\n"
        "            print('CONNECTED')\n"
        "    except ue.TransportLostError as exc:\n"
        "        print('REFUSED', exc)\n"
        "trio.run(main)\n"
    )
    async with cli_server() as srv:
        code = client.replace("{url!r}", repr(srv.url))
        with trio.fail_after(60):
            done = await trio.run_process(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-c", code],
                capture_stdout=True, capture_stderr=True, check=False, cwd="/tmp",
                env={"PATH": os.environ["PATH"], "HOME": "/tmp"},
            )  # fmt: skip
        assert b"REFUSED" in done.stdout and b"401" in done.stdout, done
        assert b"CONNECTED" not in done.stdout
