"""Zone-file servers for the `zonefile` provider: a BIND and a Knot, each serving `zf.test.` from a
plain zone file that `$INCLUDE`s the file rollover owns, reloaded with `rndc reload` / `knotc
zone-reload` (not dynamic zones: the operator edits files).

BIND listens on `{net}.22` (rndc on port 953 of that address, key in the lab directory), Knot on
`{net}.23` (control socket in the lab directory).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from lab.dns import Answer, canonical
from lab.proc import Daemon, LabError, LoopbackAddresses, lab_net, wait_for

ZONE = "zf.test."
Kind = Literal["bind", "knot"]


@dataclass
class ZoneFileServer:
    kind: Kind
    address: str
    directory: Path
    reload_command: list[str]

    @property
    def zone_file(self) -> Path:
        return self.directory / "zf.test.db"

    @property
    def include_file(self) -> Path:
        return self.directory / "rollover-zf.test.zone"


def _zone_text(net: str, address: str, include: Path) -> str:
    return f"""$ORIGIN zf.test.
$TTL 2
@       SOA     ns.zf.test. hostmaster.zf.test. (
                1       ; serial, bumped by rollover
                5 2 3600 2 )
@       NS      ns.zf.test.
ns      A       {address}
mail    A       {net}.25
$INCLUDE {include}
"""


class ZoneFileLab:
    zone = ZONE

    def __init__(self, net: str | None = None) -> None:
        self.net = net or lab_net()
        self._workdir: Path | None = None
        self._daemons: list[Daemon] = []
        self._addresses = LoopbackAddresses()
        self.servers: dict[Kind, ZoneFileServer] = {}

    def __enter__(self) -> ZoneFileLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        named, knotd, knotc, rndc = (shutil.which(b, path=os.environ.get("PATH", "") +
                                                  ":/usr/sbin") for b in
                                     ("named", "knotd", "knotc", "rndc"))
        if not (named and knotd and knotc and rndc):
            raise LabError("zone-file lab needs named, rndc, knotd, knotc")
        self._workdir = wd = Path(tempfile.mkdtemp(prefix=f"rollover-zonefile-{self.net}-"))
        try:
            bind = ZoneFileServer("bind", f"{self.net}.22", wd / "bind", [])
            knot = ZoneFileServer("knot", f"{self.net}.23", wd / "knot", [])
            for server in (bind, knot):
                server.directory.mkdir(mode=0o700)
                server.include_file.write_text("; empty until rollover writes it\n")
                server.zone_file.write_text(_zone_text(self.net, server.address,
                                                       server.include_file))
                self._addresses.ensure(server.address)
            secret = base64.b64encode(secrets.token_bytes(32)).decode()
            key = f'key "rndc-key" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
            rndc_key = bind.directory / "rndc.key"
            rndc_key.write_text(key)
            rndc_key.chmod(0o600)
            (bind.directory / "named.conf").write_text(f"""{key}
options {{
    directory "{bind.directory}";
    pid-file "{bind.directory}/named.pid";
    session-keyfile "{bind.directory}/session.key";
    listen-on port 53 {{ {bind.address}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ 127.0.0.0/8; }};
    notify no;
}};
controls {{ inet {bind.address} port 953 allow {{ 127.0.0.0/8; }} keys {{ "rndc-key"; }}; }};
zone "zf.test" {{ type primary; file "{bind.zone_file}"; }};
""")
            bind.reload_command = [rndc, "-s", bind.address, "-p", "953", "-k", str(rndc_key),
                                   "reload", "{zone}"]
            sock = knot.directory / "knot.sock"
            (knot.directory / "knot.conf").write_text(f"""server:
    rundir: "{knot.directory}"
    listen: {knot.address}@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stdout
    any: info
database:
    storage: "{knot.directory}"
control:
    listen: "{sock}"
zone:
  - domain: zf.test.
    file: "{knot.zone_file}"
    storage: "{knot.directory}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
""")
            knot.reload_command = [knotc, "-s", str(sock), "-b", "-t", "10", "zone-reload",
                                   "{zone}"]
            self._daemons = [
                Daemon("zf-bind", [named, "-g", "-n", "1", "-c",
                                   str(bind.directory / "named.conf")],
                       wd / "bind.log", cwd=bind.directory),
                Daemon("zf-knot", [knotd, "-c", str(knot.directory / "knot.conf")],
                       wd / "knot.log", cwd=knot.directory),
            ]
            for d in self._daemons:
                d.start()
            self.servers = {"bind": bind, "knot": knot}
            for server in (bind, knot):
                wait_for(lambda s=server: self.query(s, ZONE, "SOA").rcode == "NOERROR",  # type: ignore[misc]
                         20.0, f"{server.kind} to serve {ZONE}")
                self._daemons[0 if server is bind else 1].check_alive()
            wait_for(lambda: subprocess.run([*bind.reload_command[:-2], "status"],
                                            capture_output=True).returncode == 0,
                     10.0, "rndc to reach BIND")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for d in self._daemons:
            d.stop()
        self._daemons = []
        self._addresses.remove_all()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def query(self, server: ZoneFileServer, owner: str, rtype: str) -> Answer:
        name = dns.name.from_text(owner)
        q = dns.message.make_query(name, rtype)
        q.flags &= ~dns.flags.RD
        r, _ = dns.query.udp_with_fallback(q, server.address, timeout=1.0)
        rrset = r.get_rrset(r.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
        records = frozenset(canonical(rd) for rd in rrset) if rrset else frozenset()
        return Answer(rcode=dns.rcode.to_text(r.rcode()), records=records,
                      ttl=rrset.ttl if rrset else None, aa=bool(r.flags & dns.flags.AA))

    def serial(self, server: ZoneFileServer) -> int:
        return int(next(iter(self.query(server, ZONE, "SOA").records)).split()[2])

    def meddle(self, server: ZoneFileServer, owner: str, rtype: str, ttl: int,
               rdatas: Iterable[str]) -> None:
        """Someone edits the include file by hand (appends lines), bumps the serial, reloads."""
        with server.include_file.open("a") as f:
            for rdata in rdatas:
                f.write(f"{owner} {ttl} IN {rtype} {rdata}\n")
        text = server.zone_file.read_text()
        text = re.sub(r"\(\s*(\d+)", lambda m: m.group(0).replace(
            m.group(1), str(int(m.group(1)) + 1)), text, count=1)
        server.zone_file.write_text(text)
        command = [part.format(zone="zf.test") for part in server.reload_command]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise LabError(f"reload failed: {done.stdout}{done.stderr}")
