"""``--pool SPEC`` on the front doors (issue 10): ``unified-exec mcp --pool`` under the
official MCP SDK stdio client and ``unified-exec exec --pool``, over real
``unified-exec serve`` subprocesses that share one token file.

Each server is started with its own ``UE_WHO`` in its environment. A remote child
gets the environment its request names, not the server's, so a command learns which
server runs it by reading its parent's environment: the server is the shell's
parent (``/proc/$PPID/environ``). The ``dns:`` form resolves a real DNS server on a
loopback UDP socket (dnspython's message API), as ``test_pool_backend`` does.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
from mcp.client.session import ClientSession

from tests._dns import LoopbackDnsServer

from ._mcp_helpers import (
    MARKER_VAR,
    marked_pids,
    new_marker,
    session_id_of,
    stdio_session,
    text_of,
    wait_no_marked,
)

TOKEN = "pool-cli-test-token-0123456789abcdef"
#: Prints ``who=NAME`` for the server (the shell's parent) that runs the command.
WHO = r"""tr '\0' '\n' < /proc/$PPID/environ | sed -n 's/^UE_WHO=/who=/p'"""
DNS_NAME = "exec.pool.svc.cluster.local."


@attrs.define
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str


def _token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return str(path)


def _serve(
    name: str, token_file: str, host: str = "127.0.0.1", port: int = 0, cwd: Path | None = None
) -> Server | None:
    """A ``unified-exec serve`` child with ``UE_WHO=name`` (in ``cwd``); None if it
    could not bind."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "unified_exec", "serve", "--listen", f"ws://{host}:{port}",
         "--ws-auth", "capability-token", "--ws-token-file", token_file,
         "--log-level", "ERROR"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=dict(os.environ, UE_WHO=name), start_new_session=True, cwd=cwd,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("ws://"):
        _stop(Server(name, proc, url))
        return None
    return Server(name, proc, url)


def _stop(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    return _token_file(tmp_path)


@pytest.fixture
def servers(token_file: str, tmp_path: Path) -> Iterator[list[Server]]:
    """Servers a, b, c, each in its own working directory ``tmp_path/NAME``."""
    started: list[Server] = []
    try:
        for name in ("a", "b", "c"):
            (tmp_path / name).mkdir()
            server = _serve(name, token_file, cwd=tmp_path / name)
            assert server is not None, f"server {name} did not start"
            started.append(server)
        yield started
    finally:
        for server in started:
            _stop(server)


def _pool_arg(servers: list[Server]) -> str:
    return ",".join(s.url for s in servers)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _exec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unified_exec", "exec", *args],
        check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        env=env if env is not None else _clean_env(),
    )  # fmt: skip


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "UNIFIED_EXEC_TOKEN"}


async def _who_sessions(
    session: ClientSession, marker: str, count: int
) -> tuple[list[str], list[int]]:
    """Start ``count`` long-lived marked sessions; which server each landed on."""
    names: list[str] = []
    sids: list[int] = []
    for _ in range(count):
        cmd = f"{WHO}; {MARKER_VAR}={marker} exec sleep 300"
        result = await session.call_tool("exec_command", {"cmd": cmd, "yield_time_ms": 1000})
        text = text_of(result)
        sid = session_id_of(text)
        for _ in range(10):  # a login shell on a loaded machine may print later
            if re.search(r"who=(\w+)", text):
                break
            poll = await session.call_tool(
                "write_stdin", {"session_id": sid, "yield_time_ms": 2000}
            )
            text += text_of(poll)
        match = re.search(r"who=(\w+)", text)
        assert match, text
        names.append(match.group(1))
        sids.append(sid)
    return names, sids


async def _wait_marked(marker: str, count: int) -> list[int]:
    with trio.move_on_after(30):
        while len(marked_pids(marker)) < count:
            await trio.sleep(0.1)
    return marked_pids(marker)


# -- unified-exec mcp --pool -----------------------------------------------------------


