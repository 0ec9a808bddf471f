"""Where the exec-server listens: stdio, TCP (optionally TLS), or a 0600 Unix socket.

``--listen`` values:

- ``stdio``: newline-delimited JSON on stdin/stdout (codex's ``stdio`` / ``stdio://``);
- ``ws://HOST:PORT`` (``wss://`` is announced when an ``ssl_context`` is given): TCP.
  ``localhost`` binds 127.0.0.1 only: on dual-stack hosts ``localhost`` resolves to
  both ``::1`` and ``127.0.0.1``, and two listeners on port 0 get two different
  ports, so no single announced URL would name both (review defect 23). Any other
  name that resolves to several addresses gets them all on a fixed port, and only
  the first (the announced one) with port 0;
- ``unix:///abs/path``: a Unix socket created with mode 0600, so only the server's
  user (and root) can connect; the file permission is the authentication. A stale
  socket file nobody listens on is replaced; anything else at that path is refused.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket as stdlib_socket
import ssl
import stat
from typing import Literal
from urllib.parse import unquote, urlsplit

import attrs
import trio

from .._errors import InvalidRequestError

__all__ = ["Bound", "ListenSpec", "is_loopback", "open_listeners", "parse_listen"]


@attrs.frozen
class ListenSpec:
    kind: Literal["stdio", "ws", "unix"]
    host: str = ""  # ws: the host as given; unix: the socket path
    port: int = 0


def parse_listen(listen: str) -> ListenSpec:
    """``stdio``, ``ws://HOST:PORT`` or ``unix:///PATH`` → a ListenSpec."""
    if listen in ("stdio", "stdio://"):
        return ListenSpec("stdio")
    parts = urlsplit(listen)
    if parts.scheme == "unix":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise InvalidRequestError(f"--listen unix:// takes an absolute path, not {listen!r}")
        return ListenSpec("unix", path)
    if parts.scheme != "ws" or not parts.hostname:
        raise InvalidRequestError(
            f"--listen takes stdio, ws://HOST:PORT or unix:///PATH, not {listen!r}"
        )
    try:
        port = parts.port if parts.port is not None else 0
    except ValueError:
        raise InvalidRequestError(f"bad port in {listen!r}") from None
    return ListenSpec("ws", parts.hostname, port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen
class Bound:
    listeners: list[trio.abc.Listener[trio.abc.Stream]]
    url: str  # what we announce: the first stdout line of `unified-exec serve`
    unix_path: str | None = None  # removed again when serving ends


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def _tcp(host: str, port: int) -> list[trio.SocketListener]:
    bind_host = "127.0.0.1" if host == "localhost" else host
    try:
        listeners = await trio.open_tcp_listeners(port, host=bind_host)
    except OSError as exc:
        raise InvalidRequestError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if len(listeners) > 1 and port == 0:
        # Several addresses got several kernel-picked ports, and one announced URL can
        # name only one of them: keep the first, which is the one announced.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    return listeners


async def _unix(path: str) -> trio.SocketListener:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise InvalidRequestError(f"refusing to replace {path}: it is not a socket")
        probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise InvalidRequestError(f"cannot check {path}: {exc.strerror}") from None
            os.unlink(path)  # stale: nobody listens there
        else:
            raise InvalidRequestError(f"{path} is in use by another server")
        finally:
            probe.close()
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    # The umask makes the socket 0600 from the moment it exists: a chmod after bind
    # would leave a window in which another user could connect.
    old_umask = os.umask(0o177)
    try:
        await sock.bind(path)
    except OSError as exc:
        sock.close()
        raise InvalidRequestError(f"cannot listen on unix://{path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)  # belt and braces: some filesystems ignore the umask for sockets
    sock.listen(128)
    return trio.SocketListener(sock)


async def open_listeners(spec: ListenSpec, ssl_context: ssl.SSLContext | None) -> Bound:
    """Bind what ``spec`` names; TLS-wrap it when ``ssl_context`` is given."""
    raw: list[trio.SocketListener]
    unix_path = None
    if spec.kind == "unix":
        raw = [await _unix(spec.host)]
        unix_path = spec.host
    elif spec.kind == "ws":
        raw = await _tcp(spec.host, spec.port)
    else:
        raise InvalidRequestError("stdio has no listener")
    listeners: list[trio.abc.Listener[trio.abc.Stream]]
    if ssl_context is not None:
        listeners = [trio.SSLListener(li, ssl_context, https_compatible=True) for li in raw]
    else:
        listeners = list(raw)
    if unix_path is not None:
        url = f"unix://{unix_path}"
    else:
        address, port = raw[0].socket.getsockname()[:2]
        scheme = "wss" if ssl_context is not None else "ws"
        url = f"{scheme}://{_url_host(address)}:{port}"
    return Bound(listeners, url, unix_path)
