"""The websocket framing both our ends stand on (``backends/_wschannel.WsChannel``), and
the client's opening handshake (``_remote_transports.open_websocket``).

The peer is wsproto driven by hand, or a plain TCP server that misbehaves on purpose,
over real sockets.
"""

from __future__ import annotations

import functools
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)

import unified_exec as ue
from unified_exec._errors import TransportLostError
from unified_exec.backends._remote_transports import open_websocket, parse_ws_url
from unified_exec.backends._wschannel import WsChannel

HANG_GUARD = 60  # s: only ever reached by a hang, never a measured time


async def _pair(max_message_bytes: int = 1 << 20) -> tuple[WsChannel, trio.SocketStream]:
    """A client WsChannel and the raw server end of its socket (handshake skipped)."""
    a, b = trio.socket.socketpair()
    channel = WsChannel(
        trio.SocketStream(a), Connection(ConnectionType.CLIENT),
        max_message_bytes=max_message_bytes, receive_bytes=65536,
    )  # fmt: skip
    return channel, trio.SocketStream(b)


async def _events(stream: trio.SocketStream, peer: Connection, want: type) -> list[object]:
    """Read until the peer's wsproto yields an event of type ``want``."""
    seen: list[object] = []
    while not any(isinstance(e, want) for e in seen):
        data = await stream.receive_some(65536)
        peer.receive_data(data or None)
        seen.extend(peer.events())
    return seen


async def test_fragments_are_one_message_and_pings_are_answered() -> None:
    with trio.fail_after(HANG_GUARD):
        channel, raw = await _pair()
        peer = Connection(ConnectionType.SERVER)
        await raw.send_all(
            peer.send(Message(data="hel", message_finished=False))
            + peer.send(Ping(b"p1"))
            + peer.send(Message(data="lo", message_finished=True))
            + peer.send(Message(data=b"\x00\x01"))
        )
        assert await channel.receive() == "hello"
        assert await channel.receive() == b"\x00\x01"
        pongs = await _events(raw, peer, Pong)
        assert any(isinstance(e, Pong) and e.payload == b"p1" for e in pongs)


async def test_ping_waits_for_its_pong() -> None:
    with trio.fail_after(HANG_GUARD):
        channel, raw = await _pair()
        peer = Connection(ConnectionType.SERVER)
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def ping() -> None:
                await channel.ping()
                done.set()

            nursery.start_soon(ping)
            pings = await _events(raw, peer, Ping)
            ping_event = next(e for e in pings if isinstance(e, Ping))
            await raw.send_all(peer.send(ping_event.response()) + peer.send(Message(data="x")))
            assert await channel.receive() == "x"  # the receiving task sees the pong
            await done.wait()


async def test_too_big_a_message_closes_with_1009() -> None:
    with trio.fail_after(HANG_GUARD):
        channel, raw = await _pair(max_message_bytes=100)
        peer = Connection(ConnectionType.SERVER)
        await raw.send_all(peer.send(Message(data="y" * 101)))
        assert await channel.receive() is None
        closes = await _events(raw, peer, CloseConnection)
        close = next(e for e in closes if isinstance(e, CloseConnection))
        assert close.code == 1009
        with pytest.raises(trio.BrokenResourceError):
            await channel.send("after")


async def test_peer_close_is_answered_and_ends_receive() -> None:
    with trio.fail_after(HANG_GUARD):
        channel, raw = await _pair()
        peer = Connection(ConnectionType.SERVER)
        await raw.send_all(peer.send(Message(data="last")) + peer.send(CloseConnection(1001)))
        assert await channel.receive() == "last"  # what came before the close is kept
        assert await channel.receive() is None
        assert channel.close_reason == (1001, "")
        closes = await _events(raw, peer, CloseConnection)
        assert any(isinstance(e, CloseConnection) for e in closes)
        with pytest.raises(trio.BrokenResourceError):
            await channel.send("x")
        await channel.aclose()


async def test_a_hang_up_ends_receive_and_wakes_a_ping() -> None:
    with trio.fail_after(HANG_GUARD):
        channel, raw = await _pair()
        async with trio.open_nursery() as nursery:
            failed = trio.Event()

            async def ping() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await channel.ping()
                failed.set()

            nursery.start_soon(ping)
            await raw.receive_some(100)  # the ping frame
            await raw.aclose()
            assert await channel.receive() is None
            await failed.wait()


