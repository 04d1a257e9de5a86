"""Rdata as rollover compares it, the one canonical form every floor uses: TLSA-family
"U S M lowerhex", anything else dnspython's text with absolute names (TXT: quoted strings)."""

from __future__ import annotations

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdtypes.tlsabase


def canonical(rdata: dns.rdata.Rdata) -> str:
    if isinstance(rdata, dns.rdtypes.tlsabase.TLSABase):
        return f"{rdata.usage} {rdata.selector} {rdata.mtype} {rdata.cert.hex()}"
    return str(rdata.to_text())


def parse(rtype: str, text: str, origin: str | None = None) -> dns.rdata.Rdata:
    """ValueError (one line, naming the text) when `text` is not `rtype` rdata."""
    try:
        return dns.rdata.from_text(
            dns.rdataclass.IN, rtype, text,
            origin=dns.name.from_text(origin) if origin else dns.name.root,
        )
    except dns.exception.DNSException as exc:
        raise ValueError(f"bad {rtype} rdata {text!r}: {exc}") from None


def canonical_text(rtype: str, text: str, origin: str | None = None) -> str:
    """`text` in canonical form ("3 1 1 AB CD" -> "3 1 1 abcd"); ValueError if unparsable."""
    return canonical(parse(rtype, text, origin))
