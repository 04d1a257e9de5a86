"""Dovecot: rollover's probe speaks IMAP STARTTLS (143), POP3 STLS (110) and implicit TLS (993,
995) to the lab's real Dovecot 2.3 and sees, per algorithm, the same leaf as openssl does; the
Dovecot installer's `doveadm reload` serves a new file at once; rollback restores it; and a full
current+next rollover of ECDSA + RSA on `_143._tcp` under the invariant monitor (993 serves the
same files)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from rollover.cli.main import main
from rollover.clock import SystemClock
from rollover.dane import tlsa
from rollover.edges.probe import dialect_for_port, probe_tls
from rollover.hooks.dovecot import DovecotInstaller
from rollover.hooks.files import previous_path
from rollover.model import Algorithm, SlotId

import certgen
from lab.configs import write_config
from lab.dns import DnsLab
from lab.dovecot import DovecotLab
from lab.invariant import InvariantMonitor
from lab.pebble import PebbleLab
from lab.pki import write_private
from lab.tlsclient import dane_verifies, served_spki

pytestmark = pytest.mark.lab
CLOCK = SystemClock()
ALGORITHMS = ("ecdsa-p256", "rsa2048")
STARTTLS = {143: "imap", 993: None, 110: "pop3", 995: None}


@pytest.fixture
def dovecot(dovecot_lab: DovecotLab) -> Iterator[DovecotLab]:
    """The session's Dovecot; its self-signed files are put back (and reloaded) afterwards."""
    originals = {a: p.read_bytes() for a, p in dovecot_lab.chain_files.items()}
    try:
        yield dovecot_lab
    finally:
        for alg, data in originals.items():
            path = dovecot_lab.chain_files[alg]
            previous_path(path).unlink(missing_ok=True)
            write_private(path, data)
        dovecot_lab.reload()


def spki(lab: DovecotLab, port: int, alg: str) -> str:
    return served_spki(lab.address, port, alg, STARTTLS[port])


@pytest.mark.parametrize("port", [143, 993, 110, 995])
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_probe_speaks_imap_pop3_starttls_and_implicit_tls_per_algorithm(
        dovecot: DovecotLab, port: int, alg: str) -> None:
    probe = probe_tls(dovecot.address, port, alg, dovecot.hostname, timeout=5)
    assert probe.error is None, probe.error
    assert tlsa.algorithm_of(probe.chain[0]) == Algorithm(alg)
    assert tlsa.spki_sha256_hex(probe.chain[0]) == spki(dovecot, port, alg)
    assert probe.protocol == "TLSv1.2"


def test_probe_names_the_wrong_dialect_in_one_line(dovecot: DovecotLab) -> None:
    """SMTP STARTTLS against an IMAP port fails with a reason, no traceback, no hang."""
    assert dialect_for_port(143) == "imap" and dialect_for_port(993) == "implicit"
    probe = probe_tls(dovecot.address, 143, "ecdsa-p256", dovecot.hostname, timeout=3,
                      dialect="smtp")
    assert probe.error is not None and "\n" not in probe.error and not probe.chain
    probe = probe_tls(dovecot.address, 993, "ecdsa-p256", dovecot.hostname, timeout=3,
                      dialect="imap")
    assert probe.error is not None and not probe.chain


def test_installer_reload_serves_the_new_key_at_once_and_rollback_restores(
        dovecot: DovecotLab) -> None:
    slot = SlotId(dovecot.hostname, 143, Algorithm.RSA2048)
    path = dovecot.chain_files["rsa2048"]
    before, old = path.read_bytes(), spki(dovecot, 143, "rsa2048")
    old_ec = spki(dovecot, 993, "ecdsa-p256")
    chain = certgen.make_chain(2, key=certgen.new_key("rsa2048"),
                               sans=(dovecot.hostname,))
    inst = DovecotInstaller(dovecot.tls_dir, dovecot.reload_command,
                            file_name="{algorithm}.pem")
    inst.install(slot, chain.leaf.key_pem(), certgen.pem(*chain.served()))
    new = tlsa.spki_sha256_hex(x509.load_pem_x509_certificate(certgen.pem(chain.leaf.cert)))
    assert spki(dovecot, 143, "rsa2048") == new == spki(dovecot, 993, "rsa2048")
    assert spki(dovecot, 993, "ecdsa-p256") == old_ec
    assert path.stat().st_mode & 0o077 == 0
    inst.rollback(slot)
    assert path.read_bytes() == before and spki(dovecot, 143, "rsa2048") == old