async def test_server_frames_from_utf8_bytes() -> None:
    """send_utf8 writes a server's text frame itself: every length class decodes."""
    with trio.fail_after(HANG_GUARD):
        a, b = trio.socket.socketpair()
        server = WsChannel(
            trio.SocketStream(a), Connection(ConnectionType.SERVER),
            max_message_bytes=1 << 20, receive_bytes=65536,
        )  # fmt: skip
        client = WsChannel(
            trio.SocketStream(b), Connection(ConnectionType.CLIENT),
            max_message_bytes=1 << 20, receive_bytes=65536,
        )  # fmt: skip
        texts = ["", "é" * 62, "x" * 125, "y" * 126, "z" * 65535, "w" * 65536, "v" * 300_000]
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                for text in texts:
                    await server.send_utf8(text.encode())

            nursery.start_soon(send_all)
            for text in texts:
                assert await client.receive() == text


async def _hang_up_server(answer: bytes, *, task_status: trio.TaskStatus[int]) -> None:
    """A TCP server that reads the upgrade request, maybe writes ``answer``, hangs up."""

    async def handler(stream: trio.SocketStream) -> None:
        got = b""
        while b"\r\n\r\n" not in got:
            data = await stream.receive_some(4096)
            if not data:
                return
            got += data
        if answer:
            await stream.send_all(answer)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 101 Switching Protocols\r\nUpgr"])
async def test_a_hang_up_during_the_handshake_fails_at_once(answer: bytes) -> None:
    """A peer that closes TCP mid-handshake is a TransportLostError now, not when
    connect_timeout runs out (it was: every such reconnect attempt idled 10 s)."""
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_hang_up_server, answer)
            target = parse_ws_url(f"ws://127.0.0.1:{port}", None)
            with pytest.raises(TransportLostError, match="during the websocket handshake"):
                async with open_websocket(target, max_message_size=1 << 20, connect_timeout=3600):
                    pass
            with pytest.raises(TransportLostError, match="during the websocket handshake"):
                async with ue.RemoteExecBackend.connect(
                    f"ws://127.0.0.1:{port}", connect_timeout=3600
                ):
                    pass
            nursery.cancel_scope.cancel()


async def test_handshake_over_our_server_and_wsproto() -> None:
    """open_websocket against a hand-driven wsproto server: accept, frames, close."""
    with trio.fail_after(HANG_GUARD):

        async def handler(stream: trio.SocketStream) -> None:
            ws = WSConnection(ConnectionType.SERVER)
            while True:
                ws.receive_data(await stream.receive_some(4096))
                events = list(ws.events())
                if any(isinstance(e, Request) for e in events):
                    break
            # The first message rides in the same segment as the 101.
            await stream.send_all(ws.send(AcceptConnection()) + ws.send(Message(data="hi")))
            while True:
                data = await stream.receive_some(4096)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, TextMessage):
                        await stream.send_all(ws.send(Message(data=event.data.upper())))
                    if isinstance(event, CloseConnection):
                        if ws.state.name == "REMOTE_CLOSING":
                            await stream.send_all(ws.send(event.response()))
                        await stream.aclose()
                        return

        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            target = parse_ws_url(f"ws://127.0.0.1:{port}/x?y=1", "tok")
            async with open_websocket(target, max_message_size=1 << 20, connect_timeout=10) as ws:
                assert await ws.receive() == "hi"
                await ws.send("echo")
                assert await ws.receive() == "ECHO"
            nursery.cancel_scope.cancel()


async def test_client_frames_of_every_length_class_reach_a_wsproto_server() -> None:
    """Client frames (masked here up to 16 KiB, by wsproto past it; written at once
    where the socket takes them, the rest waited for) parse on an independent end."""
    with trio.fail_after(HANG_GUARD):
        a, b = trio.socket.socketpair()
        client = WsChannel(
            trio.SocketStream(a), Connection(ConnectionType.CLIENT),
            max_message_bytes=1 << 24, receive_bytes=65536, eager_send=True,
        )  # fmt: skip
        raw = trio.SocketStream(b)
        peer = Connection(ConnectionType.SERVER)  # refuses unmasked client frames
        texts = ["", "a", "abc", "abcd", "é" * 62, "x" * 126, "y" * 16384, "z" * 16385]
        texts += ["w" * 65536, "v" * (4 << 20)]  # far more than the socket buffer holds
        got: list[str] = []
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                for text in texts:
                    await client.send(text)
                await client.send_utf8("end é".encode())

            nursery.start_soon(send_all)
            parts: list[str] = []
            while len(got) < len(texts) + 1:
                await trio.sleep(0)  # a slow reader: the client's writes go partial
                peer.receive_data(await raw.receive_some(65536))
                for event in peer.events():
                    assert isinstance(event, TextMessage), event
                    parts.append(event.data)
                    if event.message_finished:
                        got.append("".join(parts))
                        parts = []
        assert got == [*texts, "end é"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x05hello", 1002),  # a client frame without a mask
        (b"\xc1\x80\x00\x00\x00\x00", 1002),  # a reserved bit (no extension agreed)
        (b"\x81\x82\x00\x00\x00\x00\xff\xfe", 1007),  # text that is not UTF-8
    ],
)
async def test_a_broken_frame_gets_a_close_with_its_code(frame: bytes, code: int) -> None:
    with trio.fail_after(HANG_GUARD):
        a, b = trio.socket.socketpair()
        server = WsChannel(
            trio.SocketStream(a), Connection(ConnectionType.SERVER),
            max_message_bytes=1 << 20, receive_bytes=65536, eager_send=True,
        )  # fmt: skip
        raw = trio.SocketStream(b)
        peer = Connection(ConnectionType.CLIENT)
        await raw.send_all(frame)
        assert await server.receive() is None
        closes = await _events(raw, peer, CloseConnection)
        assert [e.code for e in closes if isinstance(e, CloseConnection)] == [code]
        await server.aclose(timeout=0.5)  # the peer never answers: bounded


