"""DNSSEC checks on single responses: pure functions over dns.message objects, no I/O, no clock.

Trust: there is no chain to a root trust anchor here. A zone's DNSKEY RRset is accepted when it
is validly self-signed by one of its own KSK/CSK keys (SEP flag; any key if none carries it);
answers are then validated against that RRset. This proves that every server serves data signed
by the same keys the zone publishes, with live signatures at `now` -- which is what a rollover
needs to know -- not that the parent's DS points at those keys.

Every check returns None when fine, or a short reason ("RRSIG missing for ...").
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

VALID = "valid"

RRSIG = dns.rdatatype.RRSIG
NSEC = dns.rdatatype.NSEC
NSEC3 = dns.rdatatype.NSEC3
DNSKEY = dns.rdatatype.DNSKEY
CNAME = dns.rdatatype.CNAME
SEP_FLAG = 0x0001

Sigs = dict[tuple[dns.name.Name, int], dns.rrset.RRset]


def split_section(section: Iterable[dns.rrset.RRset]) -> tuple[list[dns.rrset.RRset], Sigs]:
    """Data RRsets and their RRSIG RRsets keyed by (owner, covered type)."""
    data: list[dns.rrset.RRset] = []
    sigs: Sigs = {}
    for rrset in section:
        if rrset.rdtype == RRSIG:
            sigs[(rrset.name, int(rrset.covers))] = rrset
        else:
            data.append(rrset)
    return data, sigs


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class Verdicts:
    """Signature verdicts already reached, by what was signed and the keys and time it was
    judged with: the servers of a zone serve the same RRsets with the same RRSIGs, and every
    negative answer of a zone carries the same signed SOA and often the same NSEC records (one
    ECDSA verification for all of them, not one per reply). Equal data gives an equal verdict:
    validation reads only the canonical form (owner, class, type, rdatas, RRSIG rdatas)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], str | None] = {}
        self._keys: dict[int, tuple[dns.rrset.RRset, frozenset[Any]]] = {}

    def key(self, rrset: dns.rrset.RRset, sigs: dns.rrset.RRset, zone: dns.name.Name,
            keys: dns.rrset.RRset, now: float) -> tuple[Any, ...]:
        held = self._keys.get(id(keys))
        if held is None:  # the RRset is held with its id, so the id names it while we live
            held = self._keys[id(keys)] = (keys, frozenset(keys))
        return (rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers, frozenset(rrset),
                frozenset(sigs), zone, held[1], now)

    def get(self, key: tuple[Any, ...]) -> tuple[bool, str | None]:
        return (key in self._seen), self._seen.get(key)

    def put(self, key: tuple[Any, ...], verdict: str | None) -> None:
        self._seen[key] = verdict


def check_rrset(rrset: dns.rrset.RRset, sigs: dns.rrset.RRset | None, zone: dns.name.Name,
                keys: dns.rrset.RRset, now: float, verdicts: Verdicts | None = None
                ) -> str | None:
    """Is `rrset` signed by `keys` of `zone` with a signature valid at `now`?"""
    what = f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
    if sigs is None or len(sigs) == 0:
        return f"RRSIG missing for {what}"
    ours = [s for s in sigs if s.signer == zone]
    if not ours:
        signers = ", ".join(sorted({str(s.signer) for s in sigs}))
        return f"{what} is signed by {signers}, not by the zone {zone}"
    if all(now > s.expiration for s in ours):
        latest = max(s.expiration for s in ours)
        return f"RRSIG for {what} expired at {_when(latest)}"
    if all(now < s.inception for s in ours):
        earliest = min(s.inception for s in ours)
        return f"RRSIG for {what} not valid before {_when(earliest)}"
    if verdicts is None:
        return _validate(rrset, sigs, zone, keys, now, what)
    key = verdicts.key(rrset, sigs, zone, keys, now)
    known, verdict = verdicts.get(key)
    if not known:
        verdict = _validate(rrset, sigs, zone, keys, now, what)
        verdicts.put(key, verdict)
    return verdict


def _validate(rrset: dns.rrset.RRset, sigs: dns.rrset.RRset, zone: dns.name.Name,
              keys: dns.rrset.RRset, now: float, what: str) -> str | None:
    try:
        dns.dnssec.validate(rrset, sigs, {zone: keys}, now=now)
    except dns.exception.ValidationFailure as exc:
        return f"RRSIG for {what} does not validate ({exc})"
    return None


def check_section(section: Iterable[dns.rrset.RRset], zone: dns.name.Name,
                  keys: dns.rrset.RRset, now: float, verdicts: Verdicts | None = None
                  ) -> str | None:
    data, sigs = split_section(section)
    for rrset in data:
        reason = check_rrset(rrset, sigs.get((rrset.name, int(rrset.rdtype))), zone, keys, now,
                             verdicts)
        if reason:
            return reason
    return None


