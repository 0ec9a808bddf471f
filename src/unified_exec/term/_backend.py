"""Where a front end's commands run: a local PTY backend, an exec-server, or a pool.

Shared by ``unified-exec exec`` and ``unified-exec mcp``. The client token comes
from a file (``--token-file``) or ``$UNIFIED_EXEC_TOKEN``, never from the command
line, where every local user could read it in /proc/PID/cmdline; with a pool it is
sent to every member.

A ``--pool`` SPEC (``parse_pool_spec``) is either

- a comma-separated list of exec-server URLs (``ws://`` / ``wss://``), or
- ``dns:NAME[:PORT][@NAMESERVER[:PORT]]``: the A records of NAME (a Kubernetes
  headless Service's fully qualified name), each a server at ``ws://IP:PORT``
  (PORT defaults to 8765, the port of ``deploy/k8s``), re-resolved every 5 s by
  ``DnsDiscovery``; ``@NAMESERVER`` (an IP address, port 53 by default) asks that
  DNS server instead of the system's resolvers, as ``dig @server`` does.

A spec is checked when the command line is parsed, so a typo is an argparse error
(exit 2) before anything connects.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs

from .._errors import InvalidRequestError, UnifiedExecError
from ..backends import LocalPtyBackend, PoolBackend, RemoteExecBackend
from ..backends._base import ExecBackend
from ..backends._pool_discovery import DnsDiscovery
from ..backends._remote_transports import parse_ws_url

__all__ = [
    "DEFAULT_POOL_PORT",
    "PoolSpec",
    "backend_factory",
    "parse_pool_spec",
    "read_client_token",
]

#: The exec-server port of ``deploy/k8s`` (its headless Service and StatefulSet).
DEFAULT_POOL_PORT = 8765

#: How long a pool waits at start for its first member to answer.
POOL_CONNECT_TIMEOUT = 5.0

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


@attrs.frozen
class PoolSpec:
    """A parsed ``--pool`` SPEC: the static URLs, or the DNS discovery to run."""

    text: str
    servers: tuple[str, ...] | DnsDiscovery

    def __str__(self) -> str:  # "lost the link to the pool dns:...": the CLI's messages
        return f"the pool {self.text}"


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidRequestError(f"bad {what} port {text!r} (want 1-65535)")
    return int(text)


def _nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    host, port = text, "53"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidRequestError(f"bad nameserver {text!r} (want IP[:PORT] or [IPv6]:PORT)")
        port = rest[1:] if rest else "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidRequestError(
            f"the nameserver after '@' must be an IP address, not {host!r}"
        ) from None
    return host, _port(port, "nameserver")


def _parse_dns(text: str) -> DnsDiscovery:
    rest = text.removeprefix("dns:")
    target, at, server = rest.partition("@")
    name, colon, port_text = target.partition(":")
    port = _port(port_text, "exec-server") if colon else DEFAULT_POOL_PORT
    labels = name.removesuffix(".").split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidRequestError(
            f"bad DNS name {name!r} in --pool {text!r} (want dns:NAME[:PORT][@NAMESERVER[:PORT]])"
        )
    if importlib.util.find_spec("dns") is None:
        raise InvalidRequestError(
            "--pool dns:... needs dnspython: pip install 'unified_exec[pool]'"
        )
    if not at:
        return DnsDiscovery(name, port)
    host, ns_port = _nameserver(server)
    return DnsDiscovery(name, port, nameserver=host, nameserver_port=ns_port)


def parse_pool_spec(text: str) -> PoolSpec:
    """Check a ``--pool`` SPEC (see the module docstring); InvalidRequestError if bad."""
    spec = text.strip()
    if not spec:
        raise InvalidRequestError("--pool needs exec-server URLs or dns:NAME[:PORT]")
    if spec.startswith("dns:"):
        return PoolSpec(spec, _parse_dns(spec))
    urls = [item.strip() for item in spec.split(",")]
    for url in urls:
        if not url:
            raise InvalidRequestError(f"empty entry in --pool {spec!r}")
        if url.startswith("dns:"):
            raise InvalidRequestError("dns:NAME cannot be mixed with URLs in one --pool")
        parse_ws_url(url, None)  # ws:// or wss:// with a host: an InvalidRequestError
    if len(set(urls)) != len(urls):
        raise InvalidRequestError(f"an exec-server appears twice in --pool {spec!r}")
    return PoolSpec(spec, tuple(urls))


def read_client_token(path: str | None) -> str | None:
    """The token in ``path`` (one trailing newline stripped), else $UNIFIED_EXEC_TOKEN."""
    if path is None:
        return os.environ.get("UNIFIED_EXEC_TOKEN") or None
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as exc:
        raise InvalidRequestError(f"cannot read --token-file {path}: {exc.strerror}") from None
    if len(data) > 64 * 1024:
        raise InvalidRequestError(f"--token-file {path} is too large to be a token")
    text = data.decode("ascii", errors="replace").removesuffix("\n").removesuffix("\r")
    if not text or "\ufffd" in text:
        raise InvalidRequestError(f"--token-file {path} does not hold an ASCII token")
    return text


def _nobody_answered(spec: PoolSpec, pool: PoolBackend) -> UnifiedExecError:
    states = pool.servers
    if isinstance(spec.servers, DnsDiscovery) and not states:
        return UnifiedExecError(
            f"{spec}: no exec-server found (the name has no A record, or DNS did not "
            f"answer, within {POOL_CONNECT_TIMEOUT:g} s)"
        )
    why = "; ".join(f"{s.url}: {s.last_error or 'no answer'}" for s in states)
    return UnifiedExecError(
        f"{spec}: no exec-server answered within {POOL_CONNECT_TIMEOUT:g} s ({why})"
    )


def backend_factory(
    server: str | PoolSpec | None, token_file: str | None
) -> Callable[[], AbstractAsyncContextManager[ExecBackend]]:
    """A factory opening the backend: local without ``server``; that exec-server for a
    URL; a ``PoolBackend`` over the servers of a ``PoolSpec`` (``parse_pool_spec``).

    The token file is read now, so a bad one fails before anything starts. A pool
    waits up to ``POOL_CONNECT_TIMEOUT`` for one member to answer (the others join
    as they do) and fails with every member's last error when none did.
    """
    if server is None:
        if token_file is not None:
            raise InvalidRequestError("--token-file needs an exec-server URL or --pool")

        @asynccontextmanager
        async def local() -> AsyncIterator[ExecBackend]:
            async with LocalPtyBackend() as backend:
                yield backend

        return local
    token = read_client_token(token_file)
    if isinstance(server, PoolSpec):
        spec = server

        @asynccontextmanager
        async def pool() -> AsyncIterator[ExecBackend]:
            servers = spec.servers
            async with PoolBackend.connect(
                servers if isinstance(servers, DnsDiscovery) else list(servers),
                token=token,
                connect_timeout=POOL_CONNECT_TIMEOUT,
            ) as backend:
                if not any(s.healthy for s in backend.servers):
                    raise _nobody_answered(spec, backend)
                yield backend

        return pool
    url = server

    @asynccontextmanager
    async def remote() -> AsyncIterator[ExecBackend]:
        async with RemoteExecBackend.connect(url, token=token) as backend:
            yield backend

    return remote
