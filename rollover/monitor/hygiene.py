"""Zone and record hygiene: the DANE for SMTP how-to's tips as findings, each with a severity and
the how-to's advice. Pure functions over what a check saw; no I/O, no clock (`now` is passed).

A finding is identified by (code, subject): `collect` keeps each once, the worst severity first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509

from rollover.dane import match as dane
from rollover.dane import tlsa
from rollover.model import TLSARecord

TTL_LOW, TTL_HIGH = 1800, 3600  # the how-to: "A TTL between 30 minutes and 1 hour"
MAX_RECORDS = 12  # some large senders stop looking after about this many records per owner


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"critical": 2, "warning": 1, "info": 0}[self.value]


@dataclass(frozen=True)
class Finding:
    code: str  # stable identifier, e.g. "tcp-ancestor-nxdomain"
    severity: Severity
    subject: str  # where: an owner name, a host, an address x algorithm, a zone
    message: str
    advice: str = ""
    commands: tuple[str, ...] = ()  # commands to confirm it by hand

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity.value, "subject": self.subject,
                "message": self.message, "advice": self.advice,
                "commands": list(self.commands)}


def collect(findings: Iterable[Finding]) -> list[Finding]:
    """Each (code, subject) once (the worst severity wins), worst first, then by code."""
    best: dict[tuple[str, str], Finding] = {}
    for f in findings:
        key = (f.code, f.subject)
        if key not in best or f.severity.rank > best[key].severity.rank:
            best[key] = f
    return sorted(best.values(), key=lambda f: (-f.severity.rank, f.code, f.subject))


def worst(findings: Iterable[Finding]) -> Severity | None:
    ranked = sorted(findings, key=lambda f: -f.severity.rank)
    return ranked[0].severity if ranked else None


# --------------------------------------------------------------------------- DNS


def tcp_ancestor(owner: str, parent: str, servers: Sequence[str]) -> Finding:
    return Finding(
        "tcp-ancestor-nxdomain", Severity.CRITICAL, owner,
        f"{parent} is NXDOMAIN on {', '.join(servers)} although {owner} exists: resolvers "
        f"that minimise query names (RFC 9156) stop at {parent} and never see the TLSA record",
        "fix the zone's NSEC/NSEC3 chain (rectify the zone; with NSEC3 opt-out make sure empty "
        f"non-terminals get NSEC3 records) so {parent} answers NOERROR without data",
        (f"dig {owner} tlsa +dnssec   (should be NOERROR with the TLSA record)",
         f"dig {parent} tlsa +dnssec   (must be NOERROR, not NXDOMAIN)",
         f"https://dnsviz.net/ : enter {owner.rstrip('.')}"),
    )


def tlsa_ttl(owner: str, ttls: Iterable[int]) -> Finding | None:
    bad = sorted({t for t in ttls if not TTL_LOW <= t <= TTL_HIGH})
    if not bad:
        return None
    return Finding(
        "tlsa-ttl", Severity.WARNING, owner,
        f"TLSA TTL {', '.join(str(t) for t in bad)} s is outside {TTL_LOW}-{TTL_HIGH} s",
        "the how-to recommends a TLSA TTL between 30 minutes (1800) and 1 hour (3600): low "
        "enough to repair a mistake quickly, high enough not to hammer the nameservers",
    )


def refresh_vs_ttl(zone: str, refresh: int, ttl: int) -> Finding | None:
    if ttl <= 0 or refresh <= 2 * ttl:
        return None
    return Finding(
        "soa-refresh", Severity.WARNING, zone,
        f"zone {zone} SOA refresh is {refresh} s, more than twice the TLSA TTL {ttl} s: a "
        "secondary that misses a NOTIFY can serve old TLSA records long after caches expired",
        "keep the zone's refresh in accordance with the TLSA TTL so every nameserver gives the "
        "same answer once the TTL has passed",
    )


def serial_drift(zone: str, serials: Mapping[str, int | None]) -> Finding | None:
    known = {label: s for label, s in serials.items() if s is not None}
    if len(set(known.values())) <= 1:
        return None
    newest = max(known.values())
    behind = sorted(f"{label} serial {s}" for label, s in known.items() if s != newest)
    return Finding(
        "soa-serial-drift", Severity.WARNING, zone,
        f"nameservers of {zone} serve different SOA serials: newest {newest}; "
        + ", ".join(behind),
        "a secondary behind the primary serves old data: check zone transfers (NOTIFY, "
        "allow-transfer, refresh) before publishing or retiring TLSA records",
    )


# --------------------------------------------------------------------------- records


def _in_chain(record: TLSARecord, chains: Sequence[Sequence[x509.Certificate]]) -> bool:
    for chain in chains:
        for cert in chain[1:]:
            if dane.match_cert(record, cert):
                return True
    return False


def record_findings(owner: str, records: Iterable[TLSARecord],
                    chains: Sequence[Sequence[x509.Certificate]]) -> list[Finding]:
    """Findings about one owner's TLSA RRset (as served) and the chains the server presents."""
    recs = sorted(set(records), key=lambda r: r.to_text())
    out: list[Finding] = []
    pkix = [r for r in recs if r.usage in (0, 1)]
    if pkix:
        out.append(Finding(
            "tlsa-usage-pkix", Severity.WARNING, owner,
            f"{len(pkix)} record(s) with usage 0/1 (PKIX-TA/PKIX-EE): "
            + ", ".join(dane.short(r) for r in pkix),
            "SMTP clients ignore usages 0 and 1 (RFC 7672 3.1.3): use 3 1 1 (DANE-EE) or "
            "2 1 1 (DANE-TA)",
        ))
    if len(recs) > MAX_RECORDS:
        out.append(Finding(
            "tlsa-too-many", Severity.WARNING, owner,
            f"{len(recs)} TLSA records at {owner}: more than {MAX_RECORDS}",
            "some large senders stop after about a dozen records; keep current + next (or "
            "current + issuer) per algorithm",
        ))
    full = [r for r in recs if r.usage == 3 and r.selector == 0]
    if full:
        out.append(Finding(
            "tlsa-full-certificate", Severity.INFO, owner,
            "full-certificate pin(s) " + ", ".join(dane.short(r) for r in full)
            + " change with every certificate, even when the key stays",
            "use 3 1 1 (the public key, SHA2-256): it survives a renewal with the same key",
        ))
    if chains:
        for r in recs:
            if r.usage == 2 and r.mtype in (1, 2) and not _in_chain(r, chains):
                out.append(Finding(
                    "tlsa-issuer-not-served", Severity.WARNING, f"{owner} {dane.short(r)}",
                    f"the DANE-TA record {dane.short(r)} names an issuer the server does not "
                    "send in its chain (seen in the wild: a root pinned but not served), so it "
                    "matches nothing",
                    "an issuer record validates only when the full chain up to that issuer is "
                    "sent: add the issuer to the served chain (Postfix: the chain file / "
                    "smtpd_tls_CAfile), or pin an issuer that is sent",
                ))
    return out


