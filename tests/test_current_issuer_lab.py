"""current+issuer on real servers (BIND x2 + Knot, Pebble, Postfix), under an invariant monitor
that accepts a moment only when the served leaf's 3 1 1 or the 2 1 1 of some certificate the
server sends is on every nameserver.

Phases: bootstrap (3 1 1 current + 2 1 1 of Pebble's root), a key rollover (the new key goes into
service covered by the root's 2 1 1, before its own 3 1 1 is published), and a CA change (Pebble
restarted: a new root and intermediate; the new root's 2 1 1 must be omnipresent before the new
chain is installed).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from test_rollover_lab import key_of, owner, rrsets, setup, slot

from rollover.cli.main import main
from rollover.dane import tlsa

from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab, served_chain

pytestmark = [pytest.mark.lab, pytest.mark.slow]


class IssuerMonitor(threading.Thread):
    def __init__(self, dns_lab: DnsLab, postfix: PostfixLab, host: str) -> None:
        super().__init__(daemon=True)
        self.dns_lab, self.postfix, self.host = dns_lab, postfix, host
        self.samples = 0
        self.violations: list[str] = []
        self.leaves: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                chain = [x509.load_der_x509_certificate(d)
                         for d in served_chain(self.postfix.address, self.postfix.port,
                                               "ecdsa-p256")]
            except Exception as exc:
                self.violations.append(f"STARTTLS failed: {exc}")
                chain = []
            if chain:
                leaf = f"3 1 1 {tlsa.spki_sha256_hex(chain[0])}"
                if not self.leaves or self.leaves[-1] != leaf:
                    self.leaves.append(leaf)
                ok = {leaf} | {tlsa.tlsa_record(c, 2, 1, 1).to_text() for c in chain[1:]}
                for srv in self.dns_lab.servers:
                    try:
                        records = self.dns_lab.query(srv, owner(self.host), "TLSA").records
                    except Exception as exc:
                        self.violations.append(f"{srv.name}: no answer: {exc}")
                        continue
                    if records and not ok & records:
                        self.violations.append(f"{srv.name}: nothing matches the served chain")
            self.samples += 1
            self.halt.wait(0.1)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def _roots(pebble: PebbleLab, bundle: Path) -> None:
    """The operator's CA store learns Pebble's current root(s)."""
    with bundle.open("ab") as f:
        for pem in pebble.roots():
            f.write(pem)


def test_current_issuer_bootstrap_roll_and_ca_change_never_mismatch(
        dns_lab: DnsLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    pebble = PebbleLab(f"{dns_lab.primary.address}:53", port=14100, management_port=15100)
    pebble.start()
    try:
        bundle = tmp_path / "roots.pem"
        _roots(pebble, bundle)
        host, cfg = setup(tmp_path, dns_lab, pebble, postfix_lab)
        text = cfg.read_text().replace("  provider: lab\n", "  provider: lab\n"
                                       "  scheme: current+issuer\n  issuer: root\n"
                                       f"  issuer_bundle: {bundle}\n", 1)
        cfg.write_text(text)
        assert "scheme: current+issuer" in cfg.read_text()
        mon = IssuerMonitor(dns_lab, postfix_lab, host)
        mon.start()
        times: dict[str, float] = {}
        try:
            t0 = time.monotonic()
            assert main(["run", "--wait", "--config", str(cfg)]) == 0
            times["bootstrap"] = time.monotonic() - t0
            s = slot(cfg, host)
            root = tlsa.tlsa_record(x509.load_pem_x509_certificate(pebble.roots()[0]),
                                    2, 1, 1).to_text()
            assert s["phase"] == "active" and s["installed"]["issuers"] == [root]
            first = key_of(s, "current")
            assert first is not None
            assert all(root in r and f"3 1 1 {first['spki_sha256']}" in r
                       for r in rrsets(dns_lab, host))
            assert key_of(s, "next") is None  # current+issuer keeps no next key

            t0 = time.monotonic()
            assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
            times["roll"] = time.monotonic() - t0
            s = slot(cfg, host)
            second = key_of(s, "current")
            assert second is not None and second["key_id"] != first["key_id"]
            assert all(r == {root, f"3 1 1 {second['spki_sha256']}"}
                       for r in rrsets(dns_lab, host))

            pebble.stop()
            pebble.start()  # a new root and intermediate: a CA change
            _roots(pebble, bundle)
            new_root = tlsa.tlsa_record(x509.load_pem_x509_certificate(pebble.roots()[0]),
                                        2, 1, 1).to_text()
            assert new_root != root
            t0 = time.monotonic()
            assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
            times["ca-change"] = time.monotonic() - t0
            s = slot(cfg, host)
            assert s["phase"] == "active" and s["installed"]["issuers"] == [new_root]
            third = key_of(s, "current")
            assert third is not None
            assert all(r == {new_root, f"3 1 1 {third['spki_sha256']}"}
                       for r in rrsets(dns_lab, host))
        finally:
            mon.stop()
        assert mon.violations == [], mon.violations[:5]
        assert len(mon.leaves) >= 3 and mon.samples > 20
        print(f"\nmeasured: {mon.samples} monitor samples, 0 violations; wall times "
              + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
              + f"; 2 x TTL = {2 * dns_lab.ttl}s")
    finally:
        pebble.close()


def test_current_issuer_pins_an_intermediate_of_a_three_certificate_chain(
        dns_lab: DnsLab, postfix_lab: PostfixLab, tmp_path: Path) -> None:
    """Pebble with PEBBLE_CHAIN_LENGTH=3 (root -> intermediate -> intermediate -> leaf):
    `issuer: intermediate` publishes the 2 1 1 of the leaf's issuer; bootstrap and a key
    rollover under the monitor."""
    pebble = PebbleLab(f"{dns_lab.primary.address}:53", port=14300, management_port=15300)
    pebble.extra_env = {"PEBBLE_CHAIN_LENGTH": "3"}
    pebble.start()
    try:
        host, cfg = setup(tmp_path, dns_lab, pebble, postfix_lab)
        cfg.write_text(cfg.read_text().replace(
            "  provider: lab\n", "  provider: lab\n  scheme: current+issuer\n"
            "  issuer: intermediate\n", 1))
        mon = IssuerMonitor(dns_lab, postfix_lab, host)
        mon.start()
        try:
            assert main(["run", "--wait", "--config", str(cfg)]) == 0
            assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
        finally:
            mon.stop()
        s = slot(cfg, host)
        chain = [x509.load_der_x509_certificate(d)
                 for d in served_chain(postfix_lab.address, postfix_lab.port, "ecdsa-p256")]
        assert len(chain) >= 3  # leaf + two intermediates
        issuer_of_leaf = tlsa.tlsa_record(chain[1], 2, 1, 1).to_text()
        assert s["installed"]["issuers"] == [issuer_of_leaf]
        assert all(issuer_of_leaf in r for r in rrsets(dns_lab, host))
        assert mon.violations == [], mon.violations[:5]
    finally:
        pebble.close()
