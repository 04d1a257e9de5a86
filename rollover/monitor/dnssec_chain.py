"""Is an RRset DNSSEC-valid *from a trust anchor down*, as a validating resolver would judge it?

Two ways, and the result says which one was used:

- `validate_from_anchor`: walk the chain ourselves (dnspython): the anchor's DS/DNSKEY -> the
  anchor zone's DNSKEY RRset -> for each zone cut below, the DS RRset signed by the parent (asked
  of the parent's authoritative servers) -> the child's DNSKEY RRset signed by a key that DS
  names -> finally the RRset (or its NSEC/NSEC3 denial), asked of *every* authoritative address
  of its zone and judged on its own.
- `validate_by_resolver`: ask a validating resolver the operator names and trust its AD bit.

Discovery (zone cuts, NS addresses) goes through `Observer` and the configured resolvers; the
questions that carry signatures go straight to authoritative addresses (RD=0, DO=1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.dsbase
import dns.rrset

from rollover.dns.dnssec import VALID, answer_rrset, check_negative, check_response, check_rrset
from rollover.dns.query import Reply, make_query, query
from rollover.edges.observe import Observer, absolute
from rollover.errors import ObserveError
from rollover.monitor.anchors import TrustAnchor

DS = dns.rdatatype.DS
DNSKEY = dns.rdatatype.DNSKEY


@dataclass(frozen=True)
class Validation:
    """`secure` True: every server's answer validates from the anchor; False: why not."""

    secure: bool
    method: str  # "trust anchor test. (...)" or "validating resolver 192.0.2.53 (AD bit)"
    reason: str  # "valid" or the first problem
    path: tuple[str, ...] = ()  # zones walked, anchor first
    servers: dict[str, str] = field(default_factory=dict)  # address -> VALID or why not

    def to_dict(self) -> dict[str, object]:
        return {"secure": self.secure, "method": self.method, "reason": self.reason,
                "path": list(self.path), "servers": dict(self.servers)}


class _Insecure(Exception):
    pass


class ChainWalker:
    def __init__(self, observer: Observer, anchor: TrustAnchor, *, port: int = 53,
                 timeout: float = 2.0) -> None:
        self.observer = observer
        self.anchor = anchor
        self.port = port
        self.timeout = timeout
        self._keys: dict[dns.name.Name, dns.rrset.RRset] = {}

    # -- helpers ------------------------------------------------------------------------------

    def _addresses(self, zone: dns.name.Name) -> list[str]:
        return [a for _n, a in self.observer.nameservers(zone)]

    def _ask(self, zone: dns.name.Name, qname: dns.name.Name,
             rdtype: dns.rdatatype.RdataType) -> tuple[str, dns.message.Message]:
        """The first authoritative answer from `zone`'s servers."""
        failures: list[str] = []
        for address in self._addresses(zone):
            reply = query(address, qname, rdtype, port=self.port, timeout=self.timeout)
            if reply.message is not None and reply.authoritative and reply.rcode in (
                    "NOERROR", "NXDOMAIN"):
                return address, reply.message
            failures.append(f"{address}: {reply.error or reply.rcode or 'not authoritative'}")
        raise _Insecure(f"no authoritative answer for {qname} "
                        f"{dns.rdatatype.to_text(rdtype)} from {zone}'s servers: "
                        + "; ".join(failures))

    def _cuts(self, zone: dns.name.Name) -> list[dns.name.Name]:
        """Zones from the anchor's down to `zone` (both included)."""
        top = self.anchor.zone
        if not zone.is_subdomain(top):
            raise _Insecure(f"{zone} is not below the {self.anchor.describe()}")
        chain = [zone]
        name = zone
        while name != top:
            name = name.parent()
            if name == top or self.observer.find_zone(name) == str(name):
                chain.append(name)
        return list(reversed(chain))

    def _trusted_keys(self, zone: dns.name.Name, dnskey: dns.rrset.RRset,
                      ds: list[dns.rdata.Rdata] | tuple[dns.rdata.Rdata, ...],
                      anchors: tuple[dns.rdata.Rdata, ...] = ()) -> dns.rrset.RRset:
        trusted = [k for k in dnskey if k in anchors]
        for d in ds:
            if not isinstance(d, dns.rdtypes.dsbase.DSBase):
                continue
            for k in dnskey:
                try:
                    if dns.dnssec.make_ds(zone, k, d.digest_type) == d and k not in trusted:
                        trusted.append(k)
                except (ValueError, dns.exception.DNSException):
                    continue  # an unsupported digest or algorithm: that DS does not count
        if not trusted:
            raise _Insecure(f"no DNSKEY of {zone} matches its DS / trust anchor "
                            f"({len(ds) + len(anchors)} given)")
        return dns.rrset.from_rdata_list(zone, dnskey.ttl, trusted)

    def _zone_keys(self, zone: dns.name.Name, ds: list[dns.rdata.Rdata] | tuple[
            dns.rdata.Rdata, ...], anchors: tuple[dns.rdata.Rdata, ...], now: float
            ) -> dns.rrset.RRset:
        address, msg = self._ask(zone, zone, DNSKEY)
        dnskey = answer_rrset(msg, zone, DNSKEY)
        if dnskey is None:
            raise _Insecure(f"{zone} ({address}) serves no DNSKEY although its parent has a DS")
        trusted = self._trusted_keys(zone, dnskey, ds, anchors)
        sigs = msg.get_rrset(msg.answer, zone, dnskey.rdclass, dns.rdatatype.RRSIG, DNSKEY)
        reason = check_rrset(dnskey, sigs, zone, trusted, now)
        if reason:
            raise _Insecure(f"{zone} ({address}): {reason}")
        return dnskey

    def _ds(self, parent: dns.name.Name, child: dns.name.Name, now: float
            ) -> list[dns.rdata.Rdata]:
        address, msg = self._ask(parent, child, DS)
        keys = self._keys[parent]
        ds = answer_rrset(msg, child, DS)
        if ds is None:
            why = check_negative(msg, child, DS, parent, keys, now)
            if why:
                raise _Insecure(f"{parent} ({address}) has no DS for {child} and its denial "
                                f"does not validate: {why}")
            raise _Insecure(f"{parent} ({address}) has no DS for {child}: the delegation is "
                            "insecure (publish the DS at the parent)")
        sigs = msg.get_rrset(msg.answer, child, ds.rdclass, dns.rdatatype.RRSIG, DS)
        reason = check_rrset(ds, sigs, parent, keys, now)
        if reason:
            raise _Insecure(f"{parent} ({address}): {reason}")
        return list(ds)

    # -- the walk -----------------------------------------------------------------------------

    def validate(self, owner: str, rtype: str, zone: str | None, now: float) -> Validation:
        method = f"validated from the {self.anchor.describe()}"
        qname = absolute(owner)
        rdtype = dns.rdatatype.from_text(rtype)
        path: list[str] = []
        try:
            zname = absolute(zone) if zone else absolute(self.observer.find_zone(qname))
            cuts = self._cuts(zname)
            top = cuts[0]
            self._keys[top] = self._zone_keys(top, self.anchor.ds, self.anchor.dnskey, now)
            path.append(str(top))
            for parent, child in itertools.pairwise(cuts):
                if child not in self._keys:
                    ds = self._ds(parent, child, now)
                    self._keys[child] = self._zone_keys(child, ds, (), now)
                path.append(str(child))
            keys = self._keys[zname]
            servers: dict[str, str] = {}
            for address in self._addresses(zname):
                reply = query(address, qname, rdtype, port=self.port, timeout=self.timeout)
                servers[address] = _judge(reply, qname, rdtype, zname, keys, now)
        except (_Insecure, ObserveError) as exc:
            return Validation(False, method, str(exc), tuple(path))
        bad = {a: r for a, r in servers.items() if r != VALID}
        if bad:
            first = next(iter(bad))
            return Validation(False, method, f"{first}: {bad[first]}", tuple(path), servers)
        return Validation(True, method, VALID, tuple(path), servers)


