"""The DNS half of the test lab: a DNSSEC-signing BIND primary, a BIND and a Knot secondary.

Everything lives in one temp directory; the daemons are plain foreground children (see
`lab.proc.Daemon`) on `{net}.11` (ns1, BIND primary), `{net}.12` (ns2, BIND secondary) and
`{net}.13` (ns3, Knot secondary), port 53. The primary also serves the parent zone `test.` on
`{net}.10` (a separate BIND view, signed too) with a delegation of `example.test.` to ns1..ns3;
the delegation is insecure (no DS) until `secure_delegation()` publishes the DS, after which
`test.`'s DNSKEY (`parent_anchor_text()`) is a trust anchor for the lab, standing in for the
root.

    with DnsLab() as lab:
        lab.update("_25._tcp.mail", "TLSA", 2, ["3 1 1 " + "ab" * 32])
        lab.wait_all("_25._tcp.mail", "TLSA", ["3 1 1 " + "ab" * 32])

Owner names: absolute with a trailing dot, or relative to the zone ("mail", "_25._tcp.mail").
The TSIG secret is written only to 0600 files inside the lab directory, never to logs.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.tlsabase
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update

from rollover.dns import rdata as rdata_form
from rollover.dns.rdata import canonical

from lab.dns_config import (
    PARENT_KEY,
    bind_primary_conf,
    bind_secondary_conf,
    knot_conf,
    parent_zone,
    zone_file,
)
from lab.proc import Daemon, LabError, LoopbackAddresses, lab_net, wait_for

ServerKind = Literal["bind-primary", "bind-secondary", "knot-secondary", "bind-parent"]

ZONE = "example.test."
TTL = 2
TSIG_NAME = "rollover-key."
TSIG_ALGORITHM = "hmac-sha256"
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Server:
    name: str  # "ns1.example.test."
    address: str  # "127.0.1.11"
    kind: ServerKind


@dataclass(frozen=True)
class Answer:
    rcode: str  # "NOERROR", "NXDOMAIN", "REFUSED", ...
    records: frozenset[str]  # rdata text of the asked type (TLSA: "U S M lowerhex")
    ttl: int | None  # TTL of the answer RRset, None when there is none
    aa: bool


def canonical_text(rtype: str, text: str) -> str:
    return rdata_form.canonical_text(rtype, text, ZONE)


class DnsLab:
    """Start/stop the DNS servers of the lab. A context manager; stop() is safe to call twice."""

    zone = ZONE
    ttl = TTL
    tsig_name = TSIG_NAME
    tsig_algorithm = TSIG_ALGORITHM

    def __init__(self, net: str | None = None) -> None:
        self.net = net or lab_net()
        self.primary = Server("ns1.example.test.", f"{self.net}.11", "bind-primary")
        self.bind_secondary = Server("ns2.example.test.", f"{self.net}.12", "bind-secondary")
        self.knot_secondary = Server("ns3.example.test.", f"{self.net}.13", "knot-secondary")
        self.parent = Server("ns.test.", f"{self.net}.10", "bind-parent")
        self.servers = [self.primary, self.bind_secondary, self.knot_secondary]
        self.tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self.parent_tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self._workdir: Path | None = None
        self._addresses = LoopbackAddresses()
        self._daemons: dict[str, Daemon] = {}  # by server address
        self._bin: dict[str, str] = {}

    # -- paths ------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LabError("DNS lab not started")
        return self._workdir

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def tsig_secret_file(self) -> Path:
        return self.workdir / "tsig.secret"

    @property
    def knot_socket(self) -> Path:
        return self.workdir / "ns3" / "knot.sock"

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> DnsLab:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self._workdir is not None:
            raise LabError("DNS lab already started")
        found = {b: _which(b) for b in ("named", "named-checkconf", "knotd", "knotc")}
        missing = [b for b, path in found.items() if path is None]
        if missing:
            raise LabError(f"missing binaries: {', '.join(missing)} (run tests/lab/install.sh)")
        self._bin = {b: str(path) for b, path in found.items()}
        self._workdir = Path(tempfile.mkdtemp(prefix=f"rollover-dns-{self.net}-"))
        try:
            self._write_files()
            for address in (self.parent.address, *(s.address for s in self.servers)):
                self._addresses.ensure(address)
                _require_free(address)
            self._start_daemons()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for daemon in self._daemons.values():
            daemon.stop()
        self._daemons.clear()
        self._addresses.remove_all()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def pids(self) -> dict[str, int]:
        """Process id of each running daemon, by server name (for measurements)."""
        by_address = {s.address: s.name for s in self.servers}
        return {by_address[a]: d.proc.pid for a, d in self._daemons.items()
                if d.proc is not None and d.alive()}

    def _write_files(self) -> None:
        wd = self.workdir
        for sub in ("logs", "ns1", "ns2", "ns3"):
            (wd / sub).mkdir(mode=0o700)
        _write_private(self.tsig_secret_file, self.tsig_secret + "\n")
        net = self.net
        (wd / "ns1" / "example.test.db").write_text(zone_file(net))
        (wd / "ns1" / "test.db").write_text(parent_zone(net))
        _write_private(wd / "ns1" / "named.conf", bind_primary_conf(
            wd / "ns1", net, TSIG_NAME, TSIG_ALGORITHM, self.tsig_secret,
            self.parent_tsig_secret))
        _write_private(wd / "ns2" / "named.conf", bind_secondary_conf(wd / "ns2", net))
        (wd / "ns3" / "knot.conf").write_text(knot_conf(wd / "ns3", net))
        for ns in ("ns1", "ns2"):
            _check([self._bin["named-checkconf"], str(wd / ns / "named.conf")],
                   f"named-checkconf {ns}")
        _check([self._bin["knotc"], "-c", str(wd / "ns3" / "knot.conf"), "conf-check"],
               "knotc conf-check")

    def _daemon(self, server: Server, argv: list[str], short: str) -> Daemon:
        daemon = Daemon(short, argv, self.log_dir / f"{short}.log", cwd=self.workdir / short)
        self._daemons[server.address] = daemon
        daemon.start()
        return daemon

    def _named(self, server: Server, short: str) -> Daemon:
        conf = self.workdir / short / "named.conf"
        return self._daemon(server, [self._bin["named"], "-g", "-n", "2", "-c", str(conf)], short)

    def _start_daemons(self) -> None:
        """Start all three at once (secondaries retry their first transfer every second and get
        the primary's NOTIFY once it has signed), then wait for one signed serial everywhere."""
        ns1 = self._named(self.primary, "ns1")
        ns2 = self._named(self.bind_secondary, "ns2")
        ns3 = self._daemon(self.knot_secondary, [
            self._bin["knotd"], "-c", str(self.workdir / "ns3" / "knot.conf")], "ns3")

        def ready() -> bool:
            if not all(self._signed(s.address) for s in self.servers):
                return False
            if not self._answers(self.parent.address, "test.", "SOA"):
                return False
            return len({self.serial(s.address) for s in self.servers}) == 1

        self._wait_ready([ns1, ns2, ns3], ready,
                         "ns1..ns3 to serve the signed zone with one serial")

    def _wait_ready(self, daemons: list[Daemon], ready: Callable[[], bool], what: str) -> None:
        dead: list[Daemon] = []

        def check() -> bool:
            dead.extend(d for d in daemons if not d.alive())
            return bool(dead) or bool(ready())

        try:
            wait_for(check, START_TIMEOUT, what)
        except LabError as err:
            raise LabError(f"{err}; {self._status()}; logs: {self._log_tails()}") from None
        for daemon in dead:
            daemon.check_alive()  # raises with the log tail

    def _status(self) -> str:
        parts = []
        for server in self.servers:
            try:
                parts.append(f"{server.name} serial {self.serial(server)}")
            except Exception as exc:  # report, never mask the timeout
                parts.append(f"{server.name} {type(exc).__name__}")
        return ", ".join(parts)

    def _log_tails(self) -> str:
        return " | ".join(f"{log.name}: {log.read_text(errors='replace')[-600:]}"
                          for log in sorted(self.log_dir.glob("*.log")))

    def _signed(self, address: str) -> bool:
        return bool(self.query(address, ZONE, "DNSKEY", timeout=0.5).records)

    def _answers(self, address: str, owner: str, rtype: str) -> bool:
        return self.query(address, owner, rtype, timeout=0.5).rcode == "NOERROR"

    # -- queries ----------------------------------------------------------------------------

    def name(self, owner: str) -> dns.name.Name:
        """Absolute name for `owner` (trailing dot: absolute; otherwise relative to the zone,
        unless it already ends in the zone name)."""
        if owner.endswith(".") or owner.rstrip(".").endswith(ZONE.rstrip(".")):
            return dns.name.from_text(owner.rstrip(".") + ".")
        return dns.name.from_text(owner, origin=dns.name.from_text(ZONE))

    def query_message(self, address: Server | str, owner: str, rtype: str,
                      dnssec: bool = True, timeout: float = 1.0) -> dns.message.Message:
        """The raw response (RD=0, DO set by default; UDP, TCP on truncation)."""
        addr = address.address if isinstance(address, Server) else address
        q = dns.message.make_query(self.name(owner), rtype, want_dnssec=dnssec)
        q.flags &= ~dns.flags.RD
        response, _ = dns.query.udp_with_fallback(q, addr, timeout=timeout)
        return response

    def query(self, address: Server | str, owner: str, rtype: str,
              timeout: float = 1.0) -> Answer:
        """What `address` serves for (owner, rtype). Raises dns.exception.Timeout."""
        r = self.query_message(address, owner, rtype, dnssec=False, timeout=timeout)
        rrset = r.get_rrset(r.answer, self.name(owner), dns.rdataclass.IN,
                            dns.rdatatype.from_text(rtype))
        records = frozenset(canonical(rd) for rd in rrset) if rrset else frozenset()
        return Answer(rcode=dns.rcode.to_text(r.rcode()), records=records,
                      ttl=rrset.ttl if rrset else None, aa=bool(r.flags & dns.flags.AA))

    def delegation(self, timeout: float = 1.0) -> frozenset[str]:
        """NS names of example.test. as the parent `test.` delegates them (referral, AA=0)."""
        r = self.query_message(self.parent, ZONE, "NS", dnssec=False, timeout=timeout)
        rrset = r.get_rrset(r.authority, dns.name.from_text(ZONE), dns.rdataclass.IN,
                            dns.rdatatype.NS)
        return frozenset(canonical(rd) for rd in rrset) if rrset else frozenset()

    def serial(self, address: Server | str) -> int:
        answer = self.query(address, ZONE, "SOA")
        if len(answer.records) != 1:
            raise LabError(f"no SOA from {address}: {answer.rcode}")
        return int(next(iter(answer.records)).split()[2])

    def wait_all(self, owner: str, rtype: str, records: Iterable[str],
                 timeout: float = 10.0) -> float:
        """Seconds until every server serves exactly `records` (empty: nothing). Raises
        LabError naming each lagging server and what it serves."""
        want = frozenset(canonical_text(rtype, t) for t in records)
        lagging: dict[Server, str] = {}

        def check() -> bool:
            lagging.clear()
            for server in self.servers:
                try:
                    got = self.query(server, owner, rtype, timeout=0.5)
                except dns.exception.Timeout:
                    lagging[server] = "timeout"
                    continue
                if got.records != want or not got.aa:
                    lagging[server] = f"{got.rcode} aa={got.aa} {sorted(got.records)}"
            return not lagging

        try:
            return wait_for(check, timeout, f"{owner} {rtype} on every server")
        except LabError:
            detail = "; ".join(f"{s.name} ({s.address}) serves {v}" for s, v in lagging.items())
            raise LabError(f"timed out after {timeout:.1f}s waiting for {owner} {rtype} = "
                           f"{sorted(want)}: {detail}") from None

    # -- updates ----------------------------------------------------------------------------

    def _update_message(self) -> dns.update.UpdateMessage:
        keyring = dns.tsigkeyring.from_text({TSIG_NAME: self.tsig_secret})
        return dns.update.UpdateMessage(ZONE, keyring=keyring,
                                        keyname=dns.name.from_text(TSIG_NAME),
                                        keyalgorithm=dns.tsig.HMAC_SHA256)

    def _send(self, msg: dns.update.UpdateMessage) -> None:
        response = dns.query.tcp(msg, self.primary.address, timeout=5.0)
        rcode = dns.rcode.to_text(response.rcode())
        if rcode != "NOERROR":
            raise LabError(f"update refused by {self.primary.address}: {rcode}")

    def update(self, owner: str, rtype: str, ttl: int, rdatas: Iterable[str],
               replace: bool = True) -> None:
        """TSIG-signed RFC 2136 update at the primary: replace (or add to) the RRset."""
        msg = self._update_message()
        rds = [dns.rdata.from_text(dns.rdataclass.IN, rtype, t, origin=dns.name.from_text(ZONE))
               for t in rdatas]
        if replace:
            msg.replace(self.name(owner), ttl, *rds)
        else:
            msg.add(self.name(owner), ttl, *rds)
        self._send(msg)

    def delete(self, owner: str, rtype: str) -> None:
        msg = self._update_message()
        msg.delete(self.name(owner), rtype)
        self._send(msg)

    # -- the chain of trust above example.test ----------------------------------------------

    PARENT = "test."

    def parent_anchor_text(self, timeout: float = 10.0) -> str:
        """`test.`'s DNSKEY RRset in zone-file lines: a trust anchor for `--trust-anchor`."""
        def signed() -> bool:
            return bool(self.query(self.parent, self.PARENT, "DNSKEY", timeout=0.5).records)

        wait_for(signed, timeout, "the parent zone test. to be signed")
        keys = self.query(self.parent, self.PARENT, "DNSKEY").records
        return "".join(f"{self.PARENT} IN DNSKEY {k}\n" for k in sorted(keys))

    def secure_delegation(self, timeout: float = 10.0) -> list[str]:
        """Publish example.test's DS (SHA-256 of its SEP keys) in the signed `test.`; idempotent.
        Returns the DS rdata published."""
        self.parent_anchor_text(timeout)
        msg = self.query_message(self.primary, ZONE, "DNSKEY")
        rrset = msg.get_rrset(msg.answer, dns.name.from_text(ZONE), dns.rdataclass.IN,
                              dns.rdatatype.DNSKEY)
        if rrset is None:
            raise LabError("example.test. serves no DNSKEY")
        ds = sorted(str(dns.dnssec.make_ds(ZONE, k, "SHA256")) for k in rrset if k.flags & 1)
        self.update_parent(ZONE, "DS", TTL, ds)

        def served() -> bool:
            m = self.query_message(self.parent, ZONE, "DS", timeout=0.5)
            got = m.get_rrset(m.answer, dns.name.from_text(ZONE), dns.rdataclass.IN,
                              dns.rdatatype.DS)
            sig = m.get_rrset(m.answer, dns.name.from_text(ZONE), dns.rdataclass.IN,
                              dns.rdatatype.RRSIG, dns.rdatatype.DS)
            return got is not None and sig is not None and len(got) == len(ds)

        wait_for(served, timeout, "test. to serve the signed DS of example.test.")
        return ds

    def update_parent(self, owner: str, rtype: str, ttl: int, rdatas: Iterable[str]) -> None:
        """Replace an RRset in the parent zone `test.` (TSIG update at {net}.10, with the
        parent's own key: the child's key is refused there)."""
        keyring = dns.tsigkeyring.from_text({PARENT_KEY: self.parent_tsig_secret})
        update = dns.update.UpdateMessage(self.PARENT, keyring=keyring,
                                          keyname=dns.name.from_text(PARENT_KEY),
                                          keyalgorithm=dns.tsig.HMAC_SHA256)
        update.replace(dns.name.from_text(owner), ttl,
                       *[dns.rdata.from_text(dns.rdataclass.IN, rtype, t) for t in rdatas])
        response = dns.query.tcp(update, self.parent.address, timeout=5.0)
        if response.rcode() != dns.rcode.NOERROR:
            raise LabError(f"update of {owner} {rtype} refused by {self.parent.address}: "
                           f"{dns.rcode.to_text(response.rcode())}")

    # -- misbehaving secondaries -------------------------------------------------------------

    def _knotc(self, *args: str) -> None:
        _check([self._bin["knotc"], "-s", str(self.knot_socket), "-b", "-t", "5", *args],
               f"knotc {args[0]}")

    def freeze_knot(self) -> None:
        """Knot keeps answering with the data it has; incoming NOTIFY/refresh wait for thaw."""
        self._knotc("zone-freeze", ZONE)

    def thaw_knot(self) -> None:
        self._knotc("zone-thaw", ZONE)

    def _server_daemon(self, server: Server | str) -> Daemon:
        addr = server.address if isinstance(server, Server) else server
        daemon = self._daemons.get(addr)
        if daemon is None:
            raise LabError(f"no lab daemon at {addr}")
        return daemon

    def pause(self, server: Server | str) -> None:
        """SIGSTOP: the server stops answering (queries time out) until resume(). Returns once
        every thread of it is stopped: on a busy machine a running thread could otherwise still
        answer a query sent right after the signal."""
        daemon = self._server_daemon(server)
        daemon.signal(signal.SIGSTOP)
        proc = daemon.proc
        if proc is not None:
            wait_for(lambda: _all_stopped(proc.pid), 5, f"{daemon.name} to stop")

    def resume(self, server: Server | str) -> None:
        self._server_daemon(server).signal(signal.SIGCONT)

    def stop_server(self, server: Server) -> None:
        """Stop one secondary (queries to it are refused) until start_server()."""
        if server is self.primary:
            raise LabError("stop_server is for secondaries")
        self._server_daemon(server).stop()

    def start_server(self, server: Server) -> None:
        """Start a stopped secondary again with the zone copy it had; it catches up by refresh."""
        self._server_daemon(server)  # it was one of ours
        if server is self.bind_secondary:
            daemon = self._named(server, "ns2")
        else:
            daemon = self._daemon(server, [
                self._bin["knotd"], "-c", str(self.workdir / "ns3" / "knot.conf")], "ns3")
        self._wait_ready([daemon], lambda: self._signed(server.address),
                         f"{server.name} to answer again")

    def servfail_knot(self, fail: bool) -> None:
        """fail=True: Knot loses its copy of the zone (zone-purge) and the primary refuses it a
        new transfer, so Knot answers SERVFAIL for the zone; fail=False lets the transfer
        through again (Knot retries every 2 s) and waits until Knot answers."""
        conf = self.workdir / "ns1" / "named.conf"
        anyone = "allow-transfer { 127.0.0.0/8; };"
        not_knot = f"allow-transfer {{ !{self.knot_secondary.address}; 127.0.0.0/8; }};"
        text = conf.read_text()
        _write_private(conf, text.replace(anyone, not_knot) if fail else
                       text.replace(not_knot, anyone))
        self._server_daemon(self.primary).signal(signal.SIGHUP)
        if fail:
            wait_for(lambda: _refused_axfr(self.primary.address, self.knot_secondary.address),
                     10, "the primary to refuse Knot's transfer")
            _check([self._bin["knotc"], "-s", str(self.knot_socket), "-b", "-t", "5", "-f",
                    "zone-purge", ZONE], "knotc zone-purge")
            wait_for(lambda: self.query(self.knot_secondary, ZONE, "SOA").rcode == "SERVFAIL",
                     10, "Knot to answer SERVFAIL")
        else:
            self._wait_ready([self._server_daemon(self.knot_secondary)],
                             lambda: self._signed(self.knot_secondary.address),
                             "Knot to serve the zone again")

    def lame_knot(self, lame: bool) -> None:
        """lame=True: Knot is still listed in the NS set but no longer serves the zone (its
        config names another zone; it answers REFUSED, no AA); lame=False serves it again
        (a fresh transfer) and waits until Knot answers."""
        conf = self.workdir / "ns3" / "knot.conf"
        ours, other = f"  - domain: {ZONE}\n", "  - domain: lame.invalid.\n"
        text = conf.read_text()
        conf.write_text(text.replace(ours, other) if lame else text.replace(other, ours))
        self._knotc("reload")
        knot = self.knot_secondary
        if lame:
            wait_for(lambda: self.query(knot, ZONE, "SOA").rcode == "REFUSED", 10,
                     "Knot to stop serving the zone")
        else:
            self._wait_ready([self._server_daemon(knot)], lambda: self._signed(knot.address),
                             "Knot to serve the zone again")

    def refuse_updates(self, refuse: bool) -> None:
        """The primary's policy changes under us: with refuse=True it answers REFUSED to every
        update of the child zone signed with our key (only another key may update it; BIND
        wants some allow-update on a dnssec-policy zone), until refuse_updates(False)."""
        conf = self.workdir / "ns1" / "named.conf"
        ours = f'allow-update {{ key "{TSIG_NAME}"; }};'
        other = f'allow-update {{ key "{PARENT_KEY}"; }};  // refused'
        text = conf.read_text()
        text = text.replace(ours, other) if refuse else text.replace(other, ours)
        _write_private(conf, text)
        self._server_daemon(self.primary).signal(signal.SIGHUP)  # named: reload the config


def _all_stopped(pid: int) -> bool:
    """Is every thread of `pid` in state T (stopped)?"""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks]
    except OSError:
        return True  # gone: it answers nothing either
    return bool(states) and all(x in ("T", "t") for x in states)


def _refused_axfr(primary: str, source: str) -> bool:
    """Does the primary refuse a zone transfer asked from `source`?"""
    try:
        msg = dns.message.make_query(ZONE, "AXFR")
        reply = dns.query.tcp(msg, primary, timeout=2.0, source=source)
    except (dns.exception.DNSException, OSError):
        return False
    return reply.rcode() == dns.rcode.REFUSED


def _which(binary: str) -> str | None:
    return shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _require_free(address: str) -> None:
    """Refuse to start where someone already listens: a BIND that cannot bind keeps running
    without listening, and the lab would then talk to a stranger's servers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 53))
        except OSError as exc:
            raise LabError(f"{address}:53 is not free ({exc.strerror}); another lab on this net? "
                           "set ROLLOVER_LAB_NET") from None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _check(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip()
        raise LabError(f"{what} failed ({done.returncode}): {out[-1500:]}")
