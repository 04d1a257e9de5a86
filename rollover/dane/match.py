"""DANE matching for SMTP (RFC 6698, RFC 7671, RFC 7672): a served chain against TLSA records.

Pure: no I/O, no clock (the caller passes `now`). Used by `rollover check`, pre-flight and
post-flight. The rules, as a DANE-validating SMTP client applies them:

- Usages 0 (PKIX-TA) and 1 (PKIX-EE) are unusable for SMTP (RFC 7672 section 3.1.3): ignored,
  reported. Unknown usages, selectors and matching types, and digests of the wrong length, are
  ignored too. No usable record at all means no match.
- DANE-EE (3) matches the leaf only; names and validity dates are ignored (RFC 7672 3.1.1).
- DANE-TA (2) matches an issuer of the leaf that the server sent (RFC 7672 3.1.2): the path
  leaf -> ... -> trust anchor must verify signature by signature, every certificate below the
  trust anchor must be valid at `now` (the trust anchor's own dates do not count: RFC 5280 path
  validation, and OpenSSL, leave them out), issuers must be CAs within their path-length
  limits, the leaf's extendedKeyUsage (if any) must allow serverAuth, and the host name must be
  in the leaf (SAN dNSName; the CN only when there is no dNSName; a wildcard
  only as the whole leftmost label). Full-value records are the exception: a 2 0 0 carries the
  TA certificate and a 2 1 0 its public key, so the server need not send them (RFC 7671 5.2.2).
- Digest agility (RFC 7671 section 9): among the usable records with the same usage and selector,
  a client uses only the most preferred digest present (OpenSSL: SHA2-512 over SHA2-256; a client
  that prefers SHA2-256 the other way round). Full(0) records are not digests and always count
  (as in OpenSSL). `matched` is true only when the chain matches under *both* preferences: an
  operator must not publish a 3 1 2 that does not match just because a 3 1 1 does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from rollover.dane.tlsa import (
    PublicKey,
    cert_der,
    digest,
    is_self_signed,
    name_text,
    spki_der,
    verify_signed_by,
)
from rollover.model import USAGE_NAMES, TLSARecord

DANE_TA = 2
DANE_EE = 3
MAX_PATH = 10
_DIGEST_LEN = {1: 32, 2: 64}


class Preference(StrEnum):
    """A client's preferred digest (RFC 7671 section 9)."""

    SHA2_256 = "sha2-256"
    SHA2_512 = "sha2-512"


# rank of each matching type for a client of that preference (higher = preferred)
_RANK = {
    Preference.SHA2_256: {1: 2, 2: 1},
    Preference.SHA2_512: {2: 2, 1: 1},
}


def short(record: TLSARecord) -> str:
    """"3 1 1 0123abcd..." for messages (the full hex is in to_text())."""
    hexdata = record.data.hex()
    return f"{record.usage} {record.selector} {record.mtype} " + (
        hexdata if len(hexdata) <= 16 else hexdata[:12] + "..."
    )


@dataclass(frozen=True)
class Match:
    """A record that matched: at which depth of the verified path (0 = the leaf)."""

    record: TLSARecord
    depth: int
    subject: str  # of the matched certificate; for a bare-key trust anchor: the issuer name
    key_only: bool = False  # a 2 1 0 key that signed the top of the chain (not sent)

    def describe(self) -> str:
        usage = USAGE_NAMES.get(self.record.usage, str(self.record.usage))
        if self.depth == 0:
            where = "the leaf (depth 0)"
        elif self.key_only:
            where = f"the trust-anchor key from the record (depth {self.depth}, {self.subject})"
        else:
            where = f"depth {self.depth} ({self.subject})"
        return f"{short(self.record)} ({usage}) matched {where}"

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_text(), "depth": self.depth, "subject": self.subject,
                "key_only": self.key_only}


@dataclass(frozen=True)
class Ignored:
    """A record a DANE SMTP client does not use at all, and why."""

    record: TLSARecord
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_text(), "reason": self.reason}


@dataclass(frozen=True)
class Miss:
    """A usable record that did not match, and why."""

    record: TLSARecord
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_text(), "reason": self.reason}