def _judge(reply: Reply, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType,
           zone: dns.name.Name, keys: dns.rrset.RRset, now: float) -> str:
    if reply.message is None:
        return reply.error or reply.rcode
    if not reply.authoritative:
        return f"not authoritative for {zone} (AA=0)"
    if reply.rcode not in ("NOERROR", "NXDOMAIN"):
        return f"answered {reply.rcode}"
    return check_response(reply.message, qname, int(rdtype), zone, keys, now)


def validate_from_anchor(observer: Observer, anchor: TrustAnchor, owner: str, rtype: str,
                         now: float, *, zone: str | None = None, port: int = 53,
                         timeout: float = 2.0) -> Validation:
    return ChainWalker(observer, anchor, port=port, timeout=timeout).validate(
        owner, rtype, zone, now)


def validate_by_resolver(resolver: str, owner: str, rtype: str, *, port: int = 53,
                         timeout: float = 5.0) -> Validation:
    """Ask `resolver` (recursion, DO and AD set) and trust its AD bit."""
    method = f"validating resolver {resolver} (AD bit)"
    q = make_query(absolute(owner), rtype, recursion=True, dnssec=True)
    q.flags |= dns.flags.AD
    try:
        response, _tcp = dns.query.udp_with_fallback(q, resolver, timeout=timeout, port=port)
    except dns.exception.Timeout:
        return Validation(False, method, f"{resolver}: no answer within {timeout:g}s")
    except (OSError, dns.exception.DNSException) as exc:
        return Validation(False, method, f"{resolver}: {exc}")
    rcode = dns.rcode.to_text(response.rcode())
    if rcode == "SERVFAIL":
        return Validation(False, method, f"{resolver} answered SERVFAIL (validation failure, "
                                         "or the resolver cannot reach the zone)")
    if rcode not in ("NOERROR", "NXDOMAIN"):
        return Validation(False, method, f"{resolver} answered {rcode}")
    if not response.flags & dns.flags.RA:
        return Validation(False, method, f"{resolver} does not offer recursion (RA=0): "
                                         "not a validating resolver")
    if not response.flags & dns.flags.AD:
        return Validation(False, method, f"{resolver} did not set AD: the answer is not "
                                         "DNSSEC-validated (insecure zone or no validation)")
    return Validation(True, method, VALID)
