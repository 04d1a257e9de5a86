"""RFC 2136 dynamic updates with TSIG (BIND, Knot, PowerDNS, ... as the primary).

One private client class (`_Client`) owns every byte sent to the server and turns every failure
into one `ProviderError` with a message an operator can act on. The TSIG secret lives only in the
keyring: never in repr, logs or messages (`_Client._fail` scrubs it as a last line of defence).

Reads go straight to the primary over TCP, TSIG-signed, RD=0, and must be authoritative (AA).
`apply` re-reads, runs the shared `check_change`, and sends ONE update message whose
prerequisites make it compare-and-swap (RFC 2136 section 2.4):

- RRset was empty  -> "RRset does not exist" (absent(owner, rtype));
- RRset had rdatas -> "RRset exists (value dependent)": the prerequisite RRset must equal the
  server's RRset exactly (RFC 2136 3.2.5), so an rdata added or removed by someone else between
  our read and our update makes the server answer NXRRSET and change nothing.

The update deletes only the `remove` rdatas and adds the `add` rdatas with `change.ttl`. The TTL
is a property of the whole RRset: when `change.ttl` differs from what the primary serves, the
update replaces the whole RRset (same rdatas, new TTL) in the same message. A change that is
already in effect sends nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.tlsabase
import dns.tsig
import dns.update

from rollover.errors import ProviderError
from rollover.fileio import read_secret
from rollover.model import RRset

from .base import Change, check_change

log = logging.getLogger(__name__)

ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}
DEFAULT_ALGORITHM = "hmac-sha256"
OPTION_KEYS = frozenset(
    {"type", "server", "port", "tsig_key_name", "tsig_algorithm", "tsig_secret_file", "timeout"}
)
_PREREQ_FAILED = {
    dns.rcode.YXRRSET: "YXRRSET",
    dns.rcode.NXRRSET: "NXRRSET",
    dns.rcode.YXDOMAIN: "YXDOMAIN",
    dns.rcode.NXDOMAIN: "NXDOMAIN",
}


def normalize_algorithm(text: str) -> str:
    """"HMAC-SHA256", "hmac-sha256." -> "hmac-sha256"; ProviderError if unknown."""
    name = text.strip().lower().rstrip(".")
    if name not in ALGORITHMS:
        known = ", ".join(ALGORITHMS)
        raise ProviderError(f"unknown TSIG algorithm {text!r} (known: {known})")
    return name


def decode_secret(secret: str) -> bytes:
    """Strict base64 (whitespace ignored); the error never repeats the secret."""
    compact = "".join(secret.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError(
            "TSIG secret is not valid base64: copy the 'secret' value of the key from the "
            "server's configuration (tsig-keygen output) into tsig_secret_file"
        ) from None
    if not raw:
        raise ProviderError("TSIG secret is empty: check tsig_secret_file")
    return raw


def canonical(rtype: str, rdata: dns.rdata.Rdata) -> str:
    """Rdata as rollover compares it: TLSA-family "U S M lowerhex", anything else dnspython text
    with absolute names (TXT: quoted strings)."""
    if isinstance(rdata, dns.rdtypes.tlsabase.TLSABase):
        return f"{rdata.usage} {rdata.selector} {rdata.mtype} {rdata.cert.hex()}"
    return str(rdata.to_text())


class RFC2136Provider:
    """Writes through RFC 2136 updates to one primary. `name` is the config key."""

    def __init__(
        self,
        name: str,
        server: str,
        port: int = 53,
        *,
        tsig_key_name: str,
        tsig_secret: str,
        tsig_algorithm: str = DEFAULT_ALGORITHM,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.server = server
        self.port = port
        self.tsig_key_name = tsig_key_name
        self.tsig_algorithm = normalize_algorithm(tsig_algorithm)
        self.timeout = timeout
        self._client = _Client(
            server, port, tsig_key_name, self.tsig_algorithm, decode_secret(tsig_secret),
            tsig_secret, timeout,
        )

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> RFC2136Provider:
        """Build from a config mapping: server, port (53), tsig_key_name, tsig_algorithm
        (hmac-sha256), tsig_secret_file (0600), timeout (5.0 s)."""
        where = f"provider {name!r}"
        unknown = sorted(set(options) - OPTION_KEYS)
        if unknown:
            raise ProviderError(f"{where}: unknown option(s) {', '.join(unknown)}")
        for key in ("server", "tsig_key_name", "tsig_secret_file"):
            if not isinstance(options.get(key), str) or not options[key]:
                raise ProviderError(f"{where}: option {key} is required (a string)")
        port = options.get("port", 53)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ProviderError(f"{where}: port must be an integer 1-65535, got {port!r}")
        timeout = options.get("timeout", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ProviderError(f"{where}: timeout must be a positive number, got {timeout!r}")
        algorithm = options.get("tsig_algorithm", DEFAULT_ALGORITHM)
        if not isinstance(algorithm, str):
            raise ProviderError(f"{where}: tsig_algorithm must be a string")
        try:
            return cls(
                name,
                options["server"],
                port,
                tsig_key_name=options["tsig_key_name"],
                tsig_algorithm=algorithm,
                tsig_secret=read_secret(
                    Path(options["tsig_secret_file"]), "TSIG secret file", ProviderError
                ),
                timeout=float(timeout),
            )
        except ProviderError as exc:
            raise ProviderError(f"{where}: {exc}") from None

    def __repr__(self) -> str:
        return (
            f"RFC2136Provider(name={self.name!r}, server={self.server!r}, port={self.port}, "
            f"tsig_key_name={self.tsig_key_name!r}, tsig_algorithm={self.tsig_algorithm!r})"
        )

    __str__ = __repr__

    def read(self, zone: str, owner: str, rtype: str) -> RRset:
        z, o, t = _names(zone, owner, rtype)
        return self._client.read(z, o, t, owner)

    def apply(self, change: Change) -> None:
        zone, owner, rtype = _names(change.zone, change.owner, change.rtype)
        change = _canonical_change(change, rtype)
        current = self._client.read(zone, owner, rtype, change.owner)
        after = check_change(change, current)
        ttl_changes = bool(after) and current.ttl is not None and current.ttl != change.ttl
        if after == current.rdatas and not ttl_changes:
            log.debug("%s: %s already in effect, nothing sent", self.name, change.describe())
            return
        update = self._client.update_message(zone)
        # Prerequisites: the RRset is still exactly what we just read.
        if current.rdatas:
            update.present(owner, _rdataset(rtype, current.rdatas))
        else:
            update.absent(owner, rtype)
        if ttl_changes:
            update.delete(owner, rtype)
            update.add(owner, _rdataset(rtype, after, change.ttl))
        else:
            for text in sorted(current.rdatas - after):
                update.delete(owner, _rdata(rtype, text))
            added = after - current.rdatas
            if added:
                update.add(owner, _rdataset(rtype, added, change.ttl))
        log.info("%s: updating %s", self.name, change.describe())
        self._client.send_update(update, zone, change.owner, rtype)
        # The server may silently ignore parts of an update (RFC 2136 3.4.2: e.g. records at a
        # CNAME owner); a cheap re-read makes that an error instead of a surprise.
        now = self._client.read(zone, owner, rtype, change.owner)
        if now.rdatas != after or (after and now.ttl != change.ttl):
            raise ProviderError(
                f"{self._client.where} accepted the update of {change.owner} {rtype} but serves "
                f"{len(now.rdatas)} record(s) ttl {now.ttl} instead of {len(after)} ttl "
                f"{change.ttl}: check the server's log (or someone changed it again just now)"
            )

    def wait_applied(self, timeout: float) -> None:
        """RFC 2136 is synchronous on the primary: the update answer means applied."""


def _names(zone: str, owner: str, rtype: str) -> tuple[dns.name.Name, dns.name.Name, str]:
    try:
        z = dns.name.from_text(zone)
        o = dns.name.from_text(owner, origin=z)
    except dns.exception.DNSException as exc:
        raise ProviderError(f"bad DNS name {owner!r} in zone {zone!r}: {exc}") from None
    if not o.is_subdomain(z):
        raise ProviderError(f"{owner} is not inside zone {zone}: check the endpoint's zone")
    try:
        t = dns.rdatatype.from_text(rtype)
    except dns.exception.DNSException:
        raise ProviderError(f"unknown record type {rtype!r}") from None
    return z, o, dns.rdatatype.to_text(t)


def _rdata(rtype: str, text: str) -> dns.rdata.Rdata:
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, rtype, text)
    except dns.exception.DNSException as exc:
        raise ProviderError(f"bad {rtype} rdata {text!r}: {exc}") from None


def _rdataset(rtype: str, texts: Iterable[str], ttl: int = 0) -> dns.rdataset.Rdataset:
    """Prerequisite RRsets carry TTL 0 (RFC 2136 2.4); update RRsets carry the real TTL."""
    rds = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), ttl=ttl)
    for text in sorted(texts):
        rds.add(_rdata(rtype, text))
    return rds


def _canonical_change(change: Change, rtype: str) -> Change:
    def canon(texts: frozenset[str]) -> frozenset[str]:
        return frozenset(canonical(rtype, _rdata(rtype, t)) for t in texts)

    if not 0 <= change.ttl <= 2**31 - 1:
        raise ProviderError(f"bad TTL {change.ttl} for {change.owner} {rtype}")
    return replace(
        change,
        rtype=rtype,
        add=canon(change.add),
        remove=canon(change.remove),
        expect=None if change.expect is None else canon(change.expect),
    )


class _Client:
    """All DNS traffic to one server; every failure leaves as one ProviderError."""

    def __init__(
        self, server: str, port: int, key_name: str, algorithm: str, secret: bytes,
        secret_text: str, timeout: float,
    ) -> None:
        self.server = server
        self.port = port
        self.where = f"{server}:{port}" if ":" not in server else f"[{server}]:{port}"
        self.key_label = key_name.rstrip(".") or key_name
        try:
            self._keyname = dns.name.from_text(key_name)
        except dns.exception.DNSException:
            raise ProviderError(f"bad TSIG key name {key_name!r}") from None
        self._keyring = {self._keyname: dns.tsig.Key(self._keyname, secret, ALGORITHMS[algorithm])}
        self._secrets = tuple(
            s for s in {secret_text.strip(), "".join(secret_text.split()), secret.hex()} if s
        )
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"_Client({self.where}, key {self.key_label})"

    def update_message(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(zone, keyring=self._keyring, keyname=self._keyname)

    def read(self, zone: dns.name.Name, owner: dns.name.Name, rtype: str, label: str) -> RRset:
        query = dns.message.make_query(owner, rtype)
        query.flags &= ~dns.flags.RD
        query.use_tsig(self._keyring, self._keyname)
        what = f"reading {label} {rtype}"
        response = self._exchange(query, what)
        rcode = response.rcode()
        if rcode == dns.rcode.REFUSED:
            self._fail(
                f"{self.where} refused to answer {label} {rtype} (REFUSED): is it the primary "
                f"for zone {zone} and does its allow-query permit this host?"
            )
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            self._fail(f"{self.where} answered {dns.rcode.to_text(rcode)} {what}"
                       + _RCODE_HINT.get(rcode, ""))
        if not response.flags & dns.flags.AA:
            self._fail(
                f"{self.where} is not authoritative for {label} (no AA flag): configure the "
                f"primary of zone {zone} as this provider's server"
            )
        rrset = response.get_rrset(response.answer, owner, dns.rdataclass.IN,
                                   dns.rdatatype.from_text(rtype))
        if not rrset:
            return RRset(label, rtype, None, frozenset())
        return RRset(label, rtype, rrset.ttl, frozenset(canonical(rtype, rd) for rd in rrset))

    def send_update(self, update: dns.update.UpdateMessage, zone: dns.name.Name, label: str,
                    rtype: str) -> None:
        response = self._exchange(update, f"updating {label} {rtype}")
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        if rcode in _PREREQ_FAILED:
            self._fail(
                f"{label} {rtype} changed on {self.where} between our read and our update "
                f"(prerequisite failed: {_PREREQ_FAILED[rcode]}): someone else edited it "
                "concurrently; nothing was changed, re-run to re-read"
            )
        if rcode == dns.rcode.REFUSED:
            self._fail(
                f"{self.where} refused the update of zone {zone} (REFUSED): key "
                f"{self.key_label} is not allowed to update it; check allow-update/update-policy "
                f"for key {self.key_label}"
            )
        if rcode == dns.rcode.NOTAUTH:
            self._fail(
                f"{self.where} is not authoritative for zone {zone} or did not accept key "
                f"{self.key_label} (NOTAUTH): check the zone, the server (it must be the primary) "
                "and tsig_key_name/tsig_secret_file"
            )
        if rcode == dns.rcode.NOTZONE:
            self._fail(f"{label} is outside zone {zone} (NOTZONE): check the endpoint's zone")
        self._fail(f"{self.where} answered {dns.rcode.to_text(rcode)} updating {label} {rtype} "
                   f"in zone {zone}" + _RCODE_HINT.get(rcode, ""))

    def _exchange(self, message: dns.message.Message, what: str) -> dns.message.Message:
        key = self.key_label
        try:
            return dns.query.tcp(message, self.server, timeout=self.timeout, port=self.port)
        except dns.exception.Timeout:
            self._fail(f"server {self.where} did not answer within {self.timeout:g}s {what}")
        except ConnectionRefusedError:
            self._fail(f"server {self.where} refused the TCP connection {what}: is the DNS "
                       "server running and listening on TCP at that address and port?")
        except dns.tsig.PeerBadKey:
            self._fail(f"{self.where} does not know TSIG key {key} (BADKEY) {what}: check "
                       "tsig_key_name and tsig_algorithm against the server's key statement")
        except dns.tsig.PeerBadSignature:
            self._fail(f"{self.where} rejected the signature of TSIG key {key} (BADSIG) {what}: "
                       "the secret or algorithm is wrong; check tsig_secret_file and "
                       "tsig_algorithm")
        except dns.tsig.PeerBadTime:
            self._fail(f"{self.where} rejected TSIG key {key} (BADTIME) {what}: the clocks of "
                       "this host and the server differ by more than 5 minutes")
        except dns.tsig.PeerError as exc:
            self._fail(f"{self.where} rejected TSIG key {key} ({type(exc).__name__}) {what}")
        except (dns.tsig.BadSignature, dns.message.UnknownTSIGKey, dns.tsig.BadAlgorithm):
            self._fail(f"the answer of {self.where} {what} failed TSIG verification with key "
                       f"{key}: check tsig_secret_file and tsig_algorithm")
        except dns.exception.DNSException as exc:
            self._fail(f"bad answer from {self.where} {what}: {exc}")
        except EOFError:
            self._fail(f"server {self.where} closed the connection without answering {what}")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            self._fail(f"cannot reach server {self.where} {what}: {reason}")

    def _fail(self, message: str) -> NoReturn:
        for secret in self._secrets:
            message = message.replace(secret, "<secret>")
        raise ProviderError(" ".join(message.split()))


_RCODE_HINT = {
    dns.rcode.SERVFAIL: " (SERVFAIL): the server could not do it; see its log (zone not loaded, "
    "journal not writable, DNSSEC signing failed)",
    dns.rcode.FORMERR: " (FORMERR): the server found the message malformed",
    dns.rcode.NOTIMP: " (NOTIMP): the server does not implement dynamic updates",
}
