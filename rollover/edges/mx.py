"""What `rollover init` needs to know about a mail domain, asked of explicit resolvers only: its
MX hosts (a CNAME'd MX host followed to its target, the TLSA base name of RFC 7672 section
2.2.3 when the chain is DNSSEC-secure), their addresses and any TLSA records already there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rdatatype

from rollover.dns.dnssec import answer_rrset
from rollover.dns.query import query
from rollover.errors import ObserveError

USABLE = ("NOERROR", "NXDOMAIN")
MAX_CNAMES = 8


@dataclass(frozen=True)
class MxHost:
    preference: int
    name: str  # the MX exchange as published, no trailing dot
    host: str  # after following CNAMEs: the TLSA base name, no trailing dot
    addresses: tuple[str, ...]


class Resolver:
    """First usable answer from a list of resolver addresses (RD set)."""

    def __init__(self, resolvers: Sequence[str], *, port: int = 53, timeout: float = 2.0) -> None:
        if not resolvers:
            raise ObserveError("no resolver address to ask")
        self.resolvers = tuple(resolvers)
        self.port = port
        self.timeout = timeout

    def ask(self, name: str, rdtype: str) -> dns.message.Message:
        failures: list[str] = []
        for address in self.resolvers:
            reply = query(address, absolute(name), rdtype, port=self.port,
                          timeout=self.timeout, recursion=True, dnssec=False)
            msg = reply.message
            if msg is not None and reply.rcode in USABLE and msg.flags & (dns.flags.AA |
                                                                          dns.flags.RA):
                return msg
            failures.append(f"{address}: {reply.error or reply.rcode}")
        raise ObserveError(f"no resolver answered {rdtype} {name}: {'; '.join(failures)}")

    def rdatas(self, name: str, rdtype: str) -> list[str]:
        """The rdata texts of `name`/`rdtype` (CNAMEs in the answer followed)."""
        msg = self.ask(name, rdtype)
        rrset = answer_rrset(msg, absolute(name), dns.rdatatype.from_text(rdtype))
        return [] if rrset is None else sorted(rd.to_text() for rd in rrset)

    def canonical(self, name: str) -> str:
        """`name` after following its CNAME chain (itself when it has none)."""
        current = absolute(name)
        for _ in range(MAX_CNAMES):
            msg = self.ask(str(current), "CNAME")
            cname = next((r for r in msg.answer if r.name == current
                          and r.rdtype == dns.rdatatype.CNAME), None)
            if cname is None:
                return str(current).rstrip(".")
            current = cname[0].target
        raise ObserveError(f"{name}: more than {MAX_CNAMES} CNAMEs")


def absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name if name.endswith(".") else name + ".")


def mx_hosts(resolver: Resolver, domain: str) -> list[MxHost]:
    """The MX hosts of `domain`, best preference first; ObserveError when it has none."""
    found: list[MxHost] = []
    for text in resolver.rdatas(domain, "MX"):
        pref, exchange = text.split(None, 1)
        name = exchange.rstrip(".").lower()
        if not name:  # "0 ." is a null MX (RFC 7505): the domain takes no mail
            raise ObserveError(f"{domain} has a null MX: it accepts no mail")
        host = resolver.canonical(name).lower()
        addresses = tuple(resolver.rdatas(host, "A") + resolver.rdatas(host, "AAAA"))
        found.append(MxHost(int(pref), name, host, addresses))
    if not found:
        raise ObserveError(f"{domain} has no MX records (asked {', '.join(resolver.resolvers)})")
    return sorted(found, key=lambda m: (m.preference, m.host))
