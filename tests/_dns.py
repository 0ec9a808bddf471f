"""A real DNS server for the pool tests: a loopback UDP socket answering A queries for
one name from a record set the test may change (dnspython's message API, no
hand-written parsing)."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class LoopbackDnsServer:
    """Answers ``name``'s A records with ``addresses`` (NXDOMAIN while there are none)."""

    def __init__(self, name: str, addresses: list[str] | None = None) -> None:
        self.name = name
        self.addresses: list[str] = list(addresses or [])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.queries = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            question = query.question[0]
            if question.name.to_text() != self.name or not self.addresses:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                reply.answer.append(
                    dns.rrset.from_text_list(question.name, 1, "IN", "A", list(self.addresses))
                )
            self.queries += 1
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()
