"""PowerDNS Authoritative (Debian's pdns-server + pdns-backend-sqlite3) as a lab primary.

One `pdns_server` in the foreground on `{net}.21`: DNS on port 53, the HTTP API on port 8081
(`X-API-Key`, the key in a 0600 file inside the lab directory). It serves the Native zone
`pdns.test.` (NS ns1.pdns.test. -> {net}.21, mail -> {net}.25), the Master zone `pdnsm.test.`
(NS ns1 -> {net}.21 and ns2 -> {net}.24: `start_secondary()` runs a BIND secondary there, fed by
NOTIFY + AXFR from pdns_server) and, for refusal tests, a Slave zone `slave.pdns.test.` whose
primary does not exist.

    with PdnsLab() as lab:
        lab.meddle("_25._tcp.mail.pdns.test.", "TLSA", 300, ["3 1 1 " + "ab" * 32])
        lab.query("_25._tcp.mail.pdns.test.", "TLSA").records

`query` asks over DNS (what resolvers get); `api_rrset` and `meddle` use the raw HTTP API, never
the provider under test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from lab.dns import Answer, canonical
from lab.proc import Daemon, LabError, LoopbackAddresses, lab_net, tcp_open, wait_for

PDNS_SERVER = "/usr/sbin/pdns_server"
SCHEMA = Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql")
ZONE = "pdns.test."
MASTER_ZONE = "pdnsm.test."
SLAVE_ZONE = "slave.pdns.test."
API_PORT = 8081


class PdnsLab:
    zone = ZONE
    master_zone = MASTER_ZONE
    slave_zone = SLAVE_ZONE

    def __init__(self, net: str | None = None, suffix: int = 21) -> None:
        self.net = net or lab_net()
        self.address = f"{self.net}.{suffix}"
        self.api_port = API_PORT
        self.api_url = f"http://{self.address}:{API_PORT}"
        self.api_key = secrets.token_urlsafe(24)
        self._workdir: Path | None = None
        self.secondary_address = f"{self.net}.24"
        self._daemon: Daemon | None = None
        self._secondary: Daemon | None = None
        self._addresses = LoopbackAddresses()

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LabError("PowerDNS lab not started")
        return self._workdir

    @property
    def api_key_file(self) -> Path:
        return self.workdir / "api.key"

    @property
    def log(self) -> Path:
        return self.workdir / "pdns.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PdnsLab:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if not Path(PDNS_SERVER).exists():
            raise LabError(f"{PDNS_SERVER} missing (run tests/lab/install.sh)")
        self._workdir = Path(tempfile.mkdtemp(prefix=f"rollover-pdns-{self.net}-"))
        try:
            self._write_files()
            self._addresses.ensure(self.address)
            if tcp_open(self.address, 53) or tcp_open(self.address, API_PORT):
                raise LabError(f"{self.address} is busy; another lab on this net? "
                               "set ROLLOVER_LAB_NET")
            self._daemon = Daemon("pdns", [PDNS_SERVER, f"--config-dir={self.workdir}"],
                                  self.log, cwd=self.workdir)
            self._daemon.start()

            def up() -> bool:
                assert self._daemon is not None
                self._daemon.check_alive()
                return self.api("GET", "/api/v1/servers/localhost") is not None

            wait_for(up, 20.0, f"pdns_server API on {self.api_url}")
            self._create_zones()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._secondary is not None:
            self._secondary.stop()
            self._secondary = None
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
        self._addresses.remove_all()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _write_files(self) -> None:
        wd = self.workdir
        os.chmod(wd, 0o700)
        db = wd / "pdns.sqlite3"
        with sqlite3.connect(db) as conn:
            conn.executescript(SCHEMA.read_text())
        fd = os.open(self.api_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.api_key + "\n")
        conf = f"""\
