"""Review defect 1: no peer that hangs up during the handshake may end the server.

Every kind of impatient peer, 50 in all, against a token-protected server (so the 401
and 403 paths are exercised as well as the upgrade), and then a real client still
runs a command. An embedded server would raise out of the test's nursery if one
connection's error escaped; the CLI variant checks the process itself survives.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
import trio

import unified_exec as ue

from .server_edge_helpers import UPGRADE, cli_server, embedded, host_port, run_echo

TOKEN = "s3cret-edge-token"


async def _hang_up(url: str, kind: int) -> None:
    host, port = host_port(url)
    stream = await trio.open_tcp_stream(host, port)
    sock = stream.socket
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    requests = [
        UPGRADE + b"\r\n",  # no token: 401 path
        UPGRADE + auth + b"\r\n",  # accepted: the accept path
        UPGRADE + b"Origin: http://evil.example\r\n\r\n",  # 403 path
        UPGRADE[:30],  # half a request line
        b"",  # nothing at all
        b"\x16\x03\x01\x00\xa5garbage-not-http\r\n\r\n",  # a TLS hello to a plain port
        b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
        # Accepted, then an invalid websocket frame in the same packet: wsproto fails
        # on it inside trio-websocket's reader task, while answering with a close.
        UPGRADE + auth + b"\r\n" + b"\xff\xff\xff\xff garbage frame",
    ]
    request = requests[kind % len(requests)]
    if request:
        await stream.send_all(request)
    if kind % 2:
        # RST instead of FIN: the server's getpeername()/send then fail with
        # ENOTCONN/ECONNRESET, as in the review's r01.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def _impatient_client(url: str, i: int) -> None:
    """Our own client giving up at some point of the handshake (r01c)."""
    with trio.move_on_after(0.0005 * (i % 20)):
        try:
            async with ue.RemoteExecBackend.connect(url, token=TOKEN):
                pass
        except ue.UnifiedExecError:
            pass


async def _storm(url: str) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(35):
            nursery.start_soon(_hang_up, url, i)
        for i in range(15):
            nursery.start_soon(_impatient_client, url, i)


async def test_fifty_impatient_peers_then_a_real_client_works() -> None:
    with trio.fail_after(60):
        async with embedded(token=TOKEN) as url:
            await _storm(url)
            await _storm(url)
            assert await run_echo(url, token=TOKEN) == b"edge-ok\n"


async def test_cli_server_survives_impatient_peers() -> None:
    with trio.fail_after(90):
        async with cli_server("--listen", "ws://127.0.0.1:0", "--ws-auth", "none") as srv:
            await _storm(srv.url)
            await trio.sleep(0.2)
            assert srv.proc.returncode is None, srv.stderr.decode(errors="replace")
            assert await run_echo(srv.url) == b"edge-ok\n"
            assert srv.proc.returncode is None
        assert b"Traceback" not in srv.stderr, srv.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("origin", [False, True], ids=["plain", "origin"])
async def test_hang_up_right_after_upgrade_request(origin: bool) -> None:
    """r01 exactly: send the upgrade, close at once, twenty times, with a token set."""
    with trio.fail_after(60):
        async with embedded(token=TOKEN) as url:
            host, port = host_port(url)
            extra = b"Origin: http://evil.example\r\n" if origin else b""
            for _ in range(20):
                stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(UPGRADE + extra + b"\r\n")
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                await stream.aclose()
            assert await run_echo(url, token=TOKEN) == b"edge-ok\n"


async def test_silent_peer_is_dropped_after_the_handshake_timeout() -> None:
    """A peer that connects and never sends a byte holds no slot forever."""
    with trio.fail_after(30):
        async with embedded(token=TOKEN, handshake_timeout=0.5) as url:
            host, port = host_port(url)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                assert await stream.receive_some(100) == b""  # the server hung up
            assert await run_echo(url, token=TOKEN) == b"edge-ok\n"


async def test_random_bytes_and_mangled_requests_never_end_the_server() -> None:
    """200 peers sending random bytes, or a real upgrade with bytes flipped or cut."""
    rng = random.Random(20261202)
    valid = UPGRADE + f"Authorization: Bearer {TOKEN}\r\n".encode() + b"\r\n"
    with trio.fail_after(120):
        async with embedded(token=TOKEN, handshake_timeout=2) as url:
            host, port = host_port(url)

            async def peer(i: int) -> None:
                if i % 3 == 0:
                    blob = rng.randbytes(rng.randrange(1, 2000))
                else:
                    data = bytearray(valid)
                    for _ in range(rng.randrange(1, 4)):
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    blob = bytes(data[: rng.randrange(1, len(data) + 1)])
                stream = await trio.open_tcp_stream(host, port)
                try:
                    await stream.send_all(blob)
                    with trio.move_on_after(0.05 * (i % 4)):
                        await stream.receive_some(4096)
                except (trio.BrokenResourceError, OSError):
                    pass
                if i % 2:
                    stream.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                await stream.aclose()

            for batch in range(4):
                async with trio.open_nursery() as nursery:
                    for i in range(50):
                        nursery.start_soon(peer, batch * 50 + i)
            assert await run_echo(url, token=TOKEN) == b"edge-ok\n"
