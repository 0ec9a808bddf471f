"""A websocket the peer closed is a lost link by type: ``WsTransport.send`` raises
trio's ``BrokenResourceError`` (the rpc layer no longer matches exception class names)."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from unified_exec.backends._remote_transports import open_websocket, parse_ws_url


async def test_send_on_a_websocket_the_peer_closed_is_broken_resource() -> None:
    async def close_at_once(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            trio_websocket.serve_websocket, close_at_once, "127.0.0.1", 0, None
        )
        port = server.port
        target = parse_ws_url(f"ws://127.0.0.1:{port}", None)
        async with open_websocket(target, max_message_size=1 << 20, connect_timeout=5) as ws:
            assert await ws.receive() is None  # the peer's close arrives
            with pytest.raises(trio.BrokenResourceError):
                await ws.send('{"jsonrpc":"2.0","method":"x"}')
        nursery.cancel_scope.cancel()
