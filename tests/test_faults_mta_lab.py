"""Issue #13, MTA row of the fault matrix: a second address of the host is served by another
server (real Exim, its own certificates) while rollover installs into real Postfix; under the
invariant monitor on both addresses, both algorithms."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_rollover_lab import key_of, owner, rrsets, setup, slot

from rollover.cli.main import main
from rollover.dane import tlsa

from lab.dns import DnsLab
from lab.exim import EximLab
from lab.invariant import InvariantMonitor
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab, leaf, served_chain

pytestmark = pytest.mark.lab
ALGS = ("ecdsa-p256", "rsa2048")


def spki_at(address: str, alg: str = "ecdsa-p256") -> str:
    return tlsa.spki_sha256_hex(leaf(served_chain(address, 25, alg)))


def test_a_second_address_serving_another_certificate_stops_after_the_rollback(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, exim_lab: EximLab,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host, cfg = setup(tmp_path, dns_lab, pebble_lab, postfix_lab, algorithms=ALGS)
    both = [postfix_lab.address, exim_lab.address]
    dns_lab.update(host, "A", dns_lab.ttl, both)
    dns_lab.wait_all(host, "A", both)
    snakeoil = {a: spki_at(postfix_lab.address, a) for a in ALGS}
    exims = {a: spki_at(exim_lab.address, a) for a in ALGS}
    mons = [InvariantMonitor(dns_lab, addr, 25, "smtp", owner(host), ALGS, before_dane=True)
            for addr in both]
    for mon in mons:
        mon.start()
    try:
        code = main(["run", "--wait", "--max-wait", "20", "--config", str(cfg)])
        # published with the keys in service at both addresses, installed into Postfix; the
        # post-flight finds Exim's address still on its own key: rolled back, then stopped
        # (installing again cannot reach Exim) instead of install + roll back forever
        assert code == 2
        for alg in ALGS:
            s = slot(cfg, host, alg)
            assert s["stopped"] and exim_lab.address in s["stopped"]
            assert "never installed" in s["stopped"] and "A/AAAA" in s["stopped"]
            assert s["phase"] == "ready" and s["installed"] is None
            assert spki_at(postfix_lab.address, alg) == snakeoil[alg]  # rolled back
            for records in rrsets(dns_lab, host):
                assert f"3 1 1 {exims[alg]}" in records and f"3 1 1 {snakeoil[alg]}" in records
        capsys.readouterr()
        assert main(["run", "--config", str(cfg)]) == 2  # stays stopped, installs nothing
        assert spki_at(postfix_lab.address) == snakeoil["ecdsa-p256"]
        main(["status", "--no-observe", "--config", str(cfg)])
        assert "stopped" in capsys.readouterr().out
        # the operator takes Exim's address out of the host, then resumes
        mons[1].stop()
        dns_lab.update(host, "A", dns_lab.ttl, [postfix_lab.address])
        dns_lab.wait_all(host, "A", [postfix_lab.address])
        assert main(["run", "--resume", "--wait", "--config", str(cfg)]) == 0
    finally:
        for mon in mons:
            mon.stop()
    for alg in ALGS:
        s = slot(cfg, host, alg)
        current = key_of(s, "current")
        assert s["stopped"] is None and current
        assert spki_at(postfix_lab.address, alg) == current["spki_sha256"]
    assert mons[0].violations == [] and mons[1].violations == []
    assert mons[0].samples > 10
