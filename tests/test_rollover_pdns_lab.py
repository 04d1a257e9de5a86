"""A full current+next rollover with PowerDNS as the primary: real pdns_server (HTTP API writes,
DNS answers to the observer) of the Master zone pdnsm.test., a BIND secondary fed by its NOTIFY +
AXFR, Pebble validating DNS-01 against pdns_server, Postfix.

The invariant monitor polls both nameservers and Postfix's STARTTLS about every 100 ms during the
forced rollover and fails on any moment where the key Postfix presents has no 3 1 1 record on
either of them.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from rollover.cli.main import main
from rollover.clock import SystemClock
from rollover.dane import tlsa

from lab.pdns import PdnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab, served_chain

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ALG = "ecdsa-p256"
CLOCK = SystemClock()


@pytest.fixture(scope="module")
def pdns_secondary(pdns_lab: PdnsLab) -> PdnsLab:
    if pdns_lab._secondary is None:
        pdns_lab.start_secondary()
    return pdns_lab


@pytest.fixture(scope="module")
def pdns_pebble(pdns_lab: PdnsLab) -> Iterator[PebbleLab]:
    """A Pebble of its own that validates DNS-01 against pdns_server (the session's Pebble asks
    the BIND primary, which does not serve pdns.test.)."""
    pebble = PebbleLab(dns_server=f"{pdns_lab.address}:53", net=pdns_lab.net, port=14001,
                       management_port=15001)
    pebble.start()
    try:
        yield pebble
    finally:
        pebble.close()


def presented_spki(postfix: PostfixLab) -> str:
    der = served_chain(postfix.address, postfix.port, ALG)
    return tlsa.spki_sha256_hex(x509.load_der_x509_certificate(der[0]))


class PdnsMonitor(threading.Thread):
    """Every ~100 ms: the key Postfix presents must have its 3 1 1 on pdns_server and on its
    BIND secondary."""

    def __init__(self, pdns: PdnsLab, postfix: PostfixLab, owner: str) -> None:
        super().__init__(daemon=True)
        self.pdns, self.postfix, self.owner = pdns, postfix, owner
        self.samples = 0
        self.keys_seen: list[str] = []
        self.violations: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                spki = presented_spki(self.postfix)
                if not self.keys_seen or self.keys_seen[-1] != spki:
                    self.keys_seen.append(spki)
                for server in (self.pdns.address, self.pdns.secondary_address):
                    records = self.pdns.query(self.owner, "TLSA", server=server).records
                    if f"3 1 1 {spki}" not in records:
                        self.violations.append(f"{server} lacks 3 1 1 {spki[:12]}… while "
                                               "Postfix presents it")
            except Exception as exc:
                self.violations.append(f"{type(exc).__name__}: {exc}")
            self.samples += 1
            self.halt.wait(0.1)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def write_pdns_config(directory: Path, pdns: PdnsLab, pebble: PebbleLab, postfix: PostfixLab,
                      host: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    doc: dict[str, Any] = {
        "state_dir": str(directory / "state"),
        "resolver": [pdns.address],
        "dns": {"timeout": 1.0},
        "acme": {"directory": pebble.directory_url, "email": "hostmaster@pdns.test",
                 "ca_bundle": str(pebble.ca_bundle)},
        "providers": {"pdns": {"type": "powerdns", "api_url": pdns.api_url,
                               "api_key_file": str(pdns.api_key_file)}},
        "installers": {"postfix": {"type": "postfix", "directory": str(postfix.tls_dir),
                                   "file_name": "{algorithm}.pem",
                                   "reload_command": list(postfix.reload_command)}},
        "endpoints": [{"host": host, "zone": "pdnsm.test", "provider": "pdns",
                       "algorithms": [ALG], "ttl": 2, "installer": "postfix",
                       "certificate": {"source": "acme"},
                       "policy": {"retire_grace": "2s", "key_lifetime": "60d",
                                  "renew_before": "1d"}}],
    }
    path = directory / "rollover.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def slot_state(cfg: Path, host: str) -> dict[str, Any]:
    doc = json.loads((cfg.parent / "state" / "state.json").read_text())
    return dict(doc["slots"][f"{host}:25:{ALG}"])


def key_of(s: dict[str, Any], role: str) -> dict[str, Any] | None:
    return next((k for k in s["keys"] if k["role"] == role), None)


def test_full_rollover_with_powerdns_as_primary(
        pdns_secondary: PdnsLab, pdns_pebble: PebbleLab, postfix_lab: PostfixLab,
        tmp_path: Path) -> None:
    pdns_lab = pdns_secondary
    host = f"mx{secrets.token_hex(3)}.pdnsm.test"
    owner = f"_25._tcp.{host}."
    pdns_lab.set_rrset(f"{host}.", "A", 2, [postfix_lab.address], zone=pdns_lab.master_zone)
    cfg = write_pdns_config(tmp_path, pdns_lab, pdns_pebble, postfix_lab, host)
    # bootstrap: current + next published through the API, a Pebble certificate installed
    assert main(["run", "--wait", "--config", str(cfg)]) == 0
    before = slot_state(cfg, host)
    old, nxt = key_of(before, "current"), key_of(before, "next")
    assert before["phase"] == "active" and old and nxt
    assert presented_spki(postfix_lab) == old["spki_sha256"]
    # the forced rollover, watched
    mon = PdnsMonitor(pdns_lab, postfix_lab, owner)
    mon.start()
    try:
        assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
        CLOCK.sleep(1.0)  # keep watching after the retire
    finally:
        mon.stop()
    assert mon.violations == [], mon.violations[:5]
    assert mon.samples > 10 and mon.keys_seen[0] == old["spki_sha256"]
    after = slot_state(cfg, host)
    cur, new_next = key_of(after, "current"), key_of(after, "next")
    assert after["phase"] == "active" and cur and new_next
    assert cur["key_id"] == nxt["key_id"]
    assert presented_spki(postfix_lab) == cur["spki_sha256"]
    want = {f"3 1 1 {cur['spki_sha256']}", f"3 1 1 {new_next['spki_sha256']}"}
    for server in (pdns_lab.address, pdns_lab.secondary_address):
        assert pdns_lab.query(owner, "TLSA", server=server).records == want
    ttl, contents = pdns_lab.api_rrset(owner, "TLSA", zone=pdns_lab.master_zone)
    assert ttl == 2 and {c.lower() for c in contents} == want
    # the DNS-01 TXT records went through the same provider and are cleaned up
    assert pdns_lab.api_rrset(f"_acme-challenge.{host}.", "TXT",
                              zone=pdns_lab.master_zone) == (None, set())
