"""The HTTP face of the websocket port: health checks, refusals, and the upgrade.

Why our own h11 front instead of a websocket library's server: wsproto turns any
request that is not an upgrade into a 400, so ``GET /readyz`` could not answer 200;
and trio-websocket's per-connection code raised into the listener's nursery when a
peer hung up at the wrong moment (review defect 1). Here the request head is read by
h11 under a size bound and a deadline, plain HTTP is answered by us, and only a
well-formed, authorised upgrade is handed to wsproto, with the bytes we already read
(``HttpRequest.raw``) fed to it. What we answer matches codex's exec-server 0.169-0.171:

- ``GET``/``HEAD /readyz`` → 200, other methods there → 405;
- ``/`` without an upgrade → 400; any other path without an upgrade → 404;
- an upgrade with an ``Origin`` header → 403 (checked before the token, as codex);
- an upgrade without the right bearer token → 401.
"""

from __future__ import annotations

import attrs
import h11
import trio

__all__ = ["BadRequest", "HttpRequest", "read_request", "respond"]

MAX_HEAD_BYTES = 16 * 1024


@attrs.frozen
class HttpRequest:
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-cased, as h11 gives them
    raw: bytes  # every byte read so far, to replay to the websocket layer

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_tokens(self, name: bytes) -> set[bytes]:
        """Comma-separated tokens of every ``name`` header, lower-cased."""
        found: set[bytes] = set()
        for key, value in self.headers:
            if key == name:
                found.update(t.strip().lower() for t in value.split(b","))
        return found

    @property
    def path(self) -> bytes:
        return self.target.split(b"?", 1)[0]

    @property
    def is_upgrade(self) -> bool:
        return b"websocket" in self.header_tokens(b"upgrade") and b"upgrade" in self.header_tokens(
            b"connection"
        )


class BadRequest(Exception):
    """The peer sent something that is not an HTTP/1.1 request head."""


async def read_request(stream: trio.abc.Stream) -> HttpRequest | None:
    """Read one request head; None if the peer hung up first.

    Raises BadRequest for malformed or oversized heads. The caller bounds the time.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    raw = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(str(exc)) from None
        if isinstance(event, h11.Request):
            return HttpRequest(
                method=bytes(event.method),
                target=bytes(event.target),
                headers=tuple((bytes(k), bytes(v)) for k, v in event.headers),
                raw=bytes(raw),
            )
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            if not data:
                return None
            raw.extend(data)
            conn.receive_data(bytes(data))
            continue
        raise BadRequest(f"unexpected HTTP event {type(event).__name__}")


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    431: b"Request Header Fields Too Large",
}


async def respond(
    stream: trio.abc.Stream,
    status: int,
    body: bytes = b"",
    *,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    head_only: bool = False,
) -> None:
    """Send one complete response that closes the connection."""
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra_headers,
    ]
    if body:
        headers.insert(0, (b"content-type", b"text/plain; charset=utf-8"))
    wire = (
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))
        + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        + b"\r\n"
        + (b"" if head_only else body)
    )
    await stream.send_all(wire)
