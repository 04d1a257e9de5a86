"""Plain data types shared by every floor. No I/O, no clock, no imports of our own above errors.

Rdata is carried as canonical text (`TLSARecord.to_text()`: "3 1 1 <lowercase hex, no spaces>") so
RRsets from different servers and providers compare as plain sets of strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509

from rollover.clock import format_time, parse_time

USAGE_NAMES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
SELECTOR_NAMES = {0: "Cert", 1: "SPKI"}
MTYPE_NAMES = {0: "Full", 1: "SHA2-256", 2: "SHA2-512"}

# The policy's defaults, in seconds: one place for the machine's Policy and the config's section
KEY_LIFETIME = 60 * 86400  # a key is current this long before the next one takes over
RENEW_BEFORE = 30 * 86400  # renew the certificate this long before it expires
RETIRE_GRACE = 3600  # keep an old record this long after a positive post-flight
MIN_WAIT = 0  # extra wait on top of 2 x TTL before a switch


class Algorithm(StrEnum):
    """Key algorithms a slot can use. Each rolls on its own (one 3 1 1 cannot match two keys)."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa")


class Scheme(StrEnum):
    CURRENT_NEXT = "current+next"
    CURRENT_ISSUER = "current+issuer"


@dataclass(frozen=True, order=True)
class TLSARecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def to_text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    @classmethod
    def from_text(cls, text: str) -> TLSARecord:
        """Parse "U S M HEX" (hex may contain spaces, any case). Raises ValueError (one line
        that shows at most the start of `text`, escaped)."""
        shown = text if len(text) <= 60 and text.isprintable() else (
            text[:60].encode("unicode_escape").decode("ascii") + ("..." if len(text) > 60 else "")
        )
        parts = text.split()
        if len(parts) < 4:
            raise ValueError(f"TLSA record needs 'usage selector mtype data', got {shown!r}")
        fields = []
        for name, part in zip(("usage", "selector", "matching type"), parts[:3], strict=False):
            # int() would take "0_3" and non-ASCII digits: a record field is plain 0-9
            if not (part.isascii() and part.isdigit()) or len(part) > 3:
                raise ValueError(f"bad TLSA record {shown!r}: {name} must be a number 0-255")
            fields.append(int(part))
        usage, selector, mtype = fields
        hexdata = "".join(parts[3:])
        if not hexdata.isascii() or any(c not in "0123456789abcdefABCDEF" for c in hexdata):
            raise ValueError(f"bad TLSA record {shown!r}: the data must be hexadecimal (0-9, a-f)")
        if len(hexdata) % 2:
            raise ValueError(
                f"bad TLSA record {shown!r}: the data has an odd number of hex digits "
                f"({len(hexdata)}); each byte is two"
            )
        data = bytes.fromhex(hexdata)
        for name, value in (("usage", usage), ("selector", selector), ("matching type", mtype)):
            if not 0 <= value <= 255:
                raise ValueError(f"bad TLSA record {shown!r}: {name} {value} out of range")
        expected = {1: 32, 2: 64}.get(mtype)
        if expected is not None and len(data) != expected:
            raise ValueError(
                f"bad TLSA record {shown!r}: matching type {mtype} needs {expected} bytes, "
                f"got {len(data)}"
            )
        return cls(usage, selector, mtype, data)

    def describe(self) -> str:
        u = USAGE_NAMES.get(self.usage, str(self.usage))
        s = SELECTOR_NAMES.get(self.selector, str(self.selector))
        m = MTYPE_NAMES.get(self.mtype, str(self.mtype))
        return f"{u} {s} {m}"


def own_rdata(spki_sha256: str) -> str:
    """The 3 1 1 (DANE-EE, SPKI, SHA2-256) rdata of a key, from its SPKI digest in hex."""
    return f"3 1 1 {spki_sha256}"


@dataclass(frozen=True, order=True)
class Endpoint:
    host: str  # lowercase, no trailing dot
    port: int = 25

    @property
    def owner(self) -> str:
        """TLSA owner name, absolute: _25._tcp.mail.example.nl."""
        return f"_{self.port}._tcp.{self.host}."

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, order=True)
class SlotId:
    """One endpoint x one key algorithm."""

    host: str
    port: int
    algorithm: Algorithm

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port)

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}:{self.algorithm.value}"

    @classmethod
    def parse(cls, key: str) -> SlotId:
        host, port, alg = key.rsplit(":", 2)
        return cls(host, int(port), Algorithm(alg))

    def __str__(self) -> str:
        return f"{self.host}:{self.port} {self.algorithm.value}"


def format_file_name(pattern: str, slot: SlotId) -> str:
    """An installer file-name pattern with {host}, {port}, {algorithm} filled in for `slot`.
    ValueError (one line) when the pattern is bad or does not give a plain file name."""
    try:
        name = pattern.format(host=slot.host, port=slot.port, algorithm=slot.algorithm.value)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{pattern!r} is not a valid pattern ({exc.__class__.__name__}: {exc}); "
            "use {host}, {port} and {algorithm}"
        ) from None
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"{pattern!r} gives {name!r}, not a plain file name")
    return name


