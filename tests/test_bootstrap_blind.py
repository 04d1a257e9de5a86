"""Never publish blind: at bootstrap the key in service must be seen on every address before any
TLSA record goes out; a failed look blocks publishing and `run` exits non-zero.

The outage this guards against: rollover publishes `3 1 1 current + next` for a server whose
certificate it could not see; from then until our first install, DANE senders find no record
matching the certificate in service and defer mail. Real BIND/Knot lab; the SMTP side is a small
stub (silent, no STARTTLS, a real certificate) where Postfix cannot show the case.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from smtp_stub import SmtpStub
from test_engine_dns_lab import new_host

from rollover.cli.main import main
from rollover.dane import tlsa
from rollover.errors import ExitStatus

import certgen
from lab.configs import write_config
from lab.dns import DnsLab
from lab.proc import wait_for

pytestmark = pytest.mark.lab


def _served(lab: DnsLab, host: str, port: int) -> list[frozenset[str]]:
    return [lab.query(srv, f"_{port}._tcp.{host}.", "TLSA").records for srv in lab.servers]


def _slot(cfg_dir: Path, host: str, port: int) -> dict:
    doc = json.loads((cfg_dir / "state" / "state.json").read_text())
    return doc["slots"][f"{host}:{port}:ecdsa-p256"]


def _config(tmp_path: Path, lab: DnsLab, host: str, port: int, **endpoint: object) -> Path:
    return write_config(tmp_path, lab, host,
                        endpoint={"port": port, "addresses": ["127.0.0.1"], **endpoint})


@pytest.mark.parametrize("kind", ["no-starttls", "silent"])
def test_a_failed_look_blocks_publishing_until_the_operator_says_no_certificate(
        dns_lab: DnsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    host = new_host()
    with SmtpStub("127.0.0.1", silent=kind == "silent") as stub:
        cfg = _config(tmp_path, dns_lab, host, stub.port)
        rc = main(["run", "--wait", "--config", str(cfg)])
        out = capsys.readouterr().out
        assert rc == ExitStatus.ERROR
        assert f"127.0.0.1:{stub.port}" in out and "can't see the key in service" in out
        assert ("no STARTTLS" if kind == "no-starttls" else "banner reply") in out
        assert all(not rrset for rrset in _served(dns_lab, host, stub.port))
        s = _slot(tmp_path, host, stub.port)
        assert s["phase"] == "new" and not s["live_checked"] and not s["records"]
        # a second run (cron) still refuses, and still says why
        assert main(["run", "--config", str(cfg)]) == ExitStatus.ERROR
        assert all(not rrset for rrset in _served(dns_lab, host, stub.port))
        capsys.readouterr()
        # the operator's explicit statement lets it go on
        cfg = _config(tmp_path, dns_lab, host, stub.port, bootstrap="no-certificate")
        assert main(["run", "--config", str(cfg)]) == ExitStatus.OK
    wait_for(lambda: all(len(r) == 2 for r in _served(dns_lab, host, stub.port)), 5,
             "current + next on every server")


def test_nothing_listening_is_not_blind(dns_lab: DnsLab, tmp_path: Path) -> None:
    host = new_host()
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = _config(tmp_path, dns_lab, host, port)
    assert main(["run", "--config", str(cfg)]) == ExitStatus.OK
    wait_for(lambda: all(len(r) == 2 for r in _served(dns_lab, host, port)), 5,
             "current + next on every server")


def test_the_key_a_server_presents_is_published_with_ours(dns_lab: DnsLab,
                                                         tmp_path: Path) -> None:
    host = new_host()
    chain = certgen.make_chain(2, key=certgen.new_key("p256"))
    with SmtpStub("127.0.0.1", starttls=True, chain=chain.served(), key=chain.leaf.key) as stub:
        cfg = _config(tmp_path, dns_lab, host, stub.port)
        assert main(["run", "--config", str(cfg)]) == ExitStatus.OK
        in_service = f"3 1 1 {tlsa.spki_sha256_hex(chain.served()[0])}"
    wait_for(lambda: all(len(r) == 3 and in_service in r
                         for r in _served(dns_lab, host, stub.port)), 5,
             "current + next + the key in service on every server")
