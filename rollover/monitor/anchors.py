"""DNSSEC trust anchors: the DS or DNSKEY records validation starts from.

Default: the root zone's key as Debian's `dns-root-data` ships it (/usr/share/dns/root.ds, else
root.key); without that package, the root KSK DS records built in below (KSK-2017 and KSK-2024,
as IANA publishes them). `--trust-anchor FILE` names another file in the same zone-file line
format ("owner [ttl] [IN] DS|DNSKEY rdata", `;` comments), e.g. a test lab's own parent zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from rollover.display import clip, shown_path
from rollover.errors import InputError, MissingInputError

ROOT_FILES = (Path("/usr/share/dns/root.ds"), Path("/usr/share/dns/root.key"))
BUILTIN_ROOT = """\
. IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
. IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16
"""


@dataclass(frozen=True)
class TrustAnchor:
    zone: dns.name.Name
    ds: tuple[dns.rdata.Rdata, ...]
    dnskey: tuple[dns.rdata.Rdata, ...]
    source: str  # where it came from, for the report ("/usr/share/dns/root.ds", "built-in")

    def describe(self) -> str:
        n = len(self.ds) + len(self.dnskey)
        kinds = " and ".join(k for k, v in (("DS", self.ds), ("DNSKEY", self.dnskey)) if v)
        return f"trust anchor {self.zone} ({n} {kinds} from {self.source})"


def parse(text: str, source: str) -> TrustAnchor:
    """Anchor records from zone-file lines; InputError 'SOURCE:LINE: what' on a bad line."""
    zone: dns.name.Name | None = None
    ds: list[dns.rdata.Rdata] = []
    keys: list[dns.rdata.Rdata] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        kind = next((t.upper() for t in tokens[1:4] if t.upper() in ("DS", "DNSKEY")), None)
        if kind is None:
            raise InputError(f"{source}:{n}: not a DS or DNSKEY record: {clip(line, 60)}")
        at = [t.upper() for t in tokens].index(kind)
        try:
            owner = dns.name.from_text(tokens[0])
            rdata = dns.rdata.from_text(dns.rdataclass.IN, kind, " ".join(tokens[at + 1:]))
        except (dns.exception.DNSException, ValueError) as exc:
            raise InputError(f"{source}:{n}: bad {kind} record: {clip(str(exc), 80)}") from None
        if zone is not None and owner != zone:
            raise InputError(f"{source}:{n}: anchor for {owner} after one for {zone}: "
                             "one zone per file")
        zone = owner
        (ds if kind == "DS" else keys).append(rdata)
    if zone is None:
        raise InputError(f"{source}: holds no DS or DNSKEY record")
    return TrustAnchor(zone, tuple(ds), tuple(keys), source)


def load(path: str | None = None) -> TrustAnchor:
    """The anchor in `path`, or the default root anchor."""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MissingInputError(f"trust anchor {shown_path(p)}: no such file") from None
        except (OSError, UnicodeError) as exc:
            raise InputError(f"trust anchor {shown_path(p)}: cannot read: {exc}") from None
        return parse(text, shown_path(p))
    for candidate in ROOT_FILES:
        try:
            return parse(candidate.read_text(encoding="utf-8"), str(candidate))
        except (OSError, UnicodeError, InputError):
            continue
    return parse(BUILTIN_ROOT, "built-in root KSK DS")