async def test_mcp_pool_spreads_commands_and_closing_ends_them(
    servers: list[Server], token_file: str, tmp_path: Path
) -> None:
    marker = new_marker()
    server_pids = {s.proc.pid for s in servers}
    with trio.fail_after(150):
        async with stdio_session(
            new_marker(), "--pool", _pool_arg(servers), "--token-file", token_file
        ) as session:
            names, _sids = await _who_sessions(session, marker, 6)
            assert set(names) <= {"a", "b", "c"}
            assert len(set(names)) >= 2, names  # fewest-live placement spreads them
            # The processes really are children of more than one server.
            pids = await _wait_marked(marker, 6)
            assert len(pids) == 6
            parents = {_ppid(pid) for pid in pids}
            assert parents <= server_pids
            assert len(parents) >= 2

            for i in range(3):  # short commands: output, exit codes and the default
                done = await session.call_tool(  # cwd (the member's own) come back
                    "exec_command", {"cmd": f"{WHO}; pwd; echo out-$((40+{i})); exit {i}",
                                     "yield_time_ms": 10_000},
                )  # fmt: skip
                text = text_of(done)
                assert not done.is_error
                assert f"out-{40 + i}" in text, text
                assert f"Process exited with code {i}" in text, text
                where = re.search(r"who=(\w+)\n(.*)\n", text)
                assert where, text
                assert where.group(2) == str(tmp_path / where.group(1))
        # Closing the MCP session terminates every process it started on every server.
        assert await wait_no_marked(marker) == []
    assert all(s.proc.poll() is None for s in servers)  # the servers keep running


# -- unified-exec exec --pool ----------------------------------------------------------