@dataclass(frozen=True)
class ServerAnswer:
    """What one nameserver address answered for one owner/type."""

    server: str  # NS host name (or the configured extra server's label)
    address: str  # IP address queried
    ok: bool  # True: an authoritative answer we can use (NOERROR or NXDOMAIN, AA=1, DNSSEC fine)
    rcode: str  # "NOERROR", "NXDOMAIN", "REFUSED", "TIMEOUT", ...
    records: frozenset[str] = frozenset()  # canonical rdata text
    ttl: int | None = None  # TTL served for the RRset (None when empty)
    serial: int | None = None  # zone SOA serial this server serves
    dnssec: str | None = None  # None: zone unsigned; "valid"; or why not ("RRSIG missing", ...)
    error: str | None = None  # why ok is False, operator-readable

    @property
    def label(self) -> str:
        return f"{self.server} ({self.address})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "address": self.address,
            "ok": self.ok,
            "rcode": self.rcode,
            "records": sorted(self.records),
            "ttl": self.ttl,
            "serial": self.serial,
            "dnssec": self.dnssec,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServerAnswer:
        return cls(
            server=d["server"],
            address=d["address"],
            ok=d["ok"],
            rcode=d["rcode"],
            records=frozenset(d.get("records", ())),
            ttl=d.get("ttl"),
            serial=d.get("serial"),
            dnssec=d.get("dnssec"),
            error=d.get("error"),
        )


@dataclass(frozen=True)
class Observation:
    """One round of queries: the same owner/type asked of every authoritative address at `at`."""

    owner: str
    rtype: str
    at: datetime
    answers: tuple[ServerAnswer, ...]
    zone: str | None = None
    negative_ttl: int | None = None  # min(SOA TTL, SOA MINIMUM): how long NXDOMAIN/NODATA is cached
    signed: bool = False
    problems: tuple[str, ...] = ()  # zone-level trouble, e.g. the _tcp NXDOMAIN pitfall
    # the system's monotonic seconds when taken, and which monotonic clock (the boot id): between
    # two looks on one clock a wall-clock step (NTP) shows as a difference, and is not counted
    mono: float | None = None
    run: str | None = None

    def agreed(self) -> frozenset[str] | None:
        """The RRset every address serves, or None if any address failed or they differ."""
        if not self.answers or self.problems:
            return None
        if not all(a.ok for a in self.answers):
            return None
        sets = {a.records for a in self.answers}
        if len(sets) != 1:
            return None
        return next(iter(sets))

    def max_ttl(self) -> int | None:
        ttls = [a.ttl for a in self.answers if a.ttl is not None]
        return max(ttls) if ttls else None

    def disagreement(self, wanted: frozenset[str] | None = None) -> str | None:
        """Human reason why this observation is not agreement on `wanted` (or on anything)."""
        if not self.answers:
            return "no authoritative nameserver address found"
        if self.problems:
            return "; ".join(self.problems)
        bad = [a for a in self.answers if not a.ok]
        if bad:
            return "; ".join(f"{a.label}: {a.error or a.rcode}" for a in bad)
        if wanted is not None:
            lagging = [a for a in self.answers if not wanted <= a.records]
            if lagging:
                return "; ".join(f"{a.label} still serves the old set" for a in lagging)
        sets = {a.records for a in self.answers}
        if len(sets) > 1:
            majority = max(sets, key=lambda s: sum(1 for a in self.answers if a.records == s))
            odd = [a for a in self.answers if a.records != majority]
            return "; ".join(f"{a.label} serves a different RRset" for a in odd)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "rtype": self.rtype,
            "at": format_time(self.at),
            "zone": self.zone,
            "negative_ttl": self.negative_ttl,
            "signed": self.signed,
            "problems": list(self.problems),
            "answers": [a.to_dict() for a in self.answers],
            "mono": self.mono,
            "run": self.run,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        return cls(
            owner=d["owner"],
            rtype=d.get("rtype", "TLSA"),
            at=parse_time(d["at"]),
            answers=tuple(ServerAnswer.from_dict(a) for a in d.get("answers", ())),
            zone=d.get("zone"),
            negative_ttl=d.get("negative_ttl"),
            signed=d.get("signed", False),
            problems=tuple(d.get("problems", ())),
            mono=d.get("mono"),
            run=d.get("run"),
        )


@dataclass(frozen=True)
class RRset:
    """An RRset as a provider sees it."""

    owner: str
    rtype: str
    ttl: int | None
    rdatas: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class PresentedChain:
    """What one address presented over STARTTLS for one algorithm (leaf first), or why not."""

    address: str
    chain: tuple[x509.Certificate, ...] = ()
    error: str | None = None
    # the error proves nothing of this algorithm is served there (connection refused, or the
    # server's own handshake-failure alert); any other error means we could not see
    nothing_served: bool = False
