"""`rollover check --domain` against the lab: real BIND/Knot/PowerDNS nameservers and three Postfix
servers, DNSSEC validated from the lab's own trust anchor (the signed parent `test.`).

The broken domain `dom.example.test`:
  MX 10 mx1.dom   A .27 (Postfix A) and A .25 (the session Postfix: other keys = a mismatching
                  address); its TLSA changed while the Knot secondary was frozen (a stale
                  secondary serving the old record)
  MX 20 mx2.dom   CNAME smtp.dom (Postfix B on .28): TLSA at the expanded name (RFC 7672 2.2.2
                  tries it first; a wrong record at the original name must not be used) with a
                  2 1 1 of a root Postfix B does not send, and an expired RSA leaf
  MX 30 mx3.pit.test  PowerDNS, NSEC3 opt-out, TLSA added without rectify: `_tcp.mx3` NXDOMAIN;
                  served by Postfix A too (the same key on two MX hosts)
The clean domain `clean.example.test`: one MX on Postfix A, TLSA TTL 1800, nothing to say.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from rollover.cli.main import main
from rollover.dane import tlsa
from rollover.environment import Environment
from rollover.errors import ExitStatus

import certgen
from lab.dns import DnsLab
from lab.pitfall import PitfallZone
from lab.pki import chain_file_bytes, generate_key, self_signed, write_private
from lab.postfix import PostfixLab
from lab.proc import wait_for
from schema_check import validate

ZONE = "example.test."


@dataclass
class Scene:
    anchor: Path
    resolvers: list[str]
    clean: dict[str, tuple[int, str]]  # run name -> (exit, stdout)
    broken: dict[str, tuple[int, str]]
    keys_a: dict[str, str]  # algorithm -> 3 1 1 of Postfix A
    prometheus: Path  # the textfile written by the broken domain's --json run


def _postfix(net: str, last: int, hostname: str, chains: dict[str, bytes]) -> PostfixLab:
    lab = PostfixLab(hostname=hostname)
    lab.address = f"{net}.{last}"
    lab.tls_dir.mkdir(parents=True, exist_ok=True)
    for alg, data in chains.items():
        write_private(lab.chain_files[alg], data)
    lab.start()
    return lab


def _rec(cert: x509.Certificate, u: int = 3) -> str:
    return tlsa.tlsa_record(cert, u, 1, 1).to_text()


def _check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["check", *argv], env=Environment(environ={}))
    out, _err = capsys.readouterr()
    return code, out


def _wait_some(lab: DnsLab, owner: str, records: list[str], servers: list[Any]) -> None:
    want = frozenset(records)
    wait_for(lambda: all(lab.query(s, owner, "TLSA").records == want for s in servers), 10.0,
             f"{owner} on {[s.name for s in servers]}")


@pytest.fixture(scope="module")
def scene(dns_lab: DnsLab, postfix_lab: PostfixLab,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    net = dns_lab.net
    tmp = tmp_path_factory.mktemp("domain")
    # Postfix A: self-signed ECDSA + RSA
    a_keys = {alg: generate_key(alg) for alg in ("ecdsa-p256", "rsa2048")}
    a_certs = {alg: self_signed(k, ["mx1.dom.example.test"]) for alg, k in a_keys.items()}
    # Postfix B: ECDSA leaf <- intermediate (the root is not sent); RSA leaf expired yesterday
    b_chain = certgen.make_chain(2, sans=("smtp.dom.example.test",), key="p256")
    b_rsa = certgen.make_leaf(None, ("smtp.dom.example.test",), certgen.new_key("rsa2048"),
                              expired=True)
    pa = _postfix(net, 27, "mx1.dom.example.test",
                  {alg: chain_file_bytes(a_keys[alg], [c]) for alg, c in a_certs.items()})
    pb = _postfix(net, 28, "smtp.dom.example.test", {
        "ecdsa-p256": chain_file_bytes(b_chain.leaf.key, b_chain.served()),  # type: ignore[arg-type]
        "rsa2048": chain_file_bytes(b_rsa.key, [b_rsa.cert]),  # type: ignore[arg-type]
    })
    a311 = {alg: _rec(c) for alg, c in a_certs.items()}
    pit = PitfallZone(net)
    try:
        pit.start({"mx3": f"{net}.27"}, {"_25._tcp.mx3": sorted(a311.values())})
        dns_lab.secure_delegation()
        dns_lab.update_parent("pit.test.", "NS", 2, ["ns1.pit.test."])
        dns_lab.update_parent("ns1.pit.test.", "A", 2, [pit.address])
        dns_lab.update_parent("pit.test.", "DS", 2, pit.ds())
        anchor = tmp / "test.anchor"
        anchor.write_text(dns_lab.parent_anchor_text())

        u = dns_lab.update
        u("mxc.clean", "A", 2, [f"{net}.27"])  # BIND refuses an MX to a name without address
        u("clean", "MX", 2, ["10 mxc.clean"])
        u("_25._tcp.mxc.clean", "TLSA", 1800, sorted(a311.values()))
        u("mx1.dom", "A", 2, [f"{net}.27", f"{net}.25"])
        u("smtp.dom", "A", 2, [f"{net}.28"])
        u("mx2.dom", "CNAME", 2, ["smtp.dom"])
        u("dom", "MX", 2, ["10 mx1.dom", "20 mx2.dom", "30 mx3.pit.test."])
        smtp_records = sorted([_rec(b_chain.leaf.cert), _rec(b_rsa.cert),
                               _rec(b_chain.root.cert, 2)])
        u("_25._tcp.smtp.dom", "TLSA", 2, smtp_records)
        u("_25._tcp.mx2.dom", "TLSA", 2, ["3 1 1 " + "ee" * 32])  # must not be used
        stale = ["3 1 1 " + "00" * 32]
        u("_25._tcp.mx1.dom", "TLSA", 2, stale)
        dns_lab.wait_all("_25._tcp.mx1.dom", "TLSA", stale)
        dns_lab.wait_all("_25._tcp.smtp.dom", "TLSA", smtp_records)
        dns_lab.wait_all("_25._tcp.mxc.clean", "TLSA", sorted(a311.values()))

        resolvers = [dns_lab.primary.address, pit.address, dns_lab.parent.address]
        base = ["--trust-anchor", str(anchor)]
        for r in resolvers:
            base += ["--resolver", r]
        cap = _Capture()
        clean = {
            "json": cap.run("--domain", "clean.example.test", "--json", *base),
            "nagios": cap.run("--domain", "clean.example.test", "--nagios", *base),
            "nagios-w40": cap.run("--domain", "clean.example.test", "--nagios", "-w", "40",
                                  *base),
        }
        dns_lab.freeze_knot()
        try:
            u("_25._tcp.mx1.dom", "TLSA", 2, sorted(a311.values()))
            _wait_some(dns_lab, "_25._tcp.mx1.dom", sorted(a311.values()),
                       [dns_lab.primary, dns_lab.bind_secondary])
            broken = {
                "json": cap.run("--domain", "dom.example.test", "--json", "--prometheus",
                                str(tmp / "dom.prom"), *base),
                "nagios": cap.run("--domain", "dom.example.test", "--nagios", *base),
                "text": cap.run("--domain", "dom.example.test", *base),
            }
        finally:
            dns_lab.thaw_knot()
        yield Scene(anchor, resolvers, clean, broken, a311, tmp / "dom.prom")
    finally:
        for owner in ("_25._tcp.mx1.dom", "_25._tcp.smtp.dom", "_25._tcp.mx2.dom",
                      "_25._tcp.mxc.clean", "mx1.dom", "mx2.dom", "smtp.dom", "mxc.clean"):
            for rtype in ("TLSA", "A", "CNAME"):
                dns_lab.delete(owner, rtype)
        dns_lab.delete("dom", "MX")
        dns_lab.delete("clean", "MX")
        pit.stop()
        pa.close()
        pb.close()


class _Capture:
    """main() with stdout captured, usable from a module-scoped fixture."""

    def run(self, *argv: str) -> tuple[int, str]:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["check", *argv], env=Environment(environ={}))
        return code, buf.getvalue()


def _findings(doc: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((f["code"], f["severity"]) for f in doc["findings"])


# --------------------------------------------------------------------------- the clean domain


@pytest.mark.lab
def test_clean_domain_is_ok_with_dnssec_from_the_anchor(scene: Scene) -> None:
    code, out = scene.clean["json"]
    doc = json.loads(out)
    validate(doc, "check-domain.schema.json")
    assert code == ExitStatus.OK, [f["message"] for f in doc["findings"]]
    assert doc["status"] == "ok" and doc["ok"] is True
    assert doc["findings"] == []
    (mx,) = doc["mx"]
    assert mx["dnssec"]["secure"] is True
    assert mx["dnssec"]["path"] == ["test.", "example.test."]
    assert "trust anchor test." in doc["dnssec_method"]
    assert len(mx["chains"]) == 2 and all(c["ok"] for c in mx["chains"])
    assert len(mx["record_sources"]) == 3  # ns1, ns2, ns3 each judged


@pytest.mark.lab
def test_nagios_exit_codes_and_perfdata(scene: Scene) -> None:
    code, out = scene.clean["nagios"]
    head = out.splitlines()[0]
    assert code == 0 and head.startswith("DANE OK - clean.example.test: 1 MX host(s)"), out
    perf = head.split(" | ", 1)[1]
    assert "'chains_matching'=2;;;0" in perf and "'days_to_expiry'=" in perf
    assert ";21:;7:" in perf  # default thresholds as Nagios ranges
    code, out = scene.clean["nagios-w40"]  # the 30-day certificate is now inside -w
    assert code == 1 and out.startswith("DANE WARNING - "), out
    assert "certificate-expiry" in out
    code, out = scene.broken["nagios"]
    assert code == 2 and out.startswith("DANE CRITICAL - dom.example.test: 3 MX host(s)"), out


# --------------------------------------------------------------------------- the broken domain


@pytest.mark.lab
def test_each_finding_once_with_its_severity(scene: Scene) -> None:
    code, out = scene.broken["json"]
    doc = json.loads(out)
    validate(doc, "check-domain.schema.json")
    assert code == ExitStatus.ERROR and doc["status"] == "critical"
    got = _findings(doc)
    want = Counter({
        ("chain-mismatch", "critical"): 4,  # .27 x 2 vs stale ns3; .25 x 2 vs every server
        ("certificate-expiry", "critical"): 1,  # Postfix B's RSA leaf
        ("tcp-ancestor-nxdomain", "critical"): 1,  # mx3.pit.test on PowerDNS
        ("tlsa-issuer-not-served", "warning"): 1,  # 2 1 1 of B's root, not in B's chain
        ("soa-serial-drift", "warning"): 1,  # the frozen Knot
        ("key-shared", "warning"): 1,  # Postfix A behind mx1 and mx3
        ("tlsa-ttl", "warning"): 3,  # the lab's 2 s TTL, once per owner
        ("soa-refresh", "warning"): 2,  # example.test. and pit.test.
    })
    assert got == want, json.dumps(doc["findings"], indent=1)
    subjects = [(f["code"], f["subject"]) for f in doc["findings"]]
    assert len(subjects) == len(set(subjects))


@pytest.mark.lab
def test_stale_secondary_and_mismatching_address_are_named(scene: Scene, dns_lab: DnsLab,
                                                           postfix_lab: PostfixLab) -> None:
    doc = json.loads(scene.broken["json"][1])
    mismatches = {f["subject"]: f["message"] for f in doc["findings"]
                  if f["code"] == "chain-mismatch"}
    net = dns_lab.net
    ns3 = f"ns3.example.test. ({dns_lab.knot_secondary.address})"
    for alg in ("ecdsa-p256", "rsa2048"):
        stale = mismatches[f"mx1.dom.example.test {net}.27:25 {alg}"]
        assert ns3 in stale and "ns1.example.test." not in stale
        other = mismatches[f"mx1.dom.example.test {postfix_lab.address}:25 {alg}"]
        assert all(s.name in other for s in dns_lab.servers)
    (drift,) = [f for f in doc["findings"] if f["code"] == "soa-serial-drift"]
    assert drift["subject"] == ZONE and ns3 in drift["message"]


@pytest.mark.lab
def test_cname_mx_uses_the_expanded_tlsa_base(scene: Scene) -> None:
    doc = json.loads(scene.broken["json"][1])
    mx2 = next(m for m in doc["mx"] if m["name"] == "mx2.dom.example.test")
    assert mx2["cname_chain"] == ["smtp.dom.example.test"]
    assert mx2["tlsa_base"] == "smtp.dom.example.test"
    assert mx2["owner"] == "_25._tcp.smtp.dom.example.test."
    assert "CNAME-expanded" in mx2["tlsa_base_reason"]
    assert all(c["ok"] for c in mx2["chains"])  # the wrong 3 1 1 at mx2.dom was not used
    assert mx2["dnssec"]["secure"] is True


@pytest.mark.lab
def test_pitfall_gives_the_seeds_dig_commands(scene: Scene) -> None:
    doc = json.loads(scene.broken["json"][1])
    (pit,) = [f for f in doc["findings"] if f["code"] == "tcp-ancestor-nxdomain"]
    assert pit["subject"] == "_25._tcp.mx3.pit.test."
    assert "_tcp.mx3.pit.test." in pit["message"]
    assert any(c.startswith("dig _tcp.mx3.pit.test. tlsa +dnssec") for c in pit["commands"])
    mx3 = next(m for m in doc["mx"] if m["name"] == "mx3.pit.test")
    assert mx3["dnssec"]["secure"] is True  # the TLSA itself validates: test. -> pit.test.
    assert mx3["dnssec"]["path"] == ["test.", "pit.test."]


@pytest.mark.lab
def test_text_output_lists_findings_with_advice(scene: Scene) -> None:
    code, out = scene.broken["text"]
    assert code == ExitStatus.ERROR
    assert out.startswith("dom.example.test: 3 MX host(s)")
    assert "CRITICAL [tcp-ancestor-nxdomain]" in out and "advice: " in out
    assert "MX 20 mx2.dom.example.test -> smtp.dom.example.test" in out


@pytest.mark.lab
def test_unsigned_anchor_mismatch_is_dnssec_invalid(scene: Scene, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """An anchor that does not match test.'s key: every TLSA RRset is not DNSSEC-valid."""
    wrong = tmp_path / "wrong.anchor"
    wrong.write_text("test. IN DS 12345 13 2 " + "ab" * 32 + "\n")
    argv = ["--domain", "clean.example.test", "--json", "--trust-anchor", str(wrong)]
    for r in scene.resolvers:
        argv += ["--resolver", r]
    code, out = _check(capsys, *argv)
    doc = json.loads(out)
    assert code == ExitStatus.ERROR
    (f,) = [f for f in doc["findings"] if f["code"] == "dnssec-invalid"]
    assert "no DNSKEY of test. matches" in f["message"]


