"""Propagation verifier: ask every authoritative nameserver address what it serves, in parallel.

A round covers many owners at once (`observe_many`): every query of the round goes out in one
wave (`rollover.dns.query.query_wave`, a bound on what is in flight per address); zones, NS names
and their addresses are discovered once per zone per Observer (one Observer serves one run).

Discovery (zone by SOA walk, NS names, their addresses) goes through the configured resolvers
with RD set; the observation itself asks each authoritative address directly: RD=0, DO=1, UDP
with TCP on truncation, AA required. Traffic goes only to the configured resolver addresses, the
addresses they give for the NS names, and the configured extra addresses -- never to the system
resolver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from rollover.clock import Clock
from rollover.dns.dnssec import (
    VALID,
    Verdicts,
    answer_rrset,
    check_response,
    service_parent,
    tcp_pitfall,
    zone_keys,
)
from rollover.dns.lean import Need
from rollover.dns.query import DEFAULT_IN_FLIGHT, Question, Reply, query, query_wave
from rollover.dns.rdata import canonical
from rollover.errors import ObserveError
from rollover.fanout import parallel
from rollover.model import Observation, ServerAnswer

# How long one run trusts a zone's NS discovery before asking again (a `run --wait` watches
# for 2 x TTL, up to hours: an NS added meanwhile must be found and watched too)
NS_REFRESH = timedelta(minutes=1)

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
        self, resolvers: Sequence[str], *, port: int = 53, timeout: float = 2.0, clock: Clock,
        in_flight: int = DEFAULT_IN_FLIGHT,
    ) -> None:
        if not resolvers:
            raise ObserveError("no resolver address configured for zone discovery")
        self.resolvers = [_address(r, "resolver") for r in resolvers]
        self.port = port
        self.timeout = timeout
        self.clock = clock
        self.per_server_in_flight = in_flight
        # per run (an Observer lives for one run): zones by owner, NS addresses by zone, and
        # the `_tcp.<host>` pitfall verdict by (address, owner) once it could be judged
        self._zone_cache: dict[dns.name.Name, dns.name.Name] = {}
        self._pitfalls: dict[tuple[str, dns.name.Name], bool] = {}
        self._ns_cache: dict[dns.name.Name,
                             tuple[datetime, list[tuple[str, str]], tuple[str, ...]]] = {}

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
        name = absolute(owner)
        if name not in self._zone_cache:
            self._zone_cache[name] = self._find_zone(name)
        return str(self._zone_cache[name])

    def _find_zone(self, owner: dns.name.Name) -> dns.name.Name:
        name = owner
        while True:
            zone = _zone_from(self._ask(name, "SOA"), name)
            if zone is not None:
                return zone
            if name == dns.name.root:
                raise ObserveError(f"no zone found for {owner}: no SOA record up to the root")
            name = name.parent()

    def _ask_wave(self, asks: Sequence[tuple[dns.name.Name, str]]
                  ) -> list[dns.message.Message | ObserveError]:
        """`_ask` for many questions at once: each asked of the first resolver in one wave,
        those without a usable answer of the next one, and so on."""
        out: list[dns.message.Message | ObserveError | None] = [None] * len(asks)
        failures: list[list[str]] = [[] for _ in asks]
        todo = list(range(len(asks)))
        for address in self.resolvers:
            if not todo:
                break
            qs = [Question(address, asks[i][0], dns.rdatatype.from_text(asks[i][1]),
                           recursion=True, dnssec=False) for i in todo]
            replies = self._wave(qs)
            left = []
            for i, reply in zip(todo, replies, strict=True):
                msg = reply.message
                answering = dns.flags.AA | dns.flags.RA
                if msg is not None and reply.rcode in USABLE and msg.flags & answering:
                    out[i] = msg
                    continue
                why = reply.error or (reply.rcode if reply.rcode not in USABLE else
                                      "referral only")
                failures[i].append(f"{address}: {why}")
                left.append(i)
            todo = left
        for i in todo:
            qname, rdtype = asks[i]
            out[i] = ObserveError(f"no resolver answered {rdtype} {qname}: "
                                  f"{'; '.join(failures[i])}")
        return [r for r in out if r is not None]

    def _find_zones(self, owners: Sequence[dns.name.Name]
                    ) -> dict[dns.name.Name, dns.name.Name | ObserveError]:
        """`_find_zone` for many owners: one wave per level of the walk (usually one: the
        SOA in the authority section of the first answer names the zone)."""
        found: dict[dns.name.Name, dns.name.Name | ObserveError] = {}
        walking = {o: o for o in owners if o not in self._zone_cache}
        while walking:
            asks = list(walking.items())
            msgs = self._ask_wave([(name, "SOA") for _o, name in asks])
            walking = {}
            for (owner, name), msg in zip(asks, msgs, strict=True):
                if isinstance(msg, ObserveError):
                    found[owner] = msg
                    continue
                zone = _zone_from(msg, name)
                if zone is not None:
                    found[owner] = self._zone_cache[owner] = zone
                elif name == dns.name.root:
                    found[owner] = ObserveError(
                        f"no zone found for {owner}: no SOA record up to the root")
                else:
                    walking[owner] = name.parent()
        for o in owners:
            if o in self._zone_cache:
                found[o] = self._zone_cache[o]
        return found

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
        now = self.clock.now()
        cached = self._ns_cache.get(zone)
        if cached is None or not timedelta(0) <= now - cached[0] < NS_REFRESH:
            # once per zone per run, again when a long `run --wait` has watched for a while:
            # an NS added to the zone mid-wait must be verified too
            cached = self._ns_cache[zone] = (now, *self._discover(zone, allow_empty=bool(extras)))
        _at, servers, problems = cached
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

    # -- observation rounds --------------------------------------------------------------------

    def observe(
        self, owner: str, rtype: str = "TLSA", zone: str | None = None, extra: Sequence[str] = ()
    ) -> Observation:
        """One round for one owner (`observe_many` with a single request)."""
        result = self.observe_many([Want(owner, rtype, zone, tuple(extra))])[0]
        if isinstance(result, ObserveError):
            raise result
        return result

    def find_zones(self, owners: Sequence[str]) -> dict[str, str | ObserveError]:
        """The zone of each owner (SOA walk), the first step of every walk in one wave."""
        out: dict[str, str | ObserveError] = {}
        names: dict[str, dns.name.Name] = {}
        for owner in dict.fromkeys(owners):
            try:
                names[owner] = absolute(owner)
            except ObserveError as exc:
                out[owner] = exc
        found = self._find_zones(list(dict.fromkeys(names.values())))
        for owner, name in names.items():
            z = found[name]
            out[owner] = z if isinstance(z, ObserveError) else str(z)
        return out

    def observe_many(self, wants: Sequence[Want]) -> list[Observation | ObserveError]:
        """One observation round for every request, all queries in one wave: each owner asked
        of every address of its zone's nameservers, the zone's SOA and DNSKEY once per address,
        `_tcp.<host>` (the pitfall) until it has been judged once per owner and address."""
        at = self.clock.now()
        now = at.timestamp()
        results: list[Observation | ObserveError | None] = [None] * len(wants)
        plans: list[tuple[int, dns.name.Name, dns.rdatatype.RdataType, dns.name.Name,
                          list[tuple[str, str]], tuple[str, ...]]] = []
        unknown = [w.owner for w in wants if w.zone is None]
        zones = self.find_zones(unknown) if unknown else {}
        for i, w in enumerate(wants):
            try:
                qname = absolute(w.owner)
                if w.zone is not None:
                    zname = absolute(w.zone)
                else:
                    z = zones[w.owner]
                    if isinstance(z, ObserveError):
                        raise z
                    zname = absolute(z)
                if not qname.is_subdomain(zname):
                    raise ObserveError(f"{qname} is not inside zone {zname}")
                try:
                    rdtype = dns.rdatatype.from_text(w.rtype)
                except dns.exception.DNSException:
                    raise ObserveError(f"unknown record type {w.rtype!r}") from None
                servers, problems = self._nameservers(zname, w.extra)
            except ObserveError as exc:
                results[i] = exc
                continue
            plans.append((i, qname, rdtype, zname, servers, problems))

        questions: list[Question] = []
        index: dict[tuple[str, dns.name.Name, int], int] = {}

        def ask(address: str, qname: dns.name.Name, rdtype: int, need: Need) -> None:
            key = (address, qname, rdtype)
            if key not in index:
                index[key] = len(questions)
                questions.append(Question(address, qname, dns.rdatatype.RdataType.make(rdtype),
                                          need=need))
            elif questions[index[key]].need is not need:  # asked for two readers: read it all
                questions[index[key]] = replace(questions[index[key]], need=Need.ALL)

        # _judge reads the answer sections (a negative or wildcard reply is read whole) and
        # only the rcode of `_tcp.<host>`
        for _i, qname, rdtype, zname, servers, _p in plans:
            parent = service_parent(qname)
            for _server, address in servers:
                ask(address, qname, rdtype, Need.ANSWER)
                ask(address, zname, dns.rdatatype.SOA, Need.ANSWER)
                ask(address, zname, dns.rdatatype.DNSKEY, Need.ANSWER)
                if (parent is not None and parent.is_subdomain(zname)
                        and (address, qname) not in self._pitfalls):
                    ask(address, parent, rdtype, Need.RCODE)
        replies = self._wave(questions)
        keys_of: dict[tuple[str, dns.name.Name], tuple[Any, str | None]] = {}
        verdicts = Verdicts()  # this round's: one `now`

        def reply(address: str, qname: dns.name.Name, rdtype: int) -> Reply | None:
            k = index.get((address, qname, rdtype))
            return None if k is None else replies[k]

        def keys(address: str, zname: dns.name.Name, key_reply: Reply) -> tuple[Any, str | None]:
            if (address, zname) not in keys_of:
                assert key_reply.message is not None
                keys_of[(address, zname)] = zone_keys(key_reply.message, zname, now)
            return keys_of[(address, zname)]

        for i, qname, rdtype, zname, servers, problems in plans:
            probes = []
            for server, address in servers:
                answers = _Replies(
                    reply(address, qname, rdtype), reply(address, zname, dns.rdatatype.SOA),
                    reply(address, zname, dns.rdatatype.DNSKEY),
                    reply(address, service_parent(qname) or qname, rdtype)
                    if service_parent(qname) is not None else None)
                probes.append(self._judge(server, address, qname, rdtype, zname, now, answers,
                                          keys, verdicts))
            results[i] = _round(qname, rdtype, zname, at, probes, problems)
        out = [r for r in results if r is not None]
        assert len(out) == len(wants)
        return out

    def _wave(self, questions: Sequence[Question]) -> list[Reply]:
        """The network edge of a round (tests script it): every question at once."""
        return query_wave(questions, port=self.port, timeout=self.timeout,
                          in_flight=self.per_server_in_flight, monotonic=self.clock.monotonic)

    def _judge(self, server: str, address: str, qname: dns.name.Name,
               rdtype: dns.rdatatype.RdataType, zone: dns.name.Name, now: float,
               got: _Replies, keys_for: KeysFor, verdicts: Verdicts | None = None) -> _Probe:
        """What the queries to one address say: the RRset, the zone SOA, the DNSKEY RRset
        and, for `_port._tcp.host` owners, `_tcp.host`. Judged in that order; the first failure
        decides."""
        base = ServerAnswer(server=server, address=address, ok=False, rcode="")

        def failed(rcode: str, error: str) -> _Probe:  # keeps what `base` has gathered so far
            return _Probe(replace(base, ok=False, rcode=rcode, error=error))

        reply = got.rrset
        assert reply is not None and got.soa is not None and got.dnskey is not None
        msg = reply.message
        if msg is None:
            return failed(reply.rcode, reply.error or reply.rcode)
        if reply.rcode not in USABLE:
            return failed(reply.rcode, f"answered {reply.rcode}")
        if not reply.authoritative:
            return failed(reply.rcode, f"not authoritative for {zone} (AA=0)")
        rrset = answer_rrset(msg, qname, dns.rdatatype.RdataType.make(rdtype))
        records = frozenset(canonical(rd) for rd in rrset) if rrset else frozenset()
        base = replace(
            base, rcode=reply.rcode, records=records, ttl=rrset.ttl if rrset is not None else None
        )

        soa_reply = got.soa
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

        key_reply = got.dnskey
        if key_reply.message is None or key_reply.rcode != "NOERROR":
            return failed(reply.rcode, f"DNSKEY query: {key_reply.error or key_reply.rcode}")
        keys, key_problem = keys_for(address, zone, key_reply)
        dnssec: str | None = None
        if keys is not None:
            dnssec = key_problem or check_response(msg, qname, rdtype, zone, keys, now, verdicts)
        ok = dnssec in (None, VALID)
        base = replace(base, ok=ok, dnssec=dnssec, error=None if ok else f"DNSSEC: {dnssec}")

        pitfall = False
        parent = service_parent(qname)
        if ok and reply.rcode == "NOERROR" and parent is not None and parent.is_subdomain(zone):
            if (address, qname) in self._pitfalls:
                pitfall = self._pitfalls[(address, qname)]
            elif got.parent is not None and got.parent.message is not None:
                pitfall = tcp_pitfall(msg, got.parent.message)
                self._pitfalls[(address, qname)] = pitfall
        return _Probe(base, has_dnskey=keys is not None, negative_ttl=negative_ttl, pitfall=pitfall)


KeysFor = Callable[[str, dns.name.Name, Reply], tuple[Any, str | None]]


@dataclass(frozen=True)
class Want:
    """One owner to observe in a round: its type, its zone (None: found by SOA walk) and the
    configured extra addresses (hidden primary etc.)."""

    owner: str
    rtype: str = "TLSA"
    zone: str | None = None
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Replies:
    """The answers one address gave in a round for one owner."""

    rrset: Reply | None
    soa: Reply | None
    dnskey: Reply | None
    parent: Reply | None


def _round(qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, zname: dns.name.Name,
           at: datetime, probes: list[_Probe], problems: tuple[str, ...]) -> Observation:
    """The observation of one owner from what every address said."""
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


def _zone_from(msg: dns.message.Message, name: dns.name.Name) -> dns.name.Name | None:
    """The zone an SOA answer for `name` names: `name` itself, or the SOA owner in the
    authority section (not after a CNAME); None: ask the parent."""
    if any(r.rdtype == dns.rdatatype.SOA and r.name == name for r in msg.answer):
        return name
    if not any(r.rdtype == dns.rdatatype.CNAME for r in msg.answer):
        for rrset in msg.authority:
            if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                return rrset.name
    return None


def _address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ObserveError(f"{what} {text!r} is not an IP address") from None
