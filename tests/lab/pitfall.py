"""A real `_tcp.<host>` NXDOMAIN pitfall: PowerDNS serving an NSEC3 opt-out signed zone whose TLSA
record was added to the database without `pdnsutil rectify-zone`, so the empty non-terminal
`_tcp.<host>` gets no NSEC3 record and PowerDNS answers NXDOMAIN for it (with an NSEC3 proof),
while `_25._tcp.<host>` itself answers NOERROR with its signed TLSA record.

One `pdns_server` on `{net}.40` for the zone `pit.test.` (ns1.pit.test. -> {net}.40).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype

from lab.pdns import PDNS_SERVER, SCHEMA
from lab.proc import Daemon, LabError, LoopbackAddresses, lab_net, wait_for

ZONE = "pit.test."
PDNSUTIL = "/usr/bin/pdnsutil"


class PitfallZone:
    def __init__(self, net: str | None = None, suffix: int = 40) -> None:
        self.net = net or lab_net()
        self.address = f"{self.net}.{suffix}"
        self.zone = ZONE
        self._workdir: Path | None = None
        self._daemon: Daemon | None = None
        self._addresses = LoopbackAddresses()

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LabError("pitfall zone not started")
        return self._workdir

    def _util(self, *args: str) -> None:
        proc = subprocess.run([PDNSUTIL, f"--config-dir={self.workdir}", *args],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise LabError(f"pdnsutil {args[0]} failed: {(proc.stderr or proc.stdout)[-300:]}")

    def start(self, hosts: dict[str, str], tlsa: dict[str, Iterable[str]]) -> None:
        """`hosts`: relative name -> address; `tlsa`: relative owner -> rdata texts, inserted
        after the rectify (the mistake)."""
        for needed in (Path(PDNS_SERVER), Path(PDNSUTIL), SCHEMA):
            if not needed.exists():
                raise LabError(f"{needed} missing (run tests/lab/install.sh)")
        self._workdir = Path(tempfile.mkdtemp(prefix=f"rollover-pit-{self.net}-"))
        try:
            wd = self.workdir
            db = wd / "pdns.sqlite3"
            with sqlite3.connect(db) as conn:
                conn.executescript(SCHEMA.read_text())
            (wd / "pdns.conf").write_text(
                f"launch=gsqlite3\ngsqlite3-database={db}\ngsqlite3-dnssec=yes\n"
                f"local-address={self.address}\nlocal-port=53\ndaemon=no\nguardian=no\n"
                f"disable-syslog=yes\nwrite-pid=no\nsocket-dir={wd}\nloglevel=4\n"
                "security-poll-suffix=\nwebserver=no\napi=no\n")
            self._util("create-zone", ZONE, f"ns1.{ZONE}")
            self._util("add-record", ZONE, "ns1", "A", "2", self.address)
            for name, address in hosts.items():
                self._util("add-record", ZONE, name, "A", "2", address)
            self._util("secure-zone", ZONE)
            self._util("set-nsec3", ZONE, "1 1 0 -")  # opt-out
            self._util("rectify-zone", ZONE)
            with sqlite3.connect(db) as conn:
                (domain_id,) = conn.execute("SELECT id FROM domains").fetchone()
                for owner, rdatas in tlsa.items():
                    for rdata in rdatas:
                        conn.execute(
                            "INSERT INTO records (domain_id, name, type, content, ttl, prio, "
                            "disabled, auth) VALUES (?, ?, 'TLSA', ?, 2, 0, 0, 1)",
                            (domain_id, f"{owner}.{ZONE.rstrip('.')}", rdata))
            self._addresses.ensure(self.address)
            self._daemon = Daemon("pdns-pit", [PDNS_SERVER, f"--config-dir={wd}"],
                                  wd / "pdns.log", cwd=wd)
            self._daemon.start()

            def up() -> bool:
                assert self._daemon is not None
                self._daemon.check_alive()
                return bool(self.dnskey())

            wait_for(up, 20.0, f"pdns_server for {ZONE} on {self.address}")
        except BaseException:
            self.stop()
            raise

    def dnskey(self) -> list[dns.rdata.Rdata]:
        q = dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True)
        q.flags &= ~dns.flags.RD
        try:
            r, _ = dns.query.udp_with_fallback(q, self.address, timeout=0.5)
        except (OSError, dns.exception.DNSException):
            return []
        rrset = r.get_rrset(r.answer, dns.name.from_text(ZONE), dns.rdataclass.IN,
                            dns.rdatatype.DNSKEY)
        return list(rrset) if rrset else []

    def ds(self) -> list[str]:
        return sorted(str(dns.dnssec.make_ds(ZONE, k, "SHA256"))
                      for k in self.dnskey() if k.flags & 1)

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
        self._addresses.remove_all()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
