"""Where a PoolBackend's servers are, and whether they are up.

- ``probe_readyz``: ``GET /readyz`` on a server's websocket port. Our server answers
  200 when ready and 503 while draining; codex 0.169-0.171 answers 200 too. Any other
  HTTP answer (a server without the route) still proves it is up; only 503 or no
  answer at all means "not ready". (The pool's health check asks
  ``environment/status`` first; see ``pool``.)
- ``DnsDiscovery``: the A records of a Kubernetes headless Service (one per ready
  pod), re-resolved every ``interval`` seconds with dnspython (a well-kept DNS
  library; no hand-written parser), in a worker thread so trio is never blocked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dns.resolver

import logging
import urllib.parse
from collections.abc import Callable, Sequence

import attrs
import trio

__all__ = ["DnsDiscovery", "probe_readyz"]

log = logging.getLogger("unified_exec.pool")


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return host, port


async def probe_readyz(url: str, *, timeout: float = 2.0) -> bool:
    """Is the server at ``url`` up and ready (see the module docstring)?"""
    host, port = _host_port(url)
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        if url.startswith("wss://"):
            await stream.aclose()
            return True  # TLS: an accepted connection is all a probe without certs sees
        try:
            request = f"GET /readyz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode("ascii"))
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        fields = head.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/"):
            return False
        return fields[1] != b"503"
    return False


@attrs.frozen
class DnsDiscovery:
    """Servers from DNS: every A record of ``name`` is a server at ``ws://IP:port``.

    ``nameserver``/``nameserver_port`` point the resolver at one DNS server (a test's,
    or the cluster's); without them the system resolver configuration is used.
    """

    name: str
    port: int
    scheme: str = "ws"
    interval: float = 5.0
    nameserver: str | None = None
    nameserver_port: int = 53
    timeout: float = 2.0

    def _resolver(self) -> dns.resolver.Resolver:
        import dns.resolver  # the `pool` extra: only DNS discovery needs dnspython

        if self.nameserver is None:
            resolver = dns.resolver.Resolver()
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self.nameserver]
            resolver.port = self.nameserver_port
        resolver.lifetime = self.timeout
        resolver.cache = None
        return resolver

    def resolve(self) -> list[str] | None:
        """The server URLs now, sorted; None when DNS did not answer (keep the old set)."""
        import dns.exception
        import dns.resolver

        try:
            answer = self._resolver().resolve(self.name, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []  # the Service has no ready pods
        except dns.exception.DNSException as exc:
            log.warning("cannot resolve %s: %s", self.name, exc)
            return None
        ips = sorted({rr.to_text() for rr in answer})
        return [f"{self.scheme}://{ip}:{self.port}" for ip in ips]

    async def run(self, update: Callable[[Sequence[str]], None]) -> None:
        """Resolve every ``interval`` s and hand each answer to ``update``, forever."""
        while True:
            urls = await trio.to_thread.run_sync(self.resolve, abandon_on_cancel=True)
            if urls is not None:
                update(urls)
            await trio.sleep(self.interval)