@pytest.mark.lab
def test_bad_trust_anchor_is_unknown_for_nagios(scene: Scene, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.anchor"
    bad.write_text("test. IN A 192.0.2.1\n")
    code, out = _check(capsys, "--domain", "clean.example.test", "--nagios",
                       "--trust-anchor", str(bad), "--resolver", scene.resolvers[0])
    assert code == ExitStatus.UNKNOWN
    assert out.startswith("DANE UNKNOWN - ") and "bad.anchor:1: not a DS or DNSKEY" in out
    assert len(out.splitlines()) == 1


@pytest.mark.lab
def test_prometheus_textfile_has_chain_match_per_address_and_algorithm(
        scene: Scene, dns_lab: DnsLab, postfix_lab: PostfixLab) -> None:
    fams = {f.name: f for f in text_string_to_metric_families(scene.prometheus.read_text())}
    match = {(s.labels["mx"], s.labels["address"], s.labels["algorithm"]): s.value
             for s in fams["rollover_check_chain_match"].samples}
    net = dns_lab.net
    for alg in ("ecdsa-p256", "rsa2048"):
        assert match[("mx1.dom.example.test", f"{net}.27", alg)] == 0  # stale ns3
        assert match[("mx1.dom.example.test", postfix_lab.address, alg)] == 0
        assert match[("mx2.dom.example.test", f"{net}.28", alg)] == 1
        assert match[("mx3.pit.test", f"{net}.27", alg)] == 1
    sev = {s.labels["severity"]: s.value for s in fams["rollover_check_findings"].samples}
    doc = json.loads(scene.broken["json"][1])
    assert sev["critical"] == doc["counts"]["critical"] == 6
    ok = [s.value for s in fams["rollover_check_ok"].samples]
    assert ok == [0]
