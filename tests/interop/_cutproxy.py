"""A loopback TCP proxy that can cut, or freeze, every connection through it on demand.

Real sockets on 127.0.0.1 both ways; the faults are the ones a flaky network makes:
``cut()`` closes both sides of every live connection at once (a dropped link: the
client and the server each see the TCP connection end), and ``freeze()`` stops
forwarding without closing anything (a NAT timeout or a suspended laptop: no FIN, no
RST, just silence) until ``thaw()``. ``hold()`` is an outage: cut, and every new
connection is hung up on, until ``release()``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._support import LINK_ERRORS, bridge, host_port, serving_tcp


class CutProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._host = upstream_host
        self._port = upstream_port
        self._links: set[trio.CancelScope] = set()
        self._thawed = trio.Event()
        self._thawed.set()
        self._refusing = False
        self.port = 0
        self.accepted = 0
        self.bytes_up = 0  # client -> server, over all connections
        self.cuts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def live(self) -> int:
        return len(self._links)

    def cut(self) -> int:
        """Close every connection now; returns how many were cut."""
        n = len(self._links)
        for scope in list(self._links):
            scope.cancel()
        self.cuts += 1 if n else 0
        return n

    def hold(self) -> None:
        """Cut every connection, and hang up on new ones until ``release()``."""
        self._refusing = True
        self.cut()

    def release(self) -> None:
        self._refusing = False

    def freeze(self) -> None:
        self._thawed = trio.Event()

    def thaw(self) -> None:
        self._thawed.set()

    async def _pump(
        self,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        *,
        scope: trio.CancelScope,
        up: bool = False,
    ) -> None:
        try:
            while True:
                data = await src.receive_some(65536)
                await self._thawed.wait()
                if not data:
                    break  # one side hung up: hang up the other
                if up:
                    self.bytes_up += len(data)
                await dst.send_all(data)
        except LINK_ERRORS:
            pass
        scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self._refusing:
                return
            self.accepted += 1
            scope = trio.CancelScope()
            self._links.add(scope)
            try:
                with scope:
                    await bridge(
                        client, self._host, self._port,
                        functools.partial(self._pump, scope=scope, up=True),
                        functools.partial(self._pump, scope=scope),
                    )  # fmt: skip
            finally:
                self._links.discard(scope)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CutProxy]:
        async with serving_tcp(self._handle) as self.port:
            yield self


parse_port = host_port
