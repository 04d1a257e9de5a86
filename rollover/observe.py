"""Propagation verifier: ask every authoritative nameserver address what it serves, in parallel.

Discovery (zone by SOA walk, NS names, their addresses) goes through the configured resolvers
with RD set; the observation itself asks each authoritative address directly: RD=0, DO=1, UDP
with TCP on truncation, AA required. Traffic goes only to the configured resolver addresses, the
addresses they give for the NS names, and the configured extra addresses -- never to the system
resolver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from rollover.clock import Clock
from rollover.dnsquery import Reply, query
from rollover.dnssec_check import (
    VALID,
    answer_rrset,
    check_response,
    service_parent,
    tcp_pitfall,
    zone_keys,
)
from rollover.errors import ObserveError
from rollover.model import Observation, ServerAnswer, TLSARecord

T = TypeVar("T")
R = TypeVar("R")

EXTRA = "extra"  # server name given to configured extra addresses (hidden primary etc.)
USABLE = ("NOERROR", "NXDOMAIN")
# (parent zone, NS names the parent delegates to, glue addresses by name)
Delegation = tuple[dns.name.Name, set[dns.name.Name], dict[dns.name.Name, list[str]]]


def absolute(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name
    try:
        return dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ObserveError(f"bad DNS name {name!r}: {exc}") from None


def rdata_text(rdtype: int, rdata: Any) -> str:
    """Canonical rdata text: TLSA as "U S M lowerhex", everything else as dnspython prints it."""
    if rdtype == dns.rdatatype.TLSA:
        rd = rdata
        return TLSARecord(rd.usage, rd.selector, rd.mtype, rd.cert).to_text()
    return str(rdata.to_text())


def parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """fn over items, one thread each (they wait on the network, not the CPU); order kept."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


def pitfall_problem(owner: dns.name.Name, parent: dns.name.Name, labels: Sequence[str]) -> str:
    return (
        f"{parent} is NXDOMAIN on {', '.join(labels)} although {owner} exists: "
        f"qname-minimising resolvers stop at {parent} and will not find the TLSA record "
        f"(fix the zone's NSEC/NSEC3 chain so {parent} is an empty non-terminal)"
    )


def ns_mismatch_problem(
    zone: dns.name.Name,
    parent: dns.name.Name,
    at_parent: set[dns.name.Name],
    at_apex: set[dns.name.Name],
) -> str:
    def show(names: set[dns.name.Name]) -> str:
        return ", ".join(sorted(str(n) for n in names)) or "none"

    return (
        f"NS set of {zone} differs: parent {parent} delegates to {show(at_parent)}, "
        f"the zone apex lists {show(at_apex)} (all of them are checked)"
    )


@dataclass(frozen=True)
class _Probe:
    """What one address said, before the round decides whether the zone is signed."""

    answer: ServerAnswer
    has_dnskey: bool = False
    negative_ttl: int | None = None
    pitfall: bool = False


