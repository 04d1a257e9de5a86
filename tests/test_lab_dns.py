"""Smoke tests of the DNS lab: real BIND primary, BIND secondary and Knot secondary on loopback."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from rollover.clock import SystemClock

from lab.dns import DnsLab, Server
from lab.dns_fixtures import require_dns_binaries
from lab.proc import lab_net, wait_for

pytestmark = pytest.mark.lab

CLOCK = SystemClock()


def tlsa(byte: int) -> str:
    return "3 1 1 " + bytes([byte]).hex() * 32


def fresh_owner(prefix: str) -> str:
    """A name no other test touches (the lab is shared by the whole session)."""
    return f"_25._tcp.{prefix}-{secrets.token_hex(4)}.example.test."


def test_tsig_update_seen_on_all_servers(dns_lab: DnsLab) -> None:
    owner = fresh_owner("update")
    dns_lab.update(owner, "TLSA", dns_lab.ttl, [tlsa(0xAB), tlsa(0xCD)])
    dns_lab.wait_all(owner, "TLSA", [tlsa(0xAB), tlsa(0xCD)], timeout=10)
    for server in dns_lab.servers:
        answer = dns_lab.query(server, owner, "TLSA")
        assert answer.rcode == "NOERROR" and answer.aa
        assert answer.records == {tlsa(0xAB), tlsa(0xCD)}
        assert answer.ttl == dns_lab.ttl
    # one replace later: the whole RRset changes, everywhere
    dns_lab.update(owner, "TLSA", dns_lab.ttl, [tlsa(0xEF)])
    dns_lab.wait_all(owner, "TLSA", [tlsa(0xEF)], timeout=10)
    dns_lab.delete(owner, "TLSA")
    dns_lab.wait_all(owner, "TLSA", [], timeout=10)
    assert dns_lab.query(dns_lab.knot_secondary, owner, "TLSA").rcode == "NXDOMAIN"


def test_zone_shape(dns_lab: DnsLab) -> None:
    net = dns_lab.net
    assert [s.address for s in dns_lab.servers] == [f"{net}.11", f"{net}.12", f"{net}.13"]
    names = {s.name for s in dns_lab.servers}
    for server in dns_lab.servers:
        assert dns_lab.query(server, dns_lab.zone, "NS").records == names
        assert dns_lab.query(server, dns_lab.zone, "MX").records == {"10 mail.example.test."}
        assert dns_lab.query(server, "mail", "A").records == {f"{net}.25"}
        assert dns_lab.query(server, "mail2.example.test.", "A").records == {f"{net}.26"}
    assert dns_lab.delegation() == names
    glue = dns_lab.query_message(dns_lab.parent, "ns3.example.test.", "A", dnssec=False)
    assert any(f"{net}.13" in str(rrset) for rrset in glue.additional + glue.answer)


def _validated(lab: DnsLab, server: Server, owner: str, rtype: str) -> dns.rrset.RRset:
    """Fetch owner/rtype with its RRSIG from `server` and validate it with the zone DNSKEY."""
    zone = dns.name.from_text(lab.zone)
    keys_msg = lab.query_message(server, lab.zone, "DNSKEY")
    dnskey = keys_msg.find_rrset(keys_msg.answer, zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    msg = lab.query_message(server, owner, rtype)
    name = lab.name(owner)
    rrset = msg.find_rrset(msg.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
    rrsig = msg.find_rrset(msg.answer, name, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                           dns.rdatatype.from_text(rtype))
    dns.dnssec.validate(rrset, rrsig, {zone: dnskey}, now=CLOCK.now().timestamp())
    return rrset


def test_tlsa_rrsig_validates_with_zone_dnskey(dns_lab: DnsLab) -> None:
    owner = fresh_owner("signed")
    dns_lab.update(owner, "TLSA", dns_lab.ttl, [tlsa(0x11)])
    dns_lab.wait_all(owner, "TLSA", [tlsa(0x11)])
    zone = dns.name.from_text(dns_lab.zone)
    for server in dns_lab.servers:
        rrset = _validated(dns_lab, server, owner, "TLSA")
        assert len(rrset) == 1
        # the same signature must not cover different data: the check can fail
        msg = dns_lab.query_message(server, owner, "TLSA")
        name = dns_lab.name(owner)
        rrsig = msg.find_rrset(msg.answer, name, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                               dns.rdatatype.TLSA)
        keys_msg = dns_lab.query_message(server, dns_lab.zone, "DNSKEY")
        dnskey = keys_msg.find_rrset(keys_msg.answer, zone, dns.rdataclass.IN,
                                     dns.rdatatype.DNSKEY)
        forged = dns.rrset.from_text(name, dns_lab.ttl, "IN", "TLSA", tlsa(0x22))
        with pytest.raises(dns.exception.ValidationFailure):
            dns.dnssec.validate(forged, rrsig, {zone: dnskey}, now=CLOCK.now().timestamp())
    dns_lab.delete(owner, "TLSA")


def test_frozen_knot_keeps_old_rrset_then_catches_up(dns_lab: DnsLab) -> None:
    owner = fresh_owner("frozen")
    old, new = [tlsa(0x01)], [tlsa(0x02)]
    dns_lab.update(owner, "TLSA", dns_lab.ttl, old)
    dns_lab.wait_all(owner, "TLSA", old)
    dns_lab.freeze_knot()
    try:
        dns_lab.update(owner, "TLSA", dns_lab.ttl, new)
        binds = [dns_lab.primary, dns_lab.bind_secondary]
        wait_for(lambda: all(dns_lab.query(s, owner, "TLSA").records == set(new) for s in binds),
                 10, "both BIND servers to serve the new RRset")
        knot = dns_lab.query(dns_lab.knot_secondary, owner, "TLSA")
        assert knot.records == set(old) and knot.aa
        assert dns_lab.serial(dns_lab.knot_secondary) < dns_lab.serial(dns_lab.primary)
        with pytest.raises(Exception, match=r"ns3\.example\.test\. \(.*\) serves NOERROR"):
            dns_lab.wait_all(owner, "TLSA", new, timeout=1)
    finally:
        dns_lab.thaw_knot()
    dns_lab.wait_all(owner, "TLSA", new, timeout=10)
    dns_lab.delete(owner, "TLSA")


@pytest.mark.parametrize("index", [0, 1, 2], ids=["ns1", "ns2", "ns3"])
def test_paused_server_times_out(dns_lab: DnsLab, index: int) -> None:
    server = dns_lab.servers[index]
    dns_lab.pause(server)
    try:
        with pytest.raises(dns.exception.Timeout):
            dns_lab.query(server, dns_lab.zone, "SOA", timeout=0.3)
    finally:
        dns_lab.resume(server)
    assert dns_lab.query(server, dns_lab.zone, "SOA").rcode == "NOERROR"


def test_wrong_tsig_secret_is_refused_and_changes_nothing(dns_lab: DnsLab) -> None:
    owner = fresh_owner("forged")
    serial = dns_lab.serial(dns_lab.primary)
    wrong = dns.tsigkeyring.from_text({dns_lab.tsig_name: "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA=="})
    msg = dns.update.UpdateMessage(dns_lab.zone, keyring=wrong,
                                   keyname=dns.name.from_text(dns_lab.tsig_name),
                                   keyalgorithm=dns.tsig.HMAC_SHA256)
    msg.replace(dns_lab.name(owner), 2, "TLSA", tlsa(0x66))
    try:
        response = dns.query.tcp(msg, dns_lab.primary.address, timeout=5)
        refused = dns.rcode.to_text(response.rcode())
    except dns.tsig.PeerBadSignature:
        refused = "BADSIG"
    assert refused in {"NOTAUTH", "BADSIG"}
    unsigned = dns.update.UpdateMessage(dns_lab.zone)
    unsigned.replace(dns_lab.name(owner), 2, "TLSA", tlsa(0x66))
    response = dns.query.tcp(unsigned, dns_lab.primary.address, timeout=5)
    assert dns.rcode.to_text(response.rcode()) == "REFUSED"
    assert dns_lab.serial(dns_lab.primary) == serial
    assert dns_lab.query(dns_lab.primary, owner, "TLSA").rcode == "NXDOMAIN"


def test_tsig_secret_file_is_private_and_not_logged(dns_lab: DnsLab) -> None:
    path = dns_lab.tsig_secret_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == dns_lab.tsig_secret
    assert dns_lab.tsig_algorithm == "hmac-sha256"
    for log in dns_lab.log_dir.iterdir():
        assert dns_lab.tsig_secret not in log.read_text(errors="replace")


def _other_net() -> str:
    a, b, c = lab_net().split(".")
    return f"{a}.{b}.{(int(c) + 100) % 256}"


def _lo_addresses() -> set[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines()}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_lab_starts_and_stops_cleanly_twice() -> None:
    require_dns_binaries()
    before = _lo_addresses()
    for round_ in (1, 2):
        lab = DnsLab(net=_other_net())
        t0 = CLOCK.monotonic()
        lab.start()
        try:
            started = CLOCK.monotonic() - t0
            workdir = lab.workdir
            pids = lab.pids()
            assert len(pids) == 3
            serials = {lab.serial(s) for s in lab.servers}
            assert len(serials) == 1
            rss = sum(_rss_kib(pid) for pid in pids.values())
        finally:
            t1 = CLOCK.monotonic()
            lab.stop()
            stopped = CLOCK.monotonic() - t1
        lab.stop()  # a second stop is harmless
        print(f"\nDNS lab round {round_}: start {started:.2f}s, stop {stopped:.3f}s, "
              f"RSS {rss / 1024:.1f} MiB ({len(pids)} daemons)")
        for pid in pids.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert not workdir.exists()
        assert _lo_addresses() == before