def zone_keys(response: dns.message.Message, zone: dns.name.Name,
              now: float) -> tuple[dns.rrset.RRset | None, str | None]:
    """(DNSKEY RRset, None) if the zone's DNSKEY RRset in a DNSKEY response is validly
    self-signed by one of its KSK/CSK; (None, None) when there is no DNSKEY (unsigned);
    (RRset, reason) when it is there but not properly self-signed."""
    data, sigs = split_section(response.answer)
    dnskey = next((r for r in data if r.rdtype == DNSKEY and r.name == zone), None)
    if dnskey is None:
        return None, None
    sep = [k for k in dnskey if k.flags & SEP_FLAG]
    signers = dnskey
    if sep and len(sep) < len(dnskey):
        signers = dns.rrset.from_rdata_list(zone, dnskey.ttl, sep)
    reason = check_rrset(dnskey, sigs.get((zone, int(DNSKEY))), zone, signers, now)
    return dnskey, reason


def answer_rrset(response: dns.message.Message, qname: dns.name.Name,
                 rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
    """The RRset of `rdtype` answering `qname`, following CNAMEs inside the response."""
    name = qname
    for _ in range(8):
        for rrset in response.answer:
            if rrset.name == name and rrset.rdtype == rdtype:
                return rrset
        cname = next((r for r in response.answer if r.name == name and r.rdtype == CNAME), None)
        if cname is None:
            return None
        name = cname[0].target
    return None


def check_positive(response: dns.message.Message, zone: dns.name.Name,
                   keys: dns.rrset.RRset, now: float, verdicts: Verdicts | None = None
                   ) -> str | None:
    """Every RRset in the answer section carries a valid RRSIG from the zone keys; a wildcard
    expansion must come with signed NSEC/NSEC3 records in the authority section."""
    reason = check_section(response.answer, zone, keys, now, verdicts)
    if reason:
        return reason
    data, sigs = split_section(response.answer)
    for rrset in data:
        labels = len(rrset.name) - 1  # without the root label
        rrsig = sigs[(rrset.name, int(rrset.rdtype))]
        if any(s.labels < labels for s in rrsig):
            auth, _ = split_section(response.authority)
            if not any(r.rdtype in (NSEC, NSEC3) for r in auth):
                return f"wildcard answer for {rrset.name} without NSEC/NSEC3 proof"
            return check_section(response.authority, zone, keys, now, verdicts)
    return None


def types_in_bitmap(windows: Sequence[tuple[int, bytes]]) -> set[int]:
    """Decode the NSEC/NSEC3 type bitmap."""
    types: set[int] = set()
    for window, bitmap in windows:
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    types.add(window * 256 + i * 8 + bit)
    return types


def _ancestors(name: dns.name.Name, zone: dns.name.Name) -> list[dns.name.Name]:
    """Proper ancestors of `name` down to and including `zone`, deepest first."""
    out: list[dns.name.Name] = []
    while name != zone and name.is_subdomain(zone) and len(name) > 1:
        name = name.parent()
        out.append(name)
    return out


def _covers(low: Any, high: Any, target: Any) -> bool:
    """`target` strictly between `low` and `high` in a ring that wraps at the end."""
    if low < high:
        return bool(low < target < high)
    return bool(target > low or target < high)


class _Nsec3Set:
    def __init__(self, rrsets: list[dns.rrset.RRset]) -> None:
        self.items: list[tuple[str, str, set[int], Any]] = []  # owner hash, next hash, types
        for rrset in rrsets:
            owner = rrset.name.labels[0].decode("ascii").upper()
            for rd in rrset:
                nxt = base64.b32hexencode(rd.next).decode("ascii").rstrip("=")
                self.items.append((owner, nxt, types_in_bitmap(rd.windows), rd))

    def _hash(self, name: dns.name.Name, rd: Any) -> str:
        return dns.dnssec.nsec3_hash(name, rd.salt, rd.iterations, rd.algorithm)

    def matching(self, name: dns.name.Name) -> set[int] | None:
        for owner, _nxt, types, rd in self.items:
            if self._hash(name, rd) == owner:
                return types
        return None

    def covered(self, name: dns.name.Name) -> bool:
        return any(_covers(owner, nxt, self._hash(name, rd)) for owner, nxt, _t, rd in self.items)


def _nsec3_proves(qname: dns.name.Name, rdtype: int, zone: dns.name.Name,
                  rrsets: list[dns.rrset.RRset], nxdomain: bool) -> bool:
    proof = _Nsec3Set(rrsets)
    if not nxdomain:  # NODATA (also for empty non-terminals): a matching NSEC3 without the type
        types = proof.matching(qname)
        return types is not None and rdtype not in types and CNAME not in types
    # NXDOMAIN: closest encloser matches, the next closer name and the wildcard are covered
    closer = qname
    for ancestor in _ancestors(qname, zone):
        if proof.matching(ancestor) is not None:
            wildcard = dns.name.Name((b"*", *ancestor.labels))
            return proof.covered(closer) and proof.covered(wildcard)
        closer = ancestor
    return False


def _common(a: dns.name.Name, b: dns.name.Name) -> dns.name.Name:
    _rel, _order, labels = a.fullcompare(b)
    return a.split(labels)[1]


def _nsec_proves(qname: dns.name.Name, rdtype: int, rrsets: list[dns.rrset.RRset],
                 nxdomain: bool) -> bool:
    items = [(r.name, rd.next, types_in_bitmap(rd.windows)) for r in rrsets for rd in r]

    def covered(name: dns.name.Name) -> bool:
        return any(_covers(owner, nxt, name) for owner, nxt, _t in items)

    if not nxdomain:
        for owner, nxt, types in items:
            if owner == qname:
                return rdtype not in types and CNAME not in types
            if _covers(owner, nxt, qname) and nxt.is_subdomain(qname):
                return True  # empty non-terminal: the next name lies below qname
        return False
    for owner, nxt, _t in items:
        if _covers(owner, nxt, qname):
            encloser = max(_common(qname, owner), _common(qname, nxt), key=len)
            return covered(dns.name.Name((b"*", *encloser.labels)))
    return False


def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def check_negative(response: dns.message.Message, qname: dns.name.Name, rdtype: int,
                   zone: dns.name.Name, keys: dns.rrset.RRset, now: float,
                   verdicts: Verdicts | None = None) -> str | None:
    """NXDOMAIN/NODATA: the authority section's SOA and NSEC/NSEC3 records carry valid RRSIGs
    and the NSEC/NSEC3 records prove the name (or the type at the name) does not exist."""
    reason = check_section(response.authority, zone, keys, now, verdicts)
    if reason:
        return reason
    data, _ = split_section(response.authority)
    nxdomain = response.rcode() == dns.rcode.NXDOMAIN
    nsec3 = [r for r in data if r.rdtype == NSEC3]
    nsec = [r for r in data if r.rdtype == NSEC]
    claim = "does not exist" if nxdomain else f"has no {_type_text(rdtype)} record"
    if nsec3:
        if _nsec3_proves(qname, rdtype, zone, nsec3, nxdomain):
            return None
        return f"NSEC3 records do not prove that {qname} {claim}"
    if nsec:
        if _nsec_proves(qname, rdtype, nsec, nxdomain):
            return None
        return f"NSEC records do not prove that {qname} {claim}"
    return f"no NSEC/NSEC3 proof that {qname} {claim}"


def check_response(response: dns.message.Message, qname: dns.name.Name, rdtype: int,
                   zone: dns.name.Name, keys: dns.rrset.RRset, now: float,
                   verdicts: Verdicts | None = None) -> str:
    """VALID, or why not: positive answers by their RRSIGs, negative ones by NSEC/NSEC3."""
    if answer_rrset(response, qname, dns.rdatatype.RdataType.make(rdtype)) is not None:
        reason = check_positive(response, zone, keys, now, verdicts)
    else:
        reason = check_negative(response, qname, rdtype, zone, keys, now, verdicts)
    return reason or VALID


# -- the _tcp.<host> pitfall ------------------------------------------------------------------


def service_parent(owner: dns.name.Name) -> dns.name.Name | None:
    """`_tcp.mail.example.nl.` for `_25._tcp.mail.example.nl.`; None when the owner does not
    look like `_port._proto.host` (nothing for a qname-minimising resolver to trip over)."""
    labels = owner.labels
    if len(labels) >= 3 and labels[0].startswith(b"_") and labels[1].startswith(b"_"):
        return owner.parent()
    return None


def tcp_pitfall(owner_response: dns.message.Message,
                parent_response: dns.message.Message) -> bool:
    """The seed's pitfall: the TLSA owner exists (NOERROR) but its parent `_tcp.<host>` is
    NXDOMAIN. A qname-minimising resolver (RFC 9156) asks for `_tcp.<host>` first, believes the
    NXDOMAIN (RFC 8020: nothing exists below) and never asks for the TLSA record."""
    return (owner_response.rcode() == dns.rcode.NOERROR
            and parent_response.rcode() == dns.rcode.NXDOMAIN)