launch=gsqlite3
gsqlite3-database={db}
gsqlite3-dnssec=no
local-address={self.address}
local-port=53
query-local-address={self.address}
api=yes
api-key={self.api_key}
webserver=yes
webserver-address={self.address}
webserver-port={API_PORT}
webserver-allow-from=127.0.0.0/8
daemon=no
guardian=no
disable-syslog=yes
write-pid=no
socket-dir={wd}
loglevel=4
primary=yes
allow-axfr-ips=127.0.0.0/8
security-poll-suffix=
default-soa-content=ns1.{ZONE} hostmaster.{ZONE} 0 10800 3600 604800 2
"""
        fd = os.open(wd / "pdns.conf", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(conf)

    def _create_zones(self) -> None:
        self.api("POST", "/api/v1/servers/localhost/zones", {
            "name": ZONE, "kind": "Native", "nameservers": [f"ns1.{ZONE}"],
            "soa_edit_api": "DEFAULT",
            "rrsets": [
                _rrset(f"ns1.{ZONE}", "A", 2, [self.address]),
                _rrset(f"mail.{ZONE}", "A", 2, [f"{self.net}.25"]),
            ],
        })
        self.api("POST", "/api/v1/servers/localhost/zones", {
            "name": MASTER_ZONE, "kind": "Master",
            "nameservers": [f"ns1.{MASTER_ZONE}", f"ns2.{MASTER_ZONE}"],
            "soa_edit_api": "DEFAULT",
            "rrsets": [
                _rrset(f"ns1.{MASTER_ZONE}", "A", 2, [self.address]),
                _rrset(f"ns2.{MASTER_ZONE}", "A", 2, [self.secondary_address]),
            ],
        })
        self.api("POST", "/api/v1/servers/localhost/zones", {
            "name": SLAVE_ZONE, "kind": "Slave", "masters": [f"{self.net}.99"],
        })

    # -- raw API (independent of the provider under test) ------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method, headers={
            "X-API-Key": self.api_key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5.0) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise LabError(f"pdns API {method} {path}: {exc.code} {exc.read()[:300]!r}") from None
        return json.loads(raw) if raw else {}

    def api_rrset(self, owner: str, rtype: str, zone: str = ZONE) -> tuple[int | None, set[str]]:
        doc = self.api("GET", f"/api/v1/servers/localhost/zones/{zone}")
        for rrset in doc["rrsets"]:
            if rrset["name"] == owner and rrset["type"] == rtype:
                return rrset["ttl"], {r["content"] for r in rrset["records"]}
        return None, set()

    def meddle(self, owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
        """Someone else adds `rdatas` to the RRset, straight through the API."""
        _, current = self.api_rrset(owner, rtype)
        records = sorted(current | set(rdatas))
        self.api("PATCH", f"/api/v1/servers/localhost/zones/{ZONE}", {"rrsets": [
            {**_rrset(owner, rtype, ttl, records), "changetype": "REPLACE"}]})

    def set_rrset(self, owner: str, rtype: str, ttl: int, rdatas: Iterable[str],
                  zone: str = ZONE) -> None:
        self.api("PATCH", f"/api/v1/servers/localhost/zones/{zone}", {"rrsets": [
            {**_rrset(owner, rtype, ttl, sorted(rdatas)), "changetype": "REPLACE"}]})

    def serial(self) -> int:
        records = self.query(ZONE, "SOA").records
        if len(records) != 1:
            raise LabError(f"no SOA from pdns at {self.address}")
        return int(next(iter(records)).split()[2])

    # -- the BIND secondary of pdnsm.test. ----------------------------------------------------

    def start_secondary(self) -> None:
        """A BIND secondary of pdnsm.test. on {net}.24 (NOTIFY + AXFR from pdns_server)."""
        named = shutil.which("named", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if named is None:
            raise LabError("named missing (run tests/lab/install.sh)")
        wd = self.workdir / "ns2"
        wd.mkdir(mode=0o700)
        (wd / "named.conf").write_text(f"""options {{
    directory "{wd}";
    pid-file "{wd}/named.pid";
    session-keyfile "{wd}/session.key";
    listen-on port 53 {{ {self.secondary_address}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    transfer-source {self.secondary_address};
    notify-source {self.secondary_address};
    query-source address {self.secondary_address};
    allow-query {{ 127.0.0.0/8; }};
    min-refresh-time 1;
    min-retry-time 1;
    max-retry-time 2;
}};
controls {{ }};
zone "{MASTER_ZONE.rstrip('.')}" {{
    type secondary;
    primaries {{ {self.address}; }};
    file "pdnsm.test.db";
    notify no;
}};
""")
        self._addresses.ensure(self.secondary_address)
        self._secondary = Daemon("pdns-ns2", [named, "-g", "-n", "1", "-c",
                                              str(wd / "named.conf")],
                                 self.workdir / "ns2.log", cwd=wd)
        self._secondary.start()
        daemon = self._secondary

        def serving() -> bool:
            daemon.check_alive()
            return self.query(MASTER_ZONE, "SOA", server=self.secondary_address).aa

        wait_for(serving, 20.0, f"BIND secondary of {MASTER_ZONE} on {self.secondary_address}")

    # -- DNS ---------------------------------------------------------------------------------

    def query(self, owner: str, rtype: str, timeout: float = 2.0,
              server: str | None = None) -> Answer:
        name = dns.name.from_text(owner)
        q = dns.message.make_query(name, rtype)
        q.flags &= ~dns.flags.RD
        r, _ = dns.query.udp_with_fallback(q, server or self.address, timeout=timeout)
        rrset = r.get_rrset(r.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
        records = frozenset(canonical(rd) for rd in rrset) if rrset else frozenset()
        return Answer(rcode=dns.rcode.to_text(r.rcode()), records=records,
                      ttl=rrset.ttl if rrset else None, aa=bool(r.flags & dns.flags.AA))


def _rrset(name: str, rtype: str, ttl: int, contents: Iterable[str]) -> dict[str, Any]:
    return {"name": name, "type": rtype, "ttl": ttl,
            "records": [{"content": c, "disabled": False} for c in contents]}
