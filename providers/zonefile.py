"""Zone files the operator keeps (`type: zonefile`): rollover owns ONE include file per zone.

    providers:
      files:
        type: zonefile
        include_file: /etc/bind/zones/rollover-{zone}.zone   # in the zone: $INCLUDE this file
        serial: increment          # increment | unixtime | date | keep (the signer does it)
        zone_file: /etc/bind/zones/{zone}.zone               # whose SOA serial is bumped
        reload_command: [rndc, reload, "{zone}"]             # or [knotc, zone-reload, "{zone}"]
        check_server: 192.0.2.10   # optional: wait until this server serves the change
        timeout: 30

`{zone}` stands for the zone name without the trailing dot. The include file holds only what
rollover manages (absolute owner names, so any $ORIGIN works) and is rewritten whole, atomically
(temp + fsync + rename), keeping its mode. The SOA serial of `zone_file` is bumped in place
(only the serial's digits change; comments and layout stay), unless `serial: keep` (a signer or
`serial-policy` does it). Then `reload_command` runs; when it fails, the previous include and
zone files are put back and the change fails with the command's last line of output.

No compare-and-swap: the files are read, changed and written by this host under rollover's state
lock. With `check_server`, the change is confirmed where it matters: the shared algorithm waits
until that server answers with exactly the new RRset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.zone

from rollover import fileio
from rollover.clock import SystemClock
from rollover.config.check import Section
from rollover.config.registry import ParseContext
from rollover.dns.rdata import canonical
from rollover.errors import ProviderError

from .base import ProviderBase, Submission, Supports, Target, canonical_text

log = logging.getLogger("rollover.providers.zonefile")

SERIAL_MODES = ("increment", "unixtime", "date", "keep")
HEADER = ("; Managed by rollover (provider {name}): rewritten whole on every change, do not edit.\n"
          "; $INCLUDE it in zone {zone}.\n")
_SOA = re.compile(r"\bSOA\s+\S+\s+\S+\s*\(?\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class ZoneFileOptions:
    include_file: str  # path pattern with {zone}
    reload_command: tuple[str, ...]
    serial: str = "increment"
    zone_file: str | None = None  # path pattern with {zone}
    check_server: str | None = None
    timeout: float = 30.0


def _pattern(sec: Section, key: str, base: Path, required: bool = False) -> str | None:
    value = sec.get_str(key, required=required)
    if value is None:
        return None
    try:
        value.format(zone="example.test")
    except (KeyError, IndexError, ValueError):
        sec.bad(key, f"{value!r} may use only {{zone}} as a placeholder")
        return None
    return str(base / value)


class ZoneFileProvider(ProviderBase):
    TYPE = "zonefile"
    SUPPORTS = Supports(rtypes=frozenset({"TLSA", "TXT"}), cas=False, needs_wait=False)
    OPTIONS = ("include_file", "serial", "zone_file", "reload_command", "check_server",
               "timeout")

    @classmethod
    def supports_for(cls, options: ZoneFileOptions) -> Supports:
        return Supports(rtypes=cls.SUPPORTS.rtypes, cas=False,
                        needs_wait=options.check_server is not None)

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> ZoneFileOptions | None:
        include = _pattern(sec, "include_file", ctx.base, required=True)
        zone_file = _pattern(sec, "zone_file", ctx.base)
        serial = sec.get_str("serial", "increment") or "increment"
        if serial not in SERIAL_MODES:
            sec.bad("serial", f"unknown serial mode {serial!r} (allowed: "
                    f"{' | '.join(SERIAL_MODES)})")
        elif serial != "keep" and zone_file is None and not sec.has("zone_file"):
            sec.bad("serial", f"serial: {serial} needs zone_file (the file with the SOA); "
                    "use serial: keep when a signer or the server bumps it")
        command = sec.get_command("reload_command")
        if command is None:
            sec.missing("reload_command")
        elif not command:
            sec.bad("reload_command", "must not be empty")
        check = sec.get_ip("check_server")
        timeout = sec.get_float("timeout", 30.0, hi=3600)
        if include is None or not command:
            return None
        return ZoneFileOptions(include, tuple(command), serial, zone_file, check, timeout)

    @classmethod
    def from_config(cls, name: str, options: ZoneFileOptions) -> ZoneFileProvider:
        return cls(name, options)

    def __init__(self, name: str, options: ZoneFileOptions) -> None:
        self.name = name
        self.options = options
        self._supports = self.supports_for(options)

    @property
    def supports(self) -> Supports:
        return self._supports

    def __repr__(self) -> str:
        return f"ZoneFileProvider(name={self.name!r}, include_file={self.options.include_file!r})"

    # -- files ---------------------------------------------------------------------------------

    @staticmethod
    def _zone_text(zone: str) -> str:
        return zone.rstrip(".") or "."

    def include_path(self, zone: str) -> Path:
        return Path(self.options.include_file.format(zone=self._zone_text(zone)))

    def zone_path(self, zone: str) -> Path | None:
        pattern = self.options.zone_file
        return Path(pattern.format(zone=self._zone_text(zone))) if pattern else None

    def _records(self, t: Target) -> dict[tuple[str, str], tuple[int, set[str]]]:
        """(owner, rtype) -> (ttl, canonical rdatas) of the include file (absent: empty)."""
        path = self.include_path(t.zone)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ProviderError(f"cannot read {path}: {exc.strerror}") from None
        try:
            zone = dns.zone.from_text(text, origin=t.zone, relativize=False, check_origin=False)
        except (dns.exception.DNSException, ValueError) as exc:
            raise ProviderError(f"{path} does not parse as zone file text: {exc}") from None
        out: dict[tuple[str, str], tuple[int, set[str]]] = {}
        for name, rdataset in zone.iterate_rdatasets():
            rtype = dns.rdatatype.to_text(rdataset.rdtype)
            key = (name.to_text().lower(), rtype)
            out[key] = (rdataset.ttl, {canonical(rd) for rd in rdataset})
        return out

    def _render(self, zone: str, records: dict[tuple[str, str], tuple[int, set[str]]]) -> bytes:
        lines = [HEADER.format(name=self.name, zone=zone)]
        for (owner, rtype), (ttl, rdatas) in sorted(records.items()):
            lines.extend(f"{owner} {ttl} IN {rtype} {rdata}\n" for rdata in sorted(rdatas))
        return "".join(lines).encode()

    # -- ProviderBase --------------------------------------------------------------------------

    def _read(self, t: Target) -> tuple[int | None, Iterable[str]]:
        ttl, rdatas = self._records(t).get((t.owner, t.rtype), (None, set()))
        return ttl, rdatas

    def _submit(self, sub: Submission) -> Submission:
        t = sub.target
        records = self._records(t)
        if sub.after:
            records[(t.owner, t.rtype)] = (sub.ttl, set(sub.after))
        else:
            records.pop((t.owner, t.rtype), None)
        include = self.include_path(t.zone)
        writes = [(include, self._render(t.zone, records))]
        zone_path = self.zone_path(t.zone)
        if self.options.serial != "keep":
            if zone_path is None:
                raise ProviderError(f"serial: {self.options.serial} needs zone_file")
            writes.append((zone_path, self._bumped(zone_path)))
        previous = [(path, _read_or_none(path)) for path, _ in writes]
        for path, data in writes:
            _write_keeping_mode(path, data)
        failure = self._reload(t.zone)
        if failure is not None:
            for path, old in previous:
                with contextlib.suppress(OSError):
                    if old is None:
                        path.unlink()
                    else:
                        _write_keeping_mode(path, old)
            raise ProviderError(f"{failure}; put the previous {include.name} back")
        return sub

    def _wait(self, token: object, timeout: float) -> None:
        """Until `check_server` answers with exactly the submitted RRset (needs_wait is set
        only when check_server is given)."""
        assert isinstance(token, Submission)
        server = self.options.check_server
        assert server is not None
        t = token.target
        clock = SystemClock()
        deadline = clock.monotonic() + timeout
        seen = "nothing"
        while True:
            try:
                ttl, got = _query(server, t)
                if got == token.after and (not got or ttl == token.ttl):
                    return
                seen = f"{len(got)} record(s) ttl {ttl}"
            except (dns.exception.DNSException, OSError) as exc:
                seen = f"no answer ({type(exc).__name__})"
            if clock.monotonic() >= deadline:
                raise ProviderError(f"{server} still serves {seen} for {t.owner} {t.rtype} "
                                    f"{timeout:g}s after the reload (is the zone reloaded, "
                                    "does it $INCLUDE the file?)")
            clock.sleep(0.05)

    # -- serial and reload ---------------------------------------------------------------------

    def _bumped(self, path: Path) -> bytes:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProviderError(f"cannot read zone file {path}: {exc.strerror}") from None
        blank = re.sub(r";[^\n]*", lambda m: " " * len(m.group(0)), text)
        match = _SOA.search(blank)
        if match is None:
            raise ProviderError(f"no SOA record with a serial found in {path}", permanent=True)
        old = int(match.group(1))
        new = next_serial(old, self.options.serial, SystemClock().now())
        log.info("%s: SOA serial of %s %d -> %d", self.name, path, old, new)
        return (text[: match.start(1)] + str(new) + text[match.end(1):]).encode()

    def _reload(self, zone: str) -> str | None:
        command = [part.format(zone=self._zone_text(zone)) for part in self.options.reload_command]
        shown = " ".join(command)
        try:
            proc = subprocess.run(command, capture_output=True, text=True,
                                  timeout=self.options.timeout)
        except FileNotFoundError:
            return f"`{shown}` failed: {command[0]}: command not found"
        except subprocess.TimeoutExpired:
            return f"`{shown}` did not finish within {self.options.timeout:g}s"
        except OSError as exc:
            return f"`{shown}` failed: {exc.strerror}"
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            return f"`{shown}` failed (exit {proc.returncode})" + (f": {lines[-1]}"
                                                                  if lines else "")
        return None


def next_serial(old: int, mode: str, now: datetime) -> int:
    """The SOA serial after `old` (RFC 1982: at most 2^31 - 1 ahead, never 0)."""
    if mode == "unixtime":
        new = max(old + 1, int(now.timestamp()))
    elif mode == "date":
        today = int(now.strftime("%Y%m%d")) * 100
        new = old + 1 if old >= today else today
    else:
        new = old + 1
    new %= 2**32
    return new or 1


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProviderError(f"cannot read {path}: {exc.strerror}") from None


def _write_keeping_mode(path: Path, data: bytes) -> None:
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644  # zone data is public
    try:
        fileio.atomic_write(path, data, mode)
    except OSError as exc:
        raise ProviderError(f"cannot write {path}: {exc.strerror or exc}") from None


def _query(server: str, t: Target) -> tuple[int | None, frozenset[str]]:
    name = dns.name.from_text(t.owner)
    q = dns.message.make_query(name, t.rtype)
    q.flags &= ~dns.flags.RD
    r, _ = dns.query.udp_with_fallback(q, server, timeout=1.0)
    rrset = r.get_rrset(r.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(t.rtype))
    if not rrset:
        return None, frozenset()
    return rrset.ttl, frozenset(canonical_text(t.rtype, rd.to_text()) for rd in rrset)
