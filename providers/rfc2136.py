"""RFC 2136 dynamic updates with TSIG (BIND, Knot, PowerDNS, ... as the primary).

One private client class (`_Client`) owns every byte sent to the server and turns every failure
into one `ProviderError` with a message an operator can act on. The TSIG secret lives only in the
keyring: never in repr, logs or messages (`_Client._fail` scrubs it as a last line of defence).

Reads go straight to the primary over TCP, TSIG-signed, RD=0, and must be authoritative (AA).
The shared algorithm (`ProviderBase.apply`) reads, checks and re-reads; `_submit` sends ONE
update message whose prerequisites make it compare-and-swap (RFC 2136 section 2.4):

- RRset was empty  -> "RRset does not exist" (absent(owner, rtype));
- RRset had rdatas -> "RRset exists (value dependent)": the prerequisite RRset must equal the
  server's RRset exactly (RFC 2136 3.2.5), so an rdata added or removed by someone else between
  our read and our update makes the server answer NXRRSET and change nothing.

The update deletes only the removed rdatas and adds the added rdatas with the change's TTL. The
TTL is a property of the whole RRset: when it differs from what the primary serves, the update
replaces the whole RRset (same rdatas, new TTL) in the same message. A change that is already in
effect sends nothing (the base class skips it).

The config section (`type: rfc2136`) is checked here, by `RFC2136Provider.parse_options`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

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
import dns.tsig
import dns.update

from rollover import fileio
from rollover.config.check import Section
from rollover.config.registry import ParseContext
from rollover.display import shown
from rollover.dns.rdata import canonical
from rollover.errors import ProviderError
from rollover.model import RRset

from .base import ANY_TYPE, ProviderBase, Submission, Supports, Target, parse_rdata

log = logging.getLogger(__name__)

ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}
DEFAULT_ALGORITHM = "hmac-sha256"
BATCH_OWNERS = 100  # owners per UPDATE message (RFC 2136: one zone, at most 64 KiB over TCP)
MAX_UPDATE_BYTES = 60_000
READ_CONNECTIONS = 8  # TCP reads in parallel when many RRsets are read at once
TSIG_WEAK = ("hmac-sha1",)
TSIG_REFUSED = ("hmac-md5", "hmac-md5.sig-alg.reg.int")
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


@dataclass(frozen=True)
class RFC2136Options:
    """The checked `type: rfc2136` section. The secret stays in its file until the provider is
    built (`read_secret`)."""

    server: str  # IP address of the primary
    port: int = 53
    tsig_key_name: str | None = None
    tsig_algorithm: str = DEFAULT_ALGORITHM
    tsig_secret_file: Path | None = None
    timeout: float = 5.0

    def read_secret(self) -> str | None:
        """The base64 TSIG secret, read now (never stored in the config, never printed)."""
        if self.tsig_secret_file is None:
            return None
        return fileio.read_secret(self.tsig_secret_file, "TSIG secret file", ProviderError)


def _tsig_algorithm(sec: Section) -> str:
    value = sec.get_str("tsig_algorithm")
    if value is None:
        return DEFAULT_ALGORITHM
    alg = value.lower().rstrip(".")
    if alg in TSIG_WEAK:
        sec.warn("tsig_algorithm", f"{alg} is weak; prefer hmac-sha256")
        return alg
    if alg in ALGORITHMS:
        return alg
    if alg in TSIG_REFUSED:
        sec.bad("tsig_algorithm", "hmac-md5 is broken and refused; use hmac-sha256")
    else:
        allowed = ", ".join(a for a in ALGORITHMS if a not in TSIG_WEAK) + ", " + \
            ", ".join(TSIG_WEAK)
        sec.bad("tsig_algorithm", f"unknown TSIG algorithm {shown(value)} (allowed: {allowed})")
    return DEFAULT_ALGORITHM


class RFC2136Provider(ProviderBase):
    """Writes through RFC 2136 updates to one primary. `name` is the config key."""

    TYPE = "rfc2136"
    SUPPORTS = Supports(rtypes=frozenset({ANY_TYPE}), cas=True, needs_wait=False)
    OPTIONS = ("server", "port", "tsig_key_name", "tsig_algorithm", "tsig_secret_file", "timeout")

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
    def parse_options(cls, sec: Section, ctx: ParseContext) -> RFC2136Options | None:
        server = sec.get_ip("server", required=True)
        port = sec.get_int("port", 53, lo=1, hi=65535) or 53
        key_name = sec.get_str("tsig_key_name")
        if key_name is not None and (len(key_name.split()) != 1 or len(key_name) > 253):
            sec.bad("tsig_key_name", f"{shown(key_name)} is not a TSIG key name")
        algorithm = _tsig_algorithm(sec)
        secret = ctx.secret_file(sec, "tsig_secret_file", "TSIG secret file", False)
        timeout = sec.get_float("timeout", 5.0, hi=300)
        if sec.has("tsig_key_name") != sec.has("tsig_secret_file"):
            given, other = (
                ("tsig_key_name", "tsig_secret_file")
                if sec.has("tsig_key_name")
                else ("tsig_secret_file", "tsig_key_name")
            )
            sec.bad(given, f"needs {other} as well (TSIG key name and secret go together)")
        if server is None:
            return None
        return RFC2136Options(server=server, port=port, tsig_key_name=key_name,
                              tsig_algorithm=algorithm, tsig_secret_file=secret, timeout=timeout)

    @classmethod
    def from_config(cls, name: str, options: RFC2136Options) -> RFC2136Provider:
        secret = options.read_secret()
        if secret is None or options.tsig_key_name is None:
            raise ProviderError("rfc2136 needs tsig_key_name and tsig_secret_file (unsigned "
                                "updates are not supported)")
        return cls(name, options.server, options.port, tsig_key_name=options.tsig_key_name,
                   tsig_secret=secret, tsig_algorithm=options.tsig_algorithm,
                   timeout=options.timeout)

    def __repr__(self) -> str:
        return (
            f"RFC2136Provider(name={self.name!r}, server={self.server!r}, port={self.port}, "
            f"tsig_key_name={self.tsig_key_name!r}, tsig_algorithm={self.tsig_algorithm!r})"
        )

    __str__ = __repr__

    def _secrets(self) -> Iterable[str]:
        return self._client._secrets

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        zone, owner = dns.name.from_text(t.zone), dns.name.from_text(t.owner)
        rrset = self._client.read(zone, owner, t.rtype, t.owner)
        return rrset.ttl, rrset.rdatas

    def _submit(self, sub: Submission) -> None:
        t = sub.target
        zone = dns.name.from_text(t.zone)
        update = self._client.update_message(zone)
        _add_to_update(update, sub)
        self._client.send_update(update, zone, t.owner, t.rtype)

    def _read_many(self, targets: Sequence[Target]
                   ) -> list[tuple[int | None, Iterable[str]] | ProviderError]:
        """Reads over READ_CONNECTIONS TCP connections at once."""
        def one(t: Target) -> tuple[int | None, Iterable[str]] | ProviderError:
            try:
                return self._read(t)
            except ProviderError as exc:
                return exc

        if len(targets) <= 1:
            return [one(t) for t in targets]
        with ThreadPoolExecutor(max_workers=min(READ_CONNECTIONS, len(targets))) as pool:
            return list(pool.map(one, targets))

    def _submit_many(self, subs: Sequence[Submission]) -> list[object]:
        """One UPDATE message per zone for up to BATCH_OWNERS owners (and < 64 KiB): all
        prerequisites and changes of the batch, applied by the server all or nothing. A batch
        the server refuses on a prerequisite is sent again owner by owner, so each owner gets
        its own verdict (someone else edited one of them)."""
        out: list[object] = [None] * len(subs)
        by_zone: dict[str, list[int]] = {}
        for i, sub in enumerate(subs):
            by_zone.setdefault(sub.target.zone, []).append(i)
        for zone_text, members in by_zone.items():
            for start in range(0, len(members), BATCH_OWNERS):
                self._send_batch(zone_text, members[start:start + BATCH_OWNERS], subs, out)
        return out

    def _send_batch(self, zone_text: str, members: list[int], subs: Sequence[Submission],
                    out: list[object]) -> None:
        if len(members) == 1:
            out[members[0]] = self._submit_one(subs[members[0]])
            return
        zone = dns.name.from_text(zone_text)
        update = self._client.update_message(zone)
        for i in members:
            _add_to_update(update, subs[i])
        if len(update.to_wire()) > MAX_UPDATE_BYTES:  # too big for one message: halve it
            half = len(members) // 2
            self._send_batch(zone_text, members[:half], subs, out)
            self._send_batch(zone_text, members[half:], subs, out)
            return
        label = f"{len(members)} owners"
        try:
            self._client.send_update(update, zone, label, subs[members[0]].target.rtype)
        except _PrerequisiteFailed:
            for i in members:  # nothing was changed: find out whose RRset moved
                out[i] = self._submit_one(subs[i])
            return
        except ProviderError as exc:
            for i in members:
                out[i] = exc
            return
        log.info("%s: one update for %d owners in zone %s", self.name, len(members), zone_text)

    def _submit_one(self, sub: Submission) -> object:
        try:
            self._submit(sub)
        except ProviderError as exc:
            return exc
        return None


def _add_to_update(update: dns.update.UpdateMessage, sub: Submission) -> None:
    """The prerequisite (the RRset is still exactly what we read) and the change of `sub`."""
    t = sub.target
    owner, rtype = dns.name.from_text(t.owner), t.rtype
    if sub.before.rdatas:
        update.present(owner, _rdataset(rtype, sub.before.rdatas))
    else:
        update.absent(owner, rtype)
    if sub.ttl_changes:
        update.delete(owner, rtype)
        update.add(owner, _rdataset(rtype, sub.after, sub.ttl))
    else:
        for text in sorted(sub.remove):
            update.delete(owner, parse_rdata(rtype, text, t.zone))
        if sub.add:
            update.add(owner, _rdataset(rtype, sub.add, sub.ttl))


class _PrerequisiteFailed(ProviderError):
    """The server refused an update on a prerequisite: nothing of it was applied."""


def _rdataset(rtype: str, texts: Iterable[str], ttl: int = 0) -> dns.rdataset.Rdataset:
    """Prerequisite RRsets carry TTL 0 (RFC 2136 2.4); update RRsets carry the real TTL."""
    rds = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), ttl=ttl)
    for text in sorted(texts):
        rds.add(parse_rdata(rtype, text))
    return rds


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
        return RRset(label, rtype, rrset.ttl, frozenset(canonical(rd) for rd in rrset))

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
                "concurrently; nothing was changed, re-run to re-read", kind=_PrerequisiteFailed
            )
        if rcode == dns.rcode.REFUSED:
            self._fail(
                f"{self.where} refused the update of zone {zone} (REFUSED): key "
                f"{self.key_label} is not allowed to update it; check allow-update/update-policy "
                f"for key {self.key_label}", permanent=True
            )
        if rcode == dns.rcode.NOTAUTH:
            self._fail(
                f"{self.where} is not authoritative for zone {zone} or did not accept key "
                f"{self.key_label} (NOTAUTH): check the zone, the server (it must be the primary) "
                "and tsig_key_name/tsig_secret_file", permanent=True
            )
        if rcode == dns.rcode.NOTZONE:
            self._fail(f"{label} is outside zone {zone} (NOTZONE): check the endpoint's zone",
                       permanent=True)
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
                       "tsig_key_name and tsig_algorithm against the server's key statement",
                       permanent=True)
        except dns.tsig.PeerBadSignature:
            self._fail(f"{self.where} rejected the signature of TSIG key {key} (BADSIG) {what}: "
                       "the secret or algorithm is wrong; check tsig_secret_file and "
                       "tsig_algorithm", permanent=True)
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

    def _fail(self, message: str, *, permanent: bool = False,
              kind: type[ProviderError] = ProviderError) -> NoReturn:
        for secret in self._secrets:
            message = message.replace(secret, "<secret>")
        raise kind(" ".join(message.split()), permanent=permanent)


_RCODE_HINT = {
    dns.rcode.SERVFAIL: " (SERVFAIL): the server could not do it; see its log (zone not loaded, "
    "journal not writable, DNSSEC signing failed)",
    dns.rcode.FORMERR: " (FORMERR): the server found the message malformed",
    dns.rcode.NOTIMP: " (NOTIMP): the server does not implement dynamic updates",
}
