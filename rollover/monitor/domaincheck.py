"""`rollover check --domain D`: every MX host of a mail domain, as the how-to asks monitoring to.

For each MX host (CNAMEs followed): every A and AAAA address x every key algorithm, STARTTLS
offered, TLS 1.2 negotiated, the chain against the TLSA RRset of *every* authoritative server
(RFC 7671 matching), the TLSA RRset DNSSEC-valid (from a trust anchor down, or a named
validating resolver's AD bit), and the zone hygiene findings of `rollover.monitor.hygiene`.

TLSA base name (RFC 7672 section 2.2.2): when the MX host name is an alias, the CNAME-expanded
name is tried first and the original MX name second; the report says which was used and why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
from cryptography.hazmat.primitives import hashes

from rollover.dns.dnssec import answer_rrset, service_parent
from rollover.dns.query import query
from rollover.edges.observe import Observer, absolute
from rollover.errors import ObserveError
from rollover.model import Algorithm, Endpoint, Observation
from rollover.monitor import hygiene
from rollover.monitor.anchors import TrustAnchor
from rollover.monitor.dnssec_chain import Validation, validate_by_resolver, validate_from_anchor
from rollover.monitor.hostcheck import (
    ChainSource,
    Outcome,
    RecordSource,
    judge,
    probe_all,
    record_sources,
)
from rollover.monitor.hygiene import Finding, Severity

MAX_CNAME = 8
_PITFALL = re.compile(r"^(?P<parent>\S+) is NXDOMAIN on (?P<servers>.+?) although ")


@dataclass(frozen=True)
class Options:
    port: int = 25
    resolvers: tuple[str, ...] = ()
    dns_port: int = 53
    dns_timeout: float = 2.0
    timeout: float = 10.0
    algorithms: tuple[Algorithm, ...] = (Algorithm.ECDSA_P256, Algorithm.RSA2048)
    tls: str = "1.2"
    anchor: TrustAnchor | None = None
    validating_resolver: str | None = None
    warn_days: float = 21.0
    crit_days: float = 7.0


@dataclass
class HostReport:
    name: str  # the MX target as the MX record gives it (no trailing dot)
    preference: int
    cname_chain: list[str] = field(default_factory=list)  # aliases followed, in order
    target: str = ""  # the CNAME-expanded name
    base: str = ""  # the TLSA base domain used
    base_reason: str = ""
    owner: str = ""
    addresses: list[str] = field(default_factory=list)
    error: str | None = None
    sources: list[RecordSource] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    observation: Observation | None = None
    validation: Validation | None = None

    @property
    def ok(self) -> bool:
        judged = [o for o in self.outcomes if not _absent(o.chain)]
        return (self.error is None and bool(judged) and all(o.ok for o in judged)
                and self.validation is not None and self.validation.secure)


@dataclass
class DomainReport:
    domain: str
    port: int
    at: datetime
    dnssec_method: str
    hosts: list[HostReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def severity(self) -> Severity | None:
        return hygiene.worst(self.findings)

    @property
    def ok(self) -> bool:
        return self.severity != Severity.CRITICAL and bool(self.hosts) and all(
            h.ok for h in self.hosts)


def _absent(chain: ChainSource) -> bool:
    """The server is up and simply has no certificate of this algorithm (not a failure)."""
    return chain.nothing_served and "nothing listens" not in (chain.error or "")


# --------------------------------------------------------------------------- DNS lookups


class Lookup:
    """Questions with RD set to the configured resolvers (never the system's)."""

    def __init__(self, resolvers: Sequence[str], port: int, timeout: float) -> None:
        self.resolvers = list(resolvers)
        self.port = port
        self.timeout = timeout

    def ask(self, name: dns.name.Name, rdtype: str) -> dns.message.Message:
        failures: list[str] = []
        for address in self.resolvers:
            reply = query(address, name, rdtype, port=self.port, timeout=self.timeout,
                          recursion=True, dnssec=False)
            msg = reply.message
            if (msg is not None and reply.rcode in ("NOERROR", "NXDOMAIN")
                    and msg.flags & (dns.flags.AA | dns.flags.RA)):
                return msg
            failures.append(f"{address}: {reply.error or reply.rcode}")
        raise ObserveError(f"no resolver answered {rdtype} {name}: {'; '.join(failures)}")

    def mx(self, domain: dns.name.Name) -> list[tuple[int, str]]:
        msg = self.ask(domain, "MX")
        rrset = answer_rrset(msg, domain, dns.rdatatype.MX)
        if rrset is None:
            return []
        return sorted((int(rd.preference), str(rd.exchange).rstrip(".").lower())
                      for rd in rrset)

    def follow(self, name: dns.name.Name, rdtype: str) -> tuple[list[dns.name.Name],
                                                                  list[str]]:
        """(aliases followed, addresses) for `name`, CNAMEs followed across zones."""
        chain: list[dns.name.Name] = []
        current = name
        wanted = dns.rdatatype.from_text(rdtype)
        for _ in range(MAX_CNAME):
            msg = self.ask(current, rdtype)
            moved = False
            while True:
                cname = next((r for r in msg.answer if r.name == current
                              and r.rdtype == dns.rdatatype.CNAME), None)
                if cname is None:
                    break
                current = cname[0].target
                if current in chain or current == name:
                    raise ObserveError(f"CNAME loop at {current}")
                chain.append(current)
                moved = True
            found = next((r for r in msg.answer if r.name == current and r.rdtype == wanted),
                         None)
            if found is not None:
                return chain, sorted(rd.address for rd in found)
            if not moved:
                return chain, []
        raise ObserveError(f"more than {MAX_CNAME} CNAMEs from {name}")


# --------------------------------------------------------------------------- one host


def _observe_base(observer: Observer, port: int, original: str, target: str
                  ) -> tuple[str, str, Observation | None, str | None]:
    """(base, why, observation, error): RFC 7672 2.2.2's order of TLSA base domains."""
    candidates = [target, original] if target != original else [original]
    seen: list[tuple[str, Observation]] = []
    errors: list[str] = []
    for cand in candidates:
        try:
            obs = observer.observe(f"_{port}._tcp.{cand}.")
        except ObserveError as exc:
            errors.append(str(exc))
            continue
        if any(a.records for a in obs.answers):
            if cand == original and target != original:
                why = (f"the original MX name: no TLSA records at the CNAME-expanded {target} "
                       "(RFC 7672 2.2.2 tries that first)")
            elif cand == target and target != original:
                why = "the CNAME-expanded name (RFC 7672 2.2.2: tried first)"
            else:
                why = "the MX host name"
            return cand, why, obs, None
        seen.append((cand, obs))
    if seen:
        cand, obs = seen[-1]
        return cand, "no TLSA records at any candidate name", obs, None
    return original, "no answer", None, "; ".join(errors)


def check_host(name: str, preference: int, lookup: Lookup, observer: Observer,
               opts: Options, now: datetime) -> HostReport:
    host = HostReport(name, preference)
    qname = absolute(name + ".")
    try:
        chain4, v4 = lookup.follow(qname, "A")
        final = chain4[-1] if chain4 else qname
        chain6, v6 = lookup.follow(final, "AAAA")
    except ObserveError as exc:
        host.error = str(exc)
        host.target = host.base = name
        return host
    aliases = chain4 + chain6
    host.cname_chain = [str(n).rstrip(".") for n in aliases]
    host.target = str(aliases[-1] if aliases else qname).rstrip(".").lower()
    host.addresses = v4 + v6
    base, why, obs, error = _observe_base(observer, opts.port, name, host.target)
    host.base, host.base_reason, host.observation = base, why, obs
    host.owner = f"_{opts.port}._tcp.{base}."
    if obs is None:
        host.error = error or "no observation"
        return host
    host.sources = [s for s in record_sources(obs) if s.server is not None]
    if not host.addresses:
        host.error = f"{host.target} has no A or AAAA record"
        return host
    endpoint = Endpoint(base, opts.port)
    chains = probe_all(endpoint, host.addresses, opts.algorithms, opts.resolvers,
                       opts.dns_port, opts.timeout, opts.tls)
    host.outcomes = judge(chains, host.sources, base, now)
    if opts.validating_resolver:
        host.validation = validate_by_resolver(opts.validating_resolver, host.owner, "TLSA",
                                               port=opts.dns_port, timeout=opts.dns_timeout)
    elif opts.anchor is not None:
        host.validation = validate_from_anchor(observer, opts.anchor, host.owner, "TLSA",
                                               now.timestamp(), zone=obs.zone,
                                               port=opts.dns_port, timeout=opts.dns_timeout)
    return host


# --------------------------------------------------------------------------- findings


def _chain_findings(host: HostReport) -> list[Finding]:
    out: list[Finding] = []
    judged = [o for o in host.outcomes if not _absent(o.chain)]
    if host.outcomes and not judged:
        out.append(Finding("no-certificate", Severity.CRITICAL, host.base,
                           "the server presents no certificate of any algorithm asked for",
                           "configure at least one RSA 2048 or ECDSA P-256 certificate"))
    for o in host.outcomes:
        ch = o.chain
        subject = f"{host.base} {ch.label}"
        err = ch.error or ""
        if _absent(ch):
            out.append(Finding("algorithm-absent", Severity.INFO, subject,
                               f"no {ch.algorithm} certificate: {err}",
                               "fine when the server uses one algorithm on purpose; with "
                               "several, each needs its own TLSA records"))
        elif "no STARTTLS" in err:
            out.append(Finding("starttls-missing", Severity.CRITICAL, subject, err,
                               "offer STARTTLS to all clients, even those without IP "
                               "reputation: DANE senders will not deliver in the clear"))
        elif "does not speak TLS" in err:
            out.append(Finding("tls12-missing", Severity.CRITICAL, subject, err,
                               "support TLS 1.2 (the how-to: make sure your servers support "
                               "TLS 1.2)"))
        elif ch.error is not None:
            out.append(Finding("probe-failed", Severity.CRITICAL, subject, err,
                               "every address of every MX host must answer: not all clients "
                               "reach every address"))
        elif ch.protocol not in ("TLSv1.2", "TLSv1.3"):
            out.append(Finding("tls12-missing", Severity.CRITICAL, subject,
                               f"negotiated {ch.protocol}", "support TLS 1.2"))
        for _src, verdict in o.verdicts:
            if verdict is not None and not verdict.matched:
                agility = hygiene.digest_agility(host.owner, ch.label, verdict)
                if agility is not None:
                    out.append(agility)
        bad = [src.label for src, v in o.verdicts if v is None or not v.matched]
        if ch.error is None and bad:
            reasons = {v.reason for _s, v in o.verdicts if v is not None and not v.matched}
            out.append(Finding(
                "chain-mismatch", Severity.CRITICAL, subject,
                f"the chain does not match the TLSA RRset of {', '.join(bad)}"
                + (f": {'; '.join(sorted(reasons))}" if reasons else ""),
                "every chain on every address and algorithm must match a record every "
                "authoritative server serves: DANE senders defer mail to this address"))
    return out


def host_findings(host: HostReport, opts: Options, now: datetime) -> list[Finding]:
    out: list[Finding] = []
    if host.error is not None:
        out.append(Finding("mx-unusable", Severity.CRITICAL, host.name, host.error,
                           "every MX host needs addresses and TLSA records"))
    obs = host.observation
    if obs is not None:
        zone = obs.zone or host.owner
        served = [s for s in host.sources if s.error is None]
        if not any(s.records for s in served):
            out.append(Finding("tlsa-missing", Severity.CRITICAL, host.owner,
                               f"no TLSA records at {host.owner}",
                               "publish 3 1 1 records (current + next) for every algorithm"))
        for s in host.sources:
            if s.error is not None:
                out.append(Finding("nameserver-unusable", Severity.CRITICAL,
                                   f"{host.owner} {s.label}", s.error,
                                   "every authoritative server must answer with valid data"))
        for problem in obs.problems:
            m = _PITFALL.match(problem)
            parent = service_parent(absolute(host.owner))
            if m and parent is not None:
                out.append(hygiene.tcp_ancestor(host.owner, str(parent),
                                                m.group("servers").split(", ")))
            else:
                out.append(Finding("zone-problem", Severity.WARNING, zone, problem,
                                   "every nameserver of the zone is checked"))
        ttls = [s.ttl for s in served if s.ttl is not None]
        ttl_finding = hygiene.tlsa_ttl(host.owner, ttls)
        if ttl_finding:
            out.append(ttl_finding)
        drift = hygiene.serial_drift(zone, {s.label: s.serial for s in host.sources
                                                if s.serial is not None})
        if drift:
            out.append(drift)
        records = {r for s in served for r in s.records}
        chains = [o.chain.chain for o in host.outcomes if o.chain.chain]
        out.extend(hygiene.record_findings(host.owner, records, chains))
    v = host.validation
    if v is not None and not v.secure and host.error is None:
        out.append(Finding("dnssec-invalid", Severity.CRITICAL, host.owner,
                           f"the TLSA RRset is not DNSSEC-valid ({v.method}): {v.reason}",
                           "DANE relies on DNSSEC: a lot of DANE breakage stems from broken "
                           "DNSSEC (check the chain on https://dnsviz.net/)"))
    out.extend(_chain_findings(host))
    seen: set[bytes] = set()
    for o in host.outcomes:
        if not o.chain.chain:
            continue
        leaf = o.chain.chain[0]
        fp = leaf.fingerprint(hashes.SHA256())
        if fp in seen:
            continue
        seen.add(fp)
        found = hygiene.expiry(f"{host.base} {o.chain.algorithm} serial {leaf.serial_number:x}"
                               [:80], leaf, now, opts.warn_days, opts.crit_days)
        if found:
            out.append(found)
    return out


def _zone_refresh(lookup: Lookup, zone: str, obs: Observation) -> int | None:
    for a in obs.answers:
        reply = query(a.address, zone, "SOA", port=lookup.port, timeout=lookup.timeout)
        if reply.message is not None and reply.authoritative:
            soa = answer_rrset(reply.message, absolute(zone), dns.rdatatype.SOA)
            if soa is not None:
                return int(soa[0].refresh)
    return None


# --------------------------------------------------------------------------- the domain


def check_domain(domain: str, opts: Options, observer: Observer, now: datetime) -> DomainReport:
    method = ("validating resolver " + opts.validating_resolver + " (AD bit)"
              if opts.validating_resolver else
              f"validated from the {opts.anchor.describe()}" if opts.anchor else "none")
    report = DomainReport(domain, opts.port, now, method)
    lookup = Lookup(opts.resolvers, opts.dns_port, opts.dns_timeout)
    findings: list[Finding] = []
    try:
        mx = lookup.mx(absolute(domain + "."))
    except (ObserveError, dns.exception.DNSException) as exc:
        findings.append(Finding("mx-lookup", Severity.CRITICAL, domain, str(exc),
                                "the MX RRset must be resolvable"))
        mx = []
    if not mx and not findings:
        findings.append(Finding("mx-missing", Severity.CRITICAL, domain,
                                f"{domain} has no MX record",
                                "DANE for SMTP applies to the MX hosts of the domain"))
    for pref, name in mx:
        if name in ("", "."):
            findings.append(Finding("null-mx", Severity.INFO, domain,
                                    f"{domain} has a null MX: it accepts no mail"))
            continue
        host = check_host(name, pref, lookup, observer, opts, now)
        report.hosts.append(host)
        findings.extend(host_findings(host, opts, now))
    zones: dict[str, tuple[Observation, int]] = {}
    for h in report.hosts:
        ttls = [s.ttl for s in h.sources if s.ttl is not None]
        if (h.observation is not None and h.observation.zone and ttls
                and h.observation.zone not in zones):
            zones[h.observation.zone] = (h.observation, min(ttls))
    for zone, (obs, ttl) in zones.items():
        refresh = _zone_refresh(lookup, zone, obs)
        if refresh is not None:
            found = hygiene.refresh_vs_ttl(zone, refresh, ttl)
            if found:
                findings.append(found)
    leaves = {h.base: [o.chain.chain[0] for o in h.outcomes if o.chain.chain]
              for h in report.hosts}
    findings.extend(hygiene.shared_keys(leaves))
    report.findings = hygiene.collect(findings)
    return report