class Observer:
    def __init__(
        self, resolvers: Sequence[str], *, port: int = 53, timeout: float = 2.0, clock: Clock
    ) -> None:
        if not resolvers:
            raise ObserveError("no resolver address configured for zone discovery")
        self.resolvers = [_address(r, "resolver") for r in resolvers]
        self.port = port
        self.timeout = timeout
        self.clock = clock
        self._ns_cache: dict[dns.name.Name, tuple[list[tuple[str, str]], tuple[str, ...]]] = {}

    # -- discovery through the resolvers ------------------------------------------------------

    def _ask(self, qname: dns.name.Name, rdtype: str) -> dns.message.Message:
        """First usable answer from the resolvers (RD set). A referral from a non-recursive
        server (AA=0, RA=0) is not an answer; the next resolver is asked."""
        failures: list[str] = []
        for address in self.resolvers:
            reply = query(
                address,
                qname,
                rdtype,
                port=self.port,
                timeout=self.timeout,
                recursion=True,
                dnssec=False,
            )
            msg = reply.message
            answering = dns.flags.AA | dns.flags.RA
            if msg is not None and reply.rcode in USABLE and msg.flags & answering:
                return msg
            why = reply.error or (reply.rcode if reply.rcode not in USABLE else "referral only")
            failures.append(f"{address}: {why}")
        raise ObserveError(f"no resolver answered {rdtype} {qname}: {'; '.join(failures)}")

    def find_zone(self, owner: str | dns.name.Name) -> str:
        """The zone `owner` lives in, by walking up the name asking for SOA records."""
        return str(self._find_zone(absolute(owner)))

    def _find_zone(self, owner: dns.name.Name) -> dns.name.Name:
        name = owner
        while True:
            msg = self._ask(name, "SOA")
            if any(r.rdtype == dns.rdatatype.SOA and r.name == name for r in msg.answer):
                return name
            if not any(r.rdtype == dns.rdatatype.CNAME for r in msg.answer):
                for rrset in msg.authority:
                    if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                        return rrset.name
            if name == dns.name.root:
                raise ObserveError(f"no zone found for {owner}: no SOA record up to the root")
            name = name.parent()

    def _addresses(self, host: dns.name.Name) -> list[str]:
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                msg = self._ask(host, rdtype)
            except ObserveError:
                continue
            rrset = answer_rrset(msg, host, dns.rdatatype.RdataType.make(rdtype))
            if rrset is not None:
                out.extend(sorted(rd.address for rd in rrset))
        return out

    def _apex_ns(self, zone: dns.name.Name) -> set[dns.name.Name]:
        msg = self._ask(zone, "NS")
        rrset = answer_rrset(msg, zone, dns.rdatatype.NS)
        return {rd.target for rd in rrset} if rrset is not None else set()

    def _delegation(self, zone: dns.name.Name) -> Delegation | None:
        """(parent zone, NS names it delegates to, glue) asking the parent's servers directly;
        None when the parent cannot be reached (no parent resolvable from here)."""
        if zone == dns.name.root:
            return None
        try:
            parent = self._find_zone(zone.parent())
            addresses = [a for ns in sorted(self._apex_ns(parent)) for a in self._addresses(ns)]
        except ObserveError:
            return None
        replies = parallel(
            lambda a: query(a, zone, "NS", port=self.port, timeout=self.timeout, dnssec=False),
            addresses,
        )
        names: set[dns.name.Name] = set()
        glue: dict[dns.name.Name, list[str]] = {}
        answered = False
        for reply in replies:
            if reply.message is None or reply.rcode != "NOERROR":
                continue
            for rrset in (*reply.message.answer, *reply.message.authority):
                if rrset.rdtype == dns.rdatatype.NS and rrset.name == zone:
                    answered = True
                    names |= {rd.target for rd in rrset}
            for rrset in reply.message.additional:
                if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    glue.setdefault(rrset.name, []).extend(rd.address for rd in rrset)
        return (parent, names, glue) if answered else None

    def delegation(self, zone: str | dns.name.Name) -> list[str] | None:
        """NS names the parent zone delegates `zone` to (asking the parent's servers directly),
        or None when no parent server can be reached from the configured resolvers."""
        found = self._delegation(absolute(zone))
        return None if found is None else sorted(str(n) for n in found[1])

    def nameservers(
        self, zone: str | dns.name.Name, extra: Sequence[str] = ()
    ) -> list[tuple[str, str]]:
        """(NS name, address) for every address of every NS name (zone apex and parent
        delegation), then (EXTRA, address) for extra addresses not already listed."""
        servers, _problems = self._nameservers(absolute(zone), extra)
        return servers

    def _nameservers(
        self, zone: dns.name.Name, extra: Sequence[str]
    ) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
        extras = [_address(a, "extra nameserver") for a in extra]
        if zone not in self._ns_cache:
            self._ns_cache[zone] = self._discover(zone, allow_empty=bool(extras))
        servers, problems = self._ns_cache[zone]
        known = {a for _n, a in servers}
        servers = servers + [(EXTRA, a) for a in dict.fromkeys(extras) if a not in known]
        if not servers:
            raise ObserveError(f"no nameserver address found for zone {zone}")
        return servers, problems

    def _discover(
        self, zone: dns.name.Name, allow_empty: bool
    ) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
        problems: list[str] = []
        try:
            apex = self._apex_ns(zone)
        except ObserveError:
            if not allow_empty:
                raise
            apex = set()
        delegation = self._delegation(zone)
        names = set(apex)
        glue: dict[dns.name.Name, list[str]] = {}
        if delegation is not None:
            parent, at_parent, glue = delegation
            if at_parent != apex:
                problems.append(ns_mismatch_problem(zone, parent, at_parent, apex))
            names |= at_parent
        servers: list[tuple[str, str]] = []
        for name in sorted(names):
            addresses = self._addresses(name) or sorted(set(glue.get(name, [])))
            if not addresses:
                problems.append(f"nameserver {name} of {zone} has no A or AAAA address")
            servers.extend((str(name), a) for a in addresses)
        if not servers and not allow_empty:
            raise ObserveError(f"no nameserver address found for zone {zone}")
        return servers, tuple(problems)

    # -- one observation round ----------------------------------------------------------------

    def observe(
        self, owner: str, rtype: str = "TLSA", zone: str | None = None, extra: Sequence[str] = ()
    ) -> Observation:
        at = self.clock.now()
        qname = absolute(owner)
        zname = absolute(zone) if zone is not None else self._find_zone(qname)
        if not qname.is_subdomain(zname):
            raise ObserveError(f"{qname} is not inside zone {zname}")
        try:
            rdtype = dns.rdatatype.from_text(rtype)
        except dns.exception.DNSException:
            raise ObserveError(f"unknown record type {rtype!r}") from None
        servers, problems = self._nameservers(zname, extra)
        now = at.timestamp()
        probes = parallel(lambda s: self._probe(s[0], s[1], qname, rdtype, zname, now), servers)

        signed = any(p.has_dnskey for p in probes)
        answers: list[ServerAnswer] = []
        for p in probes:
            a = p.answer
            if signed and a.ok and not p.has_dnskey:
                a = replace(
                    a,
                    ok=False,
                    dnssec="DNSKEY missing",
                    error=f"serves no DNSKEY for the signed zone {zname}",
                )
            answers.append(a)
        pitfalls = [p.answer.label for p in probes if p.pitfall]
        parent = service_parent(qname)
        if pitfalls and parent is not None:
            problems = (*problems, pitfall_problem(qname, parent, pitfalls))
        negative = [p.negative_ttl for p in probes if p.negative_ttl is not None]
        return Observation(
            owner=str(qname),
            rtype=dns.rdatatype.to_text(rdtype),
            at=at,
            answers=tuple(answers),
            zone=str(zname),
            negative_ttl=max(negative) if negative else None,
            signed=signed,
            problems=tuple(problems),
        )

    def _query(
        self, address: str, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType | str
    ) -> Reply:
        return query(address, qname, rdtype, port=self.port, timeout=self.timeout)

    def _probe(
        self,
        server: str,
        address: str,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        zone: dns.name.Name,
        now: float,
    ) -> _Probe:
        """Up to four queries to one address: the RRset, the zone SOA, the DNSKEY RRset and,
        for `_port._tcp.host` owners, `_tcp.host`. Stops at the first failure."""
        base = ServerAnswer(server=server, address=address, ok=False, rcode="")

        def failed(rcode: str, error: str) -> _Probe:  # keeps what `base` has gathered so far
            return _Probe(replace(base, ok=False, rcode=rcode, error=error))

        reply = self._query(address, qname, rdtype)
        msg = reply.message
        if msg is None:
            return failed(reply.rcode, reply.error or reply.rcode)
        if reply.rcode not in USABLE:
            return failed(reply.rcode, f"answered {reply.rcode}")
        if not reply.authoritative:
            return failed(reply.rcode, f"not authoritative for {zone} (AA=0)")
        rrset = answer_rrset(msg, qname, dns.rdatatype.RdataType.make(rdtype))
        records = frozenset(rdata_text(rdtype, rd) for rd in rrset) if rrset else frozenset()
        base = replace(
            base, rcode=reply.rcode, records=records, ttl=rrset.ttl if rrset is not None else None
        )

        soa_reply = self._query(address, zone, "SOA")
        soa = (
            answer_rrset(soa_reply.message, zone, dns.rdatatype.SOA)
            if soa_reply.message is not None and soa_reply.authoritative
            else None
        )
        if soa is None:
            return failed(
                reply.rcode,
                f"no authoritative SOA for {zone}: {soa_reply.error or soa_reply.rcode}",
            )
        serial = soa[0].serial
        negative_ttl = min(soa.ttl, soa[0].minimum)
        base = replace(base, serial=serial)

        key_reply = self._query(address, zone, "DNSKEY")
        if key_reply.message is None or key_reply.rcode != "NOERROR":
            return failed(reply.rcode, f"DNSKEY query: {key_reply.error or key_reply.rcode}")
        keys, key_problem = zone_keys(key_reply.message, zone, now)
        dnssec: str | None = None
        if keys is not None:
            dnssec = key_problem or check_response(msg, qname, rdtype, zone, keys, now)
        ok = dnssec in (None, VALID)
        base = replace(base, ok=ok, dnssec=dnssec, error=None if ok else f"DNSSEC: {dnssec}")

        pitfall = False
        parent = service_parent(qname)
        if ok and reply.rcode == "NOERROR" and parent is not None and parent.is_subdomain(zone):
            parent_reply = self._query(address, parent, rdtype)
            pitfall = parent_reply.message is not None and tcp_pitfall(msg, parent_reply.message)
        return _Probe(base, has_dnskey=keys is not None, negative_ttl=negative_ttl, pitfall=pitfall)


def _address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ObserveError(f"{what} {text!r} is not an IP address") from None