@dataclass(frozen=True)
class Verdict:
    host: str
    matched: bool  # True only when both digest preferences find a match
    by_preference: dict[Preference, Match | None]
    matches: tuple[Match, ...]  # every usable record that matched, before digest agility
    misses: tuple[Miss, ...]
    ignored: tuple[Ignored, ...]
    reason: str  # one line, for operators
    path: tuple[str, ...] = field(default=())  # subjects of the verified path, leaf first

    @property
    def match(self) -> Match | None:
        """The match to show: the SHA2-512 client's (OpenSSL's default), else the SHA2-256 one."""
        return self.by_preference[Preference.SHA2_512] or self.by_preference[Preference.SHA2_256]

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "matched": self.matched,
            "reason": self.reason,
            "by_preference": {
                p.value: (m.to_dict() if m else None) for p, m in self.by_preference.items()
            },
            "matches": [m.to_dict() for m in self.matches],
            "misses": [m.to_dict() for m in self.misses],
            "ignored": [i.to_dict() for i in self.ignored],
            "path": list(self.path),
        }


# --------------------------------------------------------------------------- single matches


def record_data_for(record: TLSARecord, obj: x509.Certificate | PublicKey) -> bytes | None:
    """What `record` would hold for a certificate (any selector) or a bare key (selector 1);
    None when the selector cannot apply."""
    if record.selector == 0:
        if not isinstance(obj, x509.Certificate):
            return None
        return digest(record.mtype, cert_der(obj))
    if record.selector == 1:
        return digest(record.mtype, spki_der(obj))
    return None


def match_cert(record: TLSARecord, cert: x509.Certificate) -> bool:
    """Does the record's selector/mtype/data match this certificate (usage not considered)?"""
    if record.mtype not in (0, 1, 2) or record.selector not in (0, 1):
        return False
    return record_data_for(record, cert) == record.data


def match_key(record: TLSARecord, public_key: PublicKey) -> bool:
    """Does the record match this public key? Only selector 1 (SPKI) records can."""
    if record.selector != 1 or record.mtype not in (0, 1, 2):
        return False
    return record_data_for(record, public_key) == record.data


def host_matches(cert: x509.Certificate, host: str) -> bool:
    """RFC 6125 as RFC 7672 section 3.2.3 narrows it: SAN dNSNames (the subject CN only when the
    certificate has no dNSName); '*' only as the complete leftmost label, matching one label."""
    wanted = _norm(host)
    if not wanted:
        return False
    names = dns_names(cert)
    return any(_name_matches(pattern, wanted) for pattern in names)


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if names:
        return names
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _name_matches(pattern: str, host: str) -> bool:
    pattern = _norm(pattern)
    if not pattern:
        return False
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    rest = pattern[2:]
    if "*" in rest or rest.count(".") < 1:  # "*.com" never matches; one wildcard only
        return False
    head, _, tail = host.partition(".")
    return bool(head) and tail == rest


# --------------------------------------------------------------------------- chain matching


def _classify(record: TLSARecord) -> str | None:
    """Why a DANE SMTP client ignores this record, or None when it is usable."""
    if record.usage in (0, 1):
        return (f"usage {record.usage} ({USAGE_NAMES[record.usage]}) is unusable for SMTP "
                "(RFC 7672 section 3.1.3)")
    if record.usage not in (DANE_TA, DANE_EE):
        return f"unknown usage {record.usage}"
    if record.selector not in (0, 1):
        return f"unknown selector {record.selector}"
    if record.mtype not in (0, 1, 2):
        return f"unknown matching type {record.mtype}"
    need = _DIGEST_LEN.get(record.mtype)
    if need is not None and len(record.data) != need:
        return f"malformed: matching type {record.mtype} needs {need} bytes, has {len(record.data)}"
    if record.mtype == 0 and not record.data:
        return "malformed: empty data"
    return None