def test_exec_pool_runs_on_a_member_and_passes_its_exit_code(
    servers: list[Server], token_file: str, tmp_path: Path
) -> None:
    """The command runs on one member, in that member's own working directory (the
    members disagree, so the pool names none and each server uses its own)."""
    done = _exec(
        "--pool", _pool_arg(servers), "--token-file", token_file,
        "--", "sh", "-c", f"{WHO}; pwd; echo oops >&2; exit 3",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    match = re.fullmatch(r"who=([abc])\n(.*)\n", done.stdout)
    assert match, (done.stdout, done.stderr)
    assert match.group(2) == str(tmp_path / match.group(1))
    assert "oops" in done.stderr and "oops" not in done.stdout


def test_exec_pool_token_from_the_environment_and_a_wrong_one(
    servers: list[Server], tmp_path: Path
) -> None:
    """$UNIFIED_EXEC_TOKEN reaches every member too; a wrong token is refused by all,
    and the message names each member (exit 255, no traceback)."""
    ok = _exec(
        "--pool", _pool_arg(servers), "--", "sh", "-c", f"{WHO}; exit 0",
        env=dict(_clean_env(), UNIFIED_EXEC_TOKEN=TOKEN),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert re.fullmatch(r"who=[abc]\n", ok.stdout), ok.stdout

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    refused = _exec("--pool", _pool_arg(servers), "--token-file", str(wrong), "--", "true")
    assert refused.returncode == 255, refused.stderr
    assert "no exec-server answered" in refused.stderr, refused.stderr
    for server in servers:
        assert server.url in refused.stderr
    assert "Traceback" not in refused.stderr


# -- bad specs -------------------------------------------------------------------------


BAD_SPECS = [
    ("", "--pool needs exec-server URLs"),
    ("ws://127.0.0.1:1,,ws://127.0.0.1:2", "empty entry"),
    ("http://127.0.0.1:1", "expected a ws:// URL"),
    ("ws://127.0.0.1:1,ws://127.0.0.1:1", "appears twice"),
    ("ws://127.0.0.1:1,dns:exec.example", "cannot be mixed"),
    ("dns:", "bad DNS name"),
    ("dns:bad..name", "bad DNS name"),
    ("dns:exec.example:99999", "bad exec-server port"),
    ("dns:exec.example:http", "bad exec-server port"),
    ("dns:exec.example@resolver.example", "must be an IP address"),
    ("dns:exec.example@127.0.0.1:0", "bad nameserver port"),
]


@pytest.mark.parametrize("front", ["exec", "mcp"])
@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_pool_specs_exit_2_with_a_message(front: str, spec: str, message: str) -> None:
    tail = ["--", "true"] if front == "exec" else []
    done = subprocess.run(
        [sys.executable, "-m", "unified_exec", front, "--pool", spec, *tail],
        check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "argument --pool: " in done.stderr and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("front", "other"), [("exec", "--server"), ("mcp", "--exec-server")])
def test_pool_and_a_single_server_are_exclusive(front: str, other: str) -> None:
    tail = ["--", "true"] if front == "exec" else []
    done = subprocess.run(
        [sys.executable, "-m", "unified_exec", front, "--pool", "ws://127.0.0.1:1",
         other, "ws://127.0.0.1:2", *tail],
        check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "not allowed with argument" in done.stderr, done.stderr
    assert "--pool" in done.stderr and other in done.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_pool_nobody_answers_fails_with_each_members_error() -> None:
    urls = [f"ws://127.0.0.1:{_closed_port()}" for _ in range(2)]
    done = _exec("--pool", ",".join(urls), "--", "true")
    assert done.returncode == 255, done.stderr
    assert "no exec-server answered" in done.stderr
    for url in urls:
        assert url in done.stderr
    assert "Traceback" not in done.stderr

    mcp = subprocess.run(
        [sys.executable, "-m", "unified_exec", "mcp", "--pool", ",".join(urls)],
        check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert mcp.returncode == 1, mcp.stderr
    assert "no exec-server answered" in mcp.stderr
    assert "Traceback" not in mcp.stderr


# -- dns:NAME[:PORT]@NAMESERVER ----------------------------------------------------------


@pytest.fixture
def dns_pods(token_file: str) -> Iterator[tuple[list[Server], int]]:
    """Two servers on one port at two loopback addresses (pods behind a headless
    Service). The addresses are random in 127/8, clear of other tests' 127.0.0.x;
    on a clash with another test's port, try again elsewhere."""
    started: list[Server] = []
    try:
        for _ in range(10):
            net = f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}"
            first = _serve("a", token_file, f"{net}.2")
            assert first is not None
            port = int(first.url.rsplit(":", 1)[1])
            second = _serve("b", token_file, f"{net}.3", port)
            if second is not None:
                started = [first, second]
                break
            _stop(first)
        assert len(started) == 2, "could not start two servers on one port"
        yield started, port
    finally:
        for server in started:
            _stop(server)


async def test_dns_pool_for_mcp_and_exec(
    dns_pods: tuple[list[Server], int], token_file: str
) -> None:
    pods, port = dns_pods
    dns_server = LoopbackDnsServer(DNS_NAME, [s.url.removeprefix("ws://").rsplit(":", 1)[0]
                                       for s in pods])  # fmt: skip
    spec = f"dns:{DNS_NAME}:{port}@127.0.0.1:{dns_server.port}"
    marker = new_marker()
    try:
        with trio.fail_after(150):
            async with stdio_session(
                new_marker(), "--pool", spec, "--token-file", token_file
            ) as session:
                names, _ = await _who_sessions(session, marker, 4)
                assert set(names) == {"a", "b"}, names  # both pods were discovered
                assert len(await _wait_marked(marker, 4)) == 4
            assert await wait_no_marked(marker) == []

            done = await trio.run_process(
                [sys.executable, "-m", "unified_exec", "exec", "--pool", spec,
                 "--token-file", token_file, "--", "sh", "-c", f"{WHO}; exit 3"],
                stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True,
                check=False, env=_clean_env(),
            )  # fmt: skip
        assert done.returncode == 3, done.stderr
        assert re.fullmatch(rb"who=[ab]\n", done.stdout), (done.stdout, done.stderr)
        assert dns_server.queries >= 2
    finally:
        dns_server.close()


def test_dns_name_without_records_fails_clearly() -> None:
    dns_server = LoopbackDnsServer(DNS_NAME, [])
    try:
        done = _exec("--pool", f"dns:{DNS_NAME}@127.0.0.1:{dns_server.port}", "--", "true")
    finally:
        dns_server.close()
    assert done.returncode == 255, done.stderr
    assert "no exec-server found" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_good_specs_parse_to_what_the_pool_is_given() -> None:
    from unified_exec.backends import DnsDiscovery
    from unified_exec.term._backend import parse_pool_spec

    listed = parse_pool_spec(" ws://10.0.0.5:7788, wss://exec.example:443 ")
    assert listed.servers == ("ws://10.0.0.5:7788", "wss://exec.example:443")
    assert str(listed) == "the pool ws://10.0.0.5:7788, wss://exec.example:443"
    assert parse_pool_spec("dns:ue.ns.svc.cluster.local").servers == DnsDiscovery(
        "ue.ns.svc.cluster.local", 8765
    )
    assert parse_pool_spec("dns:ue.ns.svc.cluster.local.:7788@10.96.0.10").servers == (
        DnsDiscovery("ue.ns.svc.cluster.local.", 7788, nameserver="10.96.0.10")
    )
    assert parse_pool_spec("dns:ue.local@[::1]:5353").servers == DnsDiscovery(
        "ue.local", 8765, nameserver="::1", nameserver_port=5353
    )
    assert parse_pool_spec("dns:ue.local@::1").servers == DnsDiscovery(
        "ue.local", 8765, nameserver="::1", nameserver_port=53
    )