def slot_state(cfg: Path, host: str, port: int, alg: str) -> dict[str, Any]:
    state = json.loads((cfg.parent / "state" / "state.json").read_text())
    return state["slots"][f"{host}:{port}:{alg}"]  # type: ignore[no-any-return]


def key_of(s: dict[str, Any], role: str) -> dict[str, Any]:
    return next(k for k in s["keys"] if k["role"] == role)


def test_dovecot_imap_rollover_both_algorithms_never_breaks_dane(
        dns_lab: DnsLab, pebble_lab: PebbleLab, dovecot: DovecotLab, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host = f"imap{secrets.token_hex(3)}.example.test"
    owner = f"_143._tcp.{host}."
    dns_lab.update(host, "A", dns_lab.ttl, [dovecot.address])
    dns_lab.wait_all(host, "A", [dovecot.address])
    cfg = write_config(
        tmp_path, dns_lab, host, algorithms=ALGORITHMS,
        policy={"retire_grace": "2s", "key_lifetime": "60d", "renew_before": "1d"},
        endpoint={"port": 143, "certificate": {"source": "acme"}, "installer": "dovecot"},
        top={"acme": {"directory": pebble_lab.directory_url, "email": "hostmaster@example.test",
                      "ca_bundle": str(pebble_lab.ca_bundle)},
             "installers": {"dovecot": {"type": "dovecot", "directory": str(dovecot.tls_dir),
                                        "file_name": "{algorithm}.pem",
                                        "reload_command": dovecot.reload_command}}})
    assert main(["run", "--wait", "--config", str(cfg)]) == 0  # bootstrap
    before = {a: key_of(slot_state(cfg, host, 143, a), "next") for a in ALGORITHMS}
    mon = InvariantMonitor(dns_lab, dovecot.address, 143, "imap", owner, ALGORITHMS)
    mon.start()
    t0 = CLOCK.monotonic()
    try:
        assert main(["run", "--roll", "--wait", "--config", str(cfg)]) == 0
        took = CLOCK.monotonic() - t0
        CLOCK.sleep(1.0)
    finally:
        mon.stop()
    assert mon.violations == [], mon.violations[:5]
    assert mon.samples >= 10
    for alg in ALGORITHMS:
        s = slot_state(cfg, host, 143, alg)
        cur = key_of(s, "current")
        assert s["phase"] == "active" and cur["key_id"] == before[alg]["key_id"]
        assert len(mon.keys_seen[alg]) >= 2 and mon.keys_seen[alg][-1] == cur["spki_sha256"]
        for port in (143, 993):  # one file serves both listeners
            assert spki(dovecot, port, alg) == cur["spki_sha256"]
        assert dane_verifies(dovecot.address, 143, alg, "imap", host,
                             f"3 1 1 {cur['spki_sha256']}")
    # cron: with nothing to do, --quiet prints nothing; without it the report is printed
    capsys.readouterr()
    assert main(["--quiet", "run", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["run", "--config", str(cfg)]) == 0
    assert f"{host}:143 rsa2048: active" in capsys.readouterr().out
    print(f"\nmeasured: Dovecot IMAP forced rollover of two algorithms {took:.1f}s, "
          f"monitor samples {mon.samples}")


@pytest.mark.parametrize(("port", "tls"), [(993, "1.2"), (143, "1.3")])
def test_rollover_check_on_imap_ports_judges_each_algorithm(
        dovecot: DovecotLab, port: int, tls: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rollover check` over implicit TLS and IMAP STARTTLS, TLS 1.2 ciphers or TLS 1.3
    signature algorithms: a record for only one algorithm's key is a mismatch for the other."""
    ec, rsa = (spki(dovecot, port, a) for a in ALGORITHMS)
    base = ["check", dovecot.hostname, "--port", str(port), "--address", dovecot.address,
            "--tls", tls, "--timeout", "5"]
    assert main([*base, "--tlsa", f"3 1 1 {ec}", "--tlsa", f"3 1 1 {rsa}"]) == 0
    capsys.readouterr()
    assert main([*base, "--tlsa", f"3 1 1 {ec}"]) == 2
    out = capsys.readouterr().out
    assert "rsa2048" in out and "ecdsa-p256" in out