async def test_wss_both_ends_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS the frames go through send_all (no eager writes): 2 MiB of output and
    a process/write both ways between our client and our server."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what our client's default context trusts
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                ue.serve_exec_server, listen="ws://127.0.0.1:0", ssl_context=server_ctx
            )
            url = await nursery.start(serve)
            assert url.startswith("wss://")
            script = 'head -c 2097152 /dev/zero; read line; echo "$line"'
            req = ue.ExecRequest(["sh", "-c", script], pipe_stdin=True)
            async with (
                ue.RemoteExecBackend.connect(url) as backend,
                ue.open_process(backend, req) as proc,
            ):
                assert await proc.write(b"over tls\n") is ue.WriteStatus.ACCEPTED
                data = b""
                async for event in proc.events():
                    if isinstance(event, ue.OutputEvent):
                        data += event.data
                assert data == b"\0" * 2097152 + b"over tls\n"
                assert (await proc.wait()).exit_code == 0
            nursery.cancel_scope.cancel()


async def test_a_flood_of_empty_fragments_reaches_the_size_limit() -> None:
    """Empty continuation frames cost 6 bytes on the wire and a list entry here: each
    is charged against max_message_bytes, so a flood of them ends in 1009 too."""
    with trio.fail_after(HANG_GUARD):
        channel, raw = await _pair(max_message_bytes=4096)
        first = bytes((0x01, 0x00))  # a server's text frame: not final, empty
        more = bytes((0x00, 0x00))  # continuation, not final, empty
        await raw.send_all(first + more * 1000)
        assert await channel.receive() is None
        peer = Connection(ConnectionType.SERVER)
        closes = await _events(raw, peer, CloseConnection)
        assert next(e for e in closes if isinstance(e, CloseConnection)).code == 1009


async def test_text_is_counted_in_utf8_bytes() -> None:
    with trio.fail_after(HANG_GUARD):
        channel, raw = await _pair(max_message_bytes=100)
        peer = Connection(ConnectionType.SERVER)
        await raw.send_all(peer.send(Message(data="\u0100" * 60)))  # 60 chars, 120 bytes
        assert await channel.receive() is None
        closes = await _events(raw, peer, CloseConnection)
        assert next(e for e in closes if isinstance(e, CloseConnection)).code == 1009


async def test_adaptive_reads_grow_for_a_flood_and_shrink_after_it() -> None:
    """With small_receive_bytes, a read asks for little until one comes back more
    than half full, then for receive_bytes; every message arrives whole either way."""
    with trio.fail_after(HANG_GUARD):
        a, b = trio.socket.socketpair()
        channel = WsChannel(
            trio.SocketStream(a), Connection(ConnectionType.CLIENT),
            max_message_bytes=8 << 20, receive_bytes=1 << 20, small_receive_bytes=4096,
        )  # fmt: skip
        raw = trio.SocketStream(b)
        peer = Connection(ConnectionType.SERVER)
        asked: list[int] = []
        receive_some = channel._stream.receive_some

        async def spy(max_bytes: int | None = None) -> bytes | bytearray:
            asked.append(max_bytes or 0)
            return await receive_some(max_bytes)

        channel._stream.receive_some = spy  # type: ignore[method-assign]
        big = "x" * (3 << 20)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw.send_all, peer.send(Message(data=big)))
            assert await channel.receive() == big
        assert asked[0] == 4096
        assert 1 << 20 in asked  # the flood was read in big pieces
        await raw.send_all(peer.send(Message(data="small")))
        assert await channel.receive() == "small"
        await raw.send_all(peer.send(Message(data="again")))
        assert await channel.receive() == "again"
        assert asked[-1] == 4096  # a small read brought the size back down