def _build_path(leaf: x509.Certificate, pool: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """leaf, its issuer, that one's issuer, ... as far as `pool` allows, each signature
    verified; stops at a self-signed certificate."""
    path = [leaf]
    cur = leaf
    while len(path) < MAX_PATH and not is_self_signed(cur):
        nxt = None
        for cand in pool:
            if any(cand is p or cand == p for p in path):
                continue
            if cand.subject == cur.issuer and verify_signed_by(cur, cand.public_key()):
                nxt = cand
                break
        if nxt is None:
            break
        path.append(nxt)
        cur = nxt
    return path


def _valid_at(cert: x509.Certificate, now: datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}"
    if now > cert.not_valid_after_utc:
        return f"expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}"
    return None


def _ca_problem(cert: x509.Certificate, below: int) -> str | None:
    """Why `cert` cannot issue for a path with `below` intermediate CAs under it."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None:
        if cert.version != x509.Version.v1:
            return "is not a CA (no basicConstraints)"
    elif not bc.ca:
        return "is not a CA (basicConstraints CA:FALSE)"
    elif bc.path_length is not None and below > bc.path_length:
        return f"path length {below} exceeds its limit {bc.path_length}"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not ku.key_cert_sign:
        return "key usage lacks keyCertSign"
    return None


def _leaf_purpose_problem(leaf: x509.Certificate) -> str | None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    allowed = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if any(u in allowed for u in eku):
        return None
    return "leaf extendedKeyUsage does not allow serverAuth"


def _path_problem(path: Sequence[x509.Certificate], upto: int, host: str,
                  now: datetime) -> str | None:
    """Why a trust anchor at depth `upto` (path[upto], or a bare key above path[-1] when
    upto == len(path)) does not validate the leaf."""
    leaf = path[0]
    if not host_matches(leaf, host):
        names = ", ".join(dns_names(leaf)) or "none"
        return f"host name {_norm(host)} is not in the leaf (names: {names})"
    problem = _leaf_purpose_problem(leaf)
    if problem:
        return problem
    last = min(upto, len(path) - 1)
    for depth in range(0, last + 1):
        cert = path[depth]
        when = _valid_at(cert, now) if depth < upto else None  # not the trust anchor's dates
        if when:
            who = "leaf" if depth == 0 else f"depth {depth} ({name_text(cert.subject)})"
            return f"{who} {when}"
        if depth >= 1:
            issue = _ca_problem(cert, depth - 1)
            if issue:
                return f"depth {depth} ({name_text(cert.subject)}) {issue}"
    return None


def _key_from_record(record: TLSARecord) -> PublicKey | None:
    try:
        return serialization.load_der_public_key(record.data)
    except Exception:  # any garbage in DNS data is simply "no key"
        return None


def _cert_from_record(record: TLSARecord) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(record.data)
    except Exception:
        return None


def _ta_result(record: TLSARecord, served: Sequence[x509.Certificate],
               path: Sequence[x509.Certificate], host: str, now: datetime) -> Match | Miss:
    for depth in range(1, len(path)):
        if match_cert(record, path[depth]):
            problem = _path_problem(path, depth, host, now)
            if problem:
                return Miss(record, f"{short(record)} (DANE-TA) matches depth {depth} "
                                    f"({name_text(path[depth].subject)}), but {problem}")
            return Match(record, depth, name_text(path[depth].subject))
    if record.selector == 1 and record.mtype == 0:
        key = _key_from_record(record)
        top = path[-1]
        if key is not None and not is_self_signed(top) and verify_signed_by(top, key):
            problem = _path_problem(path, len(path), host, now)
            if problem:
                return Miss(record, f"{short(record)} (DANE-TA key) signed the chain, "
                                    f"but {problem}")
            return Match(record, len(path), name_text(top.issuer), key_only=True)
    if match_cert(record, served[0]):
        return Miss(record, f"{short(record)} (DANE-TA) matches the leaf itself; DANE-TA must "
                            "match an issuer (publish it as 3 S M)")
    for cert in served[1:]:
        if match_cert(record, cert):
            return Miss(record, f"{short(record)} (DANE-TA) matches "
                                f"{name_text(cert.subject)}, which is not an issuer of the leaf")
    return Miss(record, f"{short(record)} (DANE-TA) matches no issuer the server sent "
                        "(the trust anchor must be in the served chain, RFC 7672 section 3.1.2)")


def _ee_result(record: TLSARecord, leaf: x509.Certificate) -> Match | Miss:
    if match_cert(record, leaf):
        return Match(record, 0, name_text(leaf.subject))
    what = "certificate" if record.selector == 0 else "public key"
    return Miss(record, f"{short(record)} (DANE-EE) does not match the leaf's {what}")


def _preferred(records: Sequence[TLSARecord], pref: Preference) -> set[TLSARecord]:
    """The records a client of preference `pref` uses: per (usage, selector), only the best
    ranked digest matching type present; Full(0) records are not digests and always count."""
    rank = _RANK[pref]
    best: dict[tuple[int, int], int] = {}
    for r in records:
        if r.mtype != 0:
            key = (r.usage, r.selector)
            best[key] = max(best.get(key, -1), rank[r.mtype])
    return {r for r in records if r.mtype == 0 or rank[r.mtype] == best[(r.usage, r.selector)]}


def match_chain(chain: Sequence[x509.Certificate], records: Iterable[TLSARecord], host: str,
                now: datetime) -> Verdict:
    """Match a served chain (leaf first, in the order the server sent it) against a TLSA RRset,
    as a DANE SMTP client does, under both digest preferences. `now` must be timezone-aware."""
    recs = sorted(set(records), key=lambda r: (-r.usage, r.selector, r.mtype, r.data))
    if not chain:
        return Verdict(host, False, {p: None for p in Preference}, (), (), (),
                       "the server sent no certificate")
    leaf = chain[0]
    ignored = tuple(Ignored(r, why) for r in recs if (why := _classify(r)) is not None)
    usable = [r for r in recs if _classify(r) is None]
    extra = [c for r in usable if r.usage == DANE_TA and r.selector == 0 and r.mtype == 0
             if (c := _cert_from_record(r)) is not None]
    path = _build_path(leaf, [*chain[1:], *extra])
    results: list[Match | Miss] = [
        _ee_result(r, leaf) if r.usage == DANE_EE else _ta_result(r, chain, path, host, now)
        for r in usable
    ]
    matches = tuple(m for m in results if isinstance(m, Match))
    misses = tuple(m for m in results if isinstance(m, Miss))
    by_pref: dict[Preference, Match | None] = {}
    for pref in Preference:
        used = _preferred(usable, pref)
        by_pref[pref] = next((m for m in matches if m.record in used), None)
    matched = all(m is not None for m in by_pref.values())
    reason = _reason(recs, usable, ignored, misses, by_pref)
    return Verdict(host, matched, by_pref, matches, misses, ignored, reason,
                   tuple(name_text(c.subject) for c in path))


def _reason(recs: Sequence[TLSARecord], usable: Sequence[TLSARecord],
            ignored: Sequence[Ignored], misses: Sequence[Miss],
            by_pref: dict[Preference, Match | None]) -> str:
    if not recs:
        return "no TLSA records"
    if not usable:
        return "no usable TLSA records: " + "; ".join(
            f"{short(i.record)}: {i.reason}" for i in ignored
        )
    m256 = by_pref[Preference.SHA2_256]
    m512 = by_pref[Preference.SHA2_512]
    if m256 and m512:
        if m256 == m512:
            return m512.describe()
        return f"{m512.describe()} (SHA2-512 client); {m256.describe()} (SHA2-256 client)"
    if m256 or m512:
        ok_pref, bad_pref = (
            (Preference.SHA2_256, Preference.SHA2_512) if m256 else
            (Preference.SHA2_512, Preference.SHA2_256)
        )
        used = _preferred(usable, bad_pref)
        why = "; ".join(m.reason for m in misses if m.record in used) or "no record matched"
        ok = (m256 or m512)
        assert ok is not None
        return (f"a client preferring {bad_pref.value.upper()} finds no match, as it uses only "
                f"the most preferred matching type per usage and selector (RFC 7671 section 9): "
                f"{why} (a {ok_pref.value.upper()} client: {ok.describe()})")
    return "no record matched: " + "; ".join(m.reason for m in misses)
