"""One DNS query to one explicit address: UDP, then TCP when the answer is truncated.

Never uses the system resolver: every query goes to an address the caller names. Failures do not
raise; they come back as a `Reply` with a pseudo rcode ("TIMEOUT", "UNREACHABLE", "BADREPLY") and
an operator-readable `error`, so a round over many servers can report each one.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: avoids fragmentation, TCP takes the rest


@dataclass(frozen=True)
class Reply:
    """The outcome of one query: a message, or why there is none."""

    rcode: str  # "NOERROR", "NXDOMAIN", "REFUSED", ... or "TIMEOUT", "UNREACHABLE", "BADREPLY"
    message: dns.message.Message | None = None
    error: str | None = None  # set when message is None
    tcp: bool = False  # the answer came over TCP (UDP was truncated)

    @property
    def answered(self) -> bool:
        return self.message is not None

    @property
    def authoritative(self) -> bool:
        return self.message is not None and bool(self.message.flags & dns.flags.AA)


def make_query(qname: dns.name.Name | str, rdtype: str | dns.rdatatype.RdataType, *,
               recursion: bool, dnssec: bool) -> dns.message.Message:
    q = dns.message.make_query(qname, rdtype, use_edns=0, want_dnssec=dnssec,
                               payload=EDNS_PAYLOAD)
    if not recursion:
        q.flags &= ~dns.flags.RD
    return q


def query(address: str, qname: dns.name.Name | str, rdtype: str | dns.rdatatype.RdataType, *,
          port: int = 53, timeout: float = 2.0, recursion: bool = False,
          dnssec: bool = True) -> Reply:
    """Ask `address` once (UDP, TCP on truncation). RD off unless `recursion`; DO if `dnssec`."""
    q = make_query(qname, rdtype, recursion=recursion, dnssec=dnssec)
    try:
        response, tcp = dns.query.udp_with_fallback(q, address, timeout=timeout, port=port)
    except dns.exception.Timeout:
        return Reply("TIMEOUT", error=f"no answer within {timeout:g}s (timeout)")
    except ConnectionRefusedError:
        return Reply("UNREACHABLE", error="connection refused")
    except OSError as exc:
        return Reply("UNREACHABLE", error=f"unreachable: {exc.strerror or exc}")
    except dns.exception.DNSException as exc:
        return Reply("BADREPLY", error=f"bad reply: {exc}")
    return Reply(dns.rcode.to_text(response.rcode()), message=response, tcp=tcp)