def digest_agility(owner: str, label: str, verdict: dane.Verdict) -> Finding | None:
    """A chain that matches for clients preferring one digest but not the other."""
    got = {p: m is not None for p, m in verdict.by_preference.items()}
    if all(got.values()) or not any(got.values()):
        return None
    yes = [p.value for p, ok in got.items() if ok]
    no = [p.value for p, ok in got.items() if not ok]
    return Finding(
        "tlsa-digest-mix", Severity.CRITICAL, f"{owner} {label}",
        f"{label} matches for {'/'.join(yes)} clients but not for {'/'.join(no)} clients: "
        "a client uses only its most preferred digest among the records (RFC 7671 9)",
        "publish every key with the same digest types (3 1 1 for each, and 3 1 2 for each "
        "if any), or only 3 1 1",
    )


# --------------------------------------------------------------------------- certificates


def shared_keys(leaves: Mapping[str, Iterable[x509.Certificate]]) -> list[Finding]:
    """The same public key, or a wildcard certificate, on several MX hosts."""
    by_key: dict[str, set[str]] = {}
    wildcard: dict[str, set[str]] = {}
    for host, certs in leaves.items():
        for cert in certs:
            spki = tlsa.tlsa_record(cert, 3, 1, 1).to_text().split()[3]
            by_key.setdefault(spki, set()).add(host)
            for name in dane.dns_names(cert):
                if name.startswith("*."):
                    wildcard.setdefault(name, set()).add(host)
    out: list[Finding] = []
    advice = ("the how-to does not recommend one key (or wildcard certificate) for all MX "
              "hosts: they tend to be rotated at the same time, and one mistake then stops "
              "all inbound mail")
    for spki, hosts in sorted(by_key.items()):
        if len(hosts) > 1:
            out.append(Finding("key-shared", Severity.WARNING, ", ".join(sorted(hosts)),
                               f"MX hosts {', '.join(sorted(hosts))} present the same public "
                               f"key (3 1 1 {spki[:12]}...)", advice))
    for name, hosts in sorted(wildcard.items()):
        if len(hosts) > 1:
            out.append(Finding("wildcard-shared", Severity.WARNING, ", ".join(sorted(hosts)),
                               f"MX hosts {', '.join(sorted(hosts))} present a wildcard "
                               f"certificate for {name}", advice))
    return out


def expiry(subject: str, leaf: x509.Certificate, now: datetime, warn_days: float,
           crit_days: float) -> Finding | None:
    days = (leaf.not_valid_after_utc - now).total_seconds() / 86400
    when = leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    if days >= warn_days:
        return None
    severity = Severity.CRITICAL if days < crit_days else Severity.WARNING
    state = f"expired {-days:.1f} days ago ({when})" if days < 0 else (
        f"expires in {days:.1f} days ({when})")
    return Finding(
        "certificate-expiry", severity, subject, f"certificate {state}",
        "DANE-EE (3 x x) clients ignore the expiry date (RFC 7672 3.1.1), DANE-TA and "
        "non-DANE clients do not: renew it (rollover run)",
    )
