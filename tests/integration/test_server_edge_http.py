"""HTTP on the websocket port (issue §4) and the bearer check on the upgrade (defect 3).

The answers are codex exec-server 0.169/0.171's, measured with curl against the real
binary: /readyz 200 (GET, HEAD; 405 otherwise), / without upgrade 400, other paths
404, an upgrade with Origin 403 (before the token check), a missing or wrong token 401.
"""

from __future__ import annotations

import hashlib

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import given, settings

import unified_exec as ue
from unified_exec.server._auth import TokenAuth

from .server_edge_helpers import UPGRADE, embedded, http, run_echo, status_of

TOKEN = "edge-http-token"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (UPGRADE + b"\r\n", 401),
        (UPGRADE + b"Authorization: Bearer wrong\r\n\r\n", 401),
        (UPGRADE + b"Authorization: Basic " + TOKEN.encode() + b"\r\n\r\n", 401),
        (UPGRADE + AUTH + b"Origin: http://evil.example\r\n\r\n", 403),
        (UPGRADE + b"Origin: http://evil.example\r\n\r\n", 403),
        (
            UPGRADE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
            + AUTH
            + b"\r\n",
            400,
        ),
        (b"\x16\x03\x01\x00\xa5not http at all\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 400),
    ],
    ids=[
        "readyz",
        "readyz-head",
        "readyz-post",
        "plain-get",
        "other-path",
        "no-token",
        "wrong-token",
        "basic-scheme",
        "origin",
        "origin-no-token",
        "bad-version",
        "garbage",
        "huge-header",
    ],
)
async def test_http_answers(request_bytes: bytes, status: int) -> None:
    with trio.fail_after(30):
        async with embedded(token=TOKEN) as url:
            response = await http(url, request_bytes)
            assert status_of(response) == status, response[:300]
            if status == 401:
                assert b"www-authenticate: Bearer" in response.lower().replace(b"bearer", b"Bearer")
            # Whatever that peer did, the server goes on serving.
            assert await run_echo(url, token=TOKEN) == b"edge-ok\n"


async def test_right_token_upgrades_and_is_case_insensitive_in_the_scheme() -> None:
    with trio.fail_after(30):
        async with embedded(token=TOKEN) as url:
            for scheme in (b"Bearer", b"bearer", b"BEARER"):
                req = UPGRADE + b"Authorization: " + scheme + b" " + TOKEN.encode() + b"\r\n\r\n"
                stream = await trio.open_tcp_stream(*_hp(url))
                async with stream:
                    await stream.send_all(req)
                    head = await stream.receive_some(4096)
                assert status_of(head) == 101, head


def _hp(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


async def test_token_sha256_only_server() -> None:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    with trio.fail_after(30):
        async with embedded(token_sha256=digest) as url:
            assert status_of(await http(url, UPGRADE + b"\r\n")) == 401
            assert await run_echo(url, token=TOKEN) == b"edge-ok\n"
            with pytest.raises(ue.TransportLostError, match="401"):
                await run_echo(url, token="not-it")


async def test_readyz_does_not_need_the_token_but_exec_does() -> None:
    """A readiness probe (k8s httpGet) carries no secret; it learns nothing but 'up'."""
    with trio.fail_after(30):
        async with embedded(token=TOKEN) as url:
            assert status_of(await http(url, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
            with pytest.raises(ue.TransportLostError):
                await run_echo(url, token=None)


@settings(max_examples=200, deadline=None)
@given(presented=st.binary(max_size=40), scheme=st.sampled_from([b"Bearer ", b"bearer  ", b""]))
def test_token_check_accepts_exactly_the_token(presented: bytes, scheme: bytes) -> None:
    auth = TokenAuth.from_token(TOKEN)
    header = scheme + presented
    expected = scheme != b"" and presented.strip() == TOKEN.encode()
    assert auth.check(header) is expected
    assert auth.check(b"Bearer " + TOKEN.encode())
    assert not auth.check(None)
    assert TOKEN not in repr(auth)


@pytest.mark.parametrize("bad", ["", " padded", "new\nline", "nul\0", "ünicode"])
def test_bad_tokens_are_refused_where_configured(bad: str) -> None:
    with pytest.raises(ue.InvalidRequestError):
        TokenAuth.from_token(bad)


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "0" * 63])
def test_bad_sha256_is_refused(bad: str) -> None:
    with pytest.raises(ue.InvalidRequestError, match="64-character hex"):
        TokenAuth.from_sha256(bad)
