"""A full current+next rollover on Exim: BIND x2 + Knot, Pebble (ACME), the lab's real Exim 4.96,
both key algorithms (ECDSA P-256 and RSA 2048), under the invariant monitor (every ~100 ms, per
algorithm: the key Exim presents has its 3 1 1 on every nameserver)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollover.cli.main import main
from rollover.clock import SystemClock

from lab.configs import write_config
from lab.dns import DnsLab
from lab.exim import EximLab, write_group_file
from lab.invariant import InvariantMonitor
from lab.pebble import PebbleLab
from lab.tlsclient import dane_verifies, served_spki

pytestmark = pytest.mark.lab
CLOCK = SystemClock()
ALGORITHMS = ("ecdsa-p256", "rsa2048")


def slot(cfg: Path, host: str, alg: str) -> dict[str, Any]:
    state = json.loads((cfg.parent / "state" / "state.json").read_text())
    return state["slots"][f"{host}:25:{alg}"]  # type: ignore[no-any-return]


def key_of(s: dict[str, Any], role: str) -> dict[str, Any]:
    return next(k for k in s["keys"] if k["role"] == role)


def exim_config(tmp_path: Path, dns_lab: DnsLab, pebble_lab: PebbleLab,
                exim_lab: EximLab) -> tuple[str, str, Path]:
    """A fresh MX name pointing at the lab Exim, and a config managing it end to end."""
    host = f"mx{secrets.token_hex(3)}.example.test"
    dns_lab.update(host, "A", dns_lab.ttl, [exim_lab.address])
    dns_lab.wait_all(host, "A", [exim_lab.address])
    cfg = write_config(
        tmp_path, dns_lab, host, algorithms=ALGORITHMS,
        policy={"retire_grace": "2s", "key_lifetime": "60d", "renew_before": "1d"},
        endpoint={"certificate": {"source": "acme"}, "installer": "exim"},
        top={"acme": {"directory": pebble_lab.directory_url, "email": "hostmaster@example.test",
                      "ca_bundle": str(pebble_lab.ca_bundle)},
             "installers": {"exim": {"type": "exim", "directory": str(exim_lab.tls_dir),
                                     "file_name": "{algorithm}.pem"}}})
    return host, f"_25._tcp.{host}.", cfg


@pytest.fixture
def exim(exim_lab: EximLab) -> Iterator[EximLab]:
    """The session's Exim, its self-signed files put back afterwards."""
    originals = {a: p.read_bytes() for a, p in exim_lab.chain_files.items()}
    try:
        yield exim_lab
    finally:
        for alg, data in originals.items():
            write_group_file(exim_lab.chain_files[alg], data)
        exim_lab.restart()


def test_exim_bootstrap_of_two_algorithms_keeps_every_algorithm_covered(
        dns_lab: DnsLab, pebble_lab: PebbleLab, exim: EximLab, tmp_path: Path) -> None:
    """From the first TLSA record on, the key in service of *each* algorithm is covered on every
    server. (This caught the engine publishing the slots of one owner one after the other: for
    100-300 ms the RRset held the ECDSA slot's records but not the RSA key in service.)"""
    _, owner, cfg = exim_config(tmp_path, dns_lab, pebble_lab, exim)
    mon = InvariantMonitor(dns_lab, exim.address, 25, "smtp", owner, ALGORITHMS,
                           before_dane=True)
    mon.start()
    try:
        assert main(["run", "--wait", "--config", str(cfg)]) == 0
    finally:
        mon.stop()
    assert mon.violations == [], mon.violations[:5]


def test_exim_current_next_rollover_both_algorithms_never_breaks_dane(
        dns_lab: DnsLab, pebble_lab: PebbleLab, exim: EximLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    exim_lab = exim
    host, owner, cfg = exim_config(tmp_path, dns_lab, pebble_lab, exim)
    in_service = {a: served_spki(exim_lab.address, 25, a, "smtp") for a in ALGORITHMS}
    t0 = CLOCK.monotonic()
    assert main(["run", "--wait", "--config", str(cfg)]) == 0  # bootstrap from nothing
    bootstrap = CLOCK.monotonic() - t0
    before = {}
    for alg in ALGORITHMS:
        s = slot(cfg, host, alg)
        assert s["phase"] == "active", s
        before[alg] = (key_of(s, "current"), key_of(s, "next"))
        assert before[alg][0]["spki_sha256"] != in_service[alg]  # ours replaced self-signed
        assert served_spki(exim_lab.address, 25, alg, "smtp") == before[alg][0]["spki_sha256"]

    # the forced rollover: next becomes current, per algorithm
    mon = InvariantMonitor(dns_lab, exim_lab.address, 25, "smtp", owner, ALGORITHMS)
    mon.start()
    t0 = CLOCK.monotonic()
    try:
        assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
        took = CLOCK.monotonic() - t0
        CLOCK.sleep(1.0)  # keep watching after the retire
    finally:
        mon.stop()
    assert mon.violations == [], mon.violations[:5]
    assert mon.samples >= 20
    for alg in ALGORITHMS:
        old, nxt = before[alg]
        s = slot(cfg, host, alg)
        cur = key_of(s, "current")
        assert s["phase"] == "active" and cur["key_id"] == nxt["key_id"]
        assert mon.keys_seen[alg][-2:] == [old["spki_sha256"], cur["spki_sha256"]]
        for srv in dns_lab.servers:
            rrset = dns_lab.query(srv, owner, "TLSA").records
            assert f"3 1 1 {old['spki_sha256']}" not in rrset
            assert f"3 1 1 {cur['spki_sha256']}" in rrset
        # openssl's DANE verifier accepts what Exim serves against the published record
        assert dane_verifies(exim_lab.address, 25, alg, "smtp", host,
                             f"3 1 1 {cur['spki_sha256']}")
        assert not dane_verifies(exim_lab.address, 25, alg, "smtp", host,
                                 f"3 1 1 {key_of(s, 'next')['spki_sha256']}")
    capsys.readouterr()
    assert main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    for alg in ALGORITHMS:
        cur = key_of(slot(cfg, host, alg), "current")
        assert (f"{exim_lab.address}: presents 3 1 1 {cur['spki_sha256'][:12]}… "
                "(current key)") in out
    print(f"\nmeasured: Exim bootstrap {bootstrap:.1f}s, forced rollover of two algorithms "
          f"{took:.1f}s, monitor samples {mon.samples}")
