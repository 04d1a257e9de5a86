"""`rollover check HOST` for monitoring: a submission service on port 587 (SMTP STARTTLS), the
Nagios plugin output with perfdata and expiry thresholds, JSON valid against its schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography import x509

from rollover.cli.main import main
from rollover.dane import tlsa
from rollover.environment import Environment
from rollover.errors import ExitStatus

from lab.pki import chain_file_bytes, generate_key, self_signed, write_private
from lab.postfix import PostfixLab
from schema_check import validate

pytestmark = pytest.mark.lab
HOST = "submit.example.test"


@pytest.fixture(scope="module")
def submission() -> Iterator[tuple[PostfixLab, dict[str, x509.Certificate]]]:
    lab = PostfixLab(hostname=HOST)
    lab.address = f"{lab.net}.29"
    lab.port = 587
    lab.tls_dir.mkdir(parents=True, exist_ok=True)
    certs = {}
    for alg in ("ecdsa-p256", "rsa2048"):
        key = generate_key(alg)
        certs[alg] = self_signed(key, [HOST], days=10)
        write_private(lab.chain_files[alg], chain_file_bytes(key, [certs[alg]]))
    lab.start()
    try:
        yield lab, certs
    finally:
        lab.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["check", HOST, *argv], env=Environment(environ={}))
    return code, capsys.readouterr().out


def test_port_587_json_is_valid_and_matches(
        submission: tuple[PostfixLab, dict[str, x509.Certificate]],
        capsys: pytest.CaptureFixture[str]) -> None:
    lab, certs = submission
    recs = [tlsa.tlsa_record(c, 3, 1, 1).to_text() for c in certs.values()]
    code, out = run(capsys, "--port", "587", "--address", lab.address, "--json",
                    *[a for r in recs for a in ("--tlsa", r)])
    doc = json.loads(out)
    validate(doc, "check-host.schema.json")
    assert code == ExitStatus.OK and doc["ok"] and doc["owner"] == f"_587._tcp.{HOST}."
    assert [c["label"] for c in doc["chains"]] == [f"{lab.address}:587 ecdsa-p256",
                                                   f"{lab.address}:587 rsa2048"]
    assert all(c["protocol"] == "TLSv1.2" for c in doc["chains"])


def test_nagios_thresholds_on_days_to_expiry(
        submission: tuple[PostfixLab, dict[str, x509.Certificate]],
        capsys: pytest.CaptureFixture[str]) -> None:
    lab, certs = submission
    recs = [a for c in certs.values() for a in ("--tlsa", tlsa.tlsa_record(c, 3, 1, 1).to_text())]
    base = ["--port", "587", "--address", lab.address, "--nagios", *recs]
    code, out = run(capsys, *base, "-w", "5", "-c", "2")  # 10 days left: OK
    assert code == ExitStatus.OK and out.startswith("DANE OK - "), out
    assert "'days_to_expiry'=" in out and ";5:;2:" in out and "'chains_matching'=2;;;0" in out
    code, out = run(capsys, *base, "-w", "30:", "-c", "2")
    assert code == ExitStatus.WARNING and out.startswith("DANE WARNING - "), out
    code, out = run(capsys, *base, "-w", "60", "-c", "30")
    assert code == ExitStatus.ERROR and out.startswith("DANE CRITICAL - "), out
    # one record missing: the RSA chain does not match -> CRITICAL, named on its own line
    code, out = run(capsys, *base[:5], "--tlsa", recs[1])
    assert code == ExitStatus.ERROR and f"{lab.address}:587 rsa2048: no match on --tlsa" in out


def test_nagios_bad_thresholds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--nagios", "--tlsa", "3 1 1 " + "ab" * 32, "--address",
                    "127.0.0.1", "-w", "7", "-c", "21")
    assert code == ExitStatus.UNKNOWN and out.startswith("DANE UNKNOWN - -w 7 must not be below")
