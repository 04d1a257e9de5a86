"""`rollover check`: against the lab Postfix with --tlsa records that match or do not, against the
TLSA RRset of all three lab nameservers, a chain file, and bad arguments. Verdicts are compared
with `openssl s_client -dane_tlsa_*` (an independent DANE verifier) by exit code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from rollover.cli.main import main
from rollover.dane import tlsa
from rollover.environment import Environment
from rollover.errors import ExitStatus

import certgen
from lab.dns import DnsLab
from lab.postfix import HOSTNAME, PostfixLab

OWNER = "_25._tcp.mail"
CIPHER = {"ecdsa-p256": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa2048": "ECDHE-RSA-AES128-GCM-SHA256"}


def leaf_of(lab: PostfixLab, algorithm: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(lab.chain_files[algorithm].read_bytes())[0]


def rec311(lab: PostfixLab, algorithm: str) -> str:
    return tlsa.tlsa_record(leaf_of(lab, algorithm), 3, 1, 1).to_text()


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv], env=Environment(environ={}))
    out, err = capsys.readouterr()
    return code, out, err


def openssl_dane(lab: PostfixLab, algorithm: str, rrdata: str) -> int:
    proc = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"{lab.address}:{lab.port}",
         "-name", "probe.example.test", "-servername", HOSTNAME, "-tls1_2",
         "-cipher", CIPHER[algorithm], "-dane_tlsa_domain", HOSTNAME,
         "-dane_tlsa_rrdata", rrdata, "-verify_return_error", "-brief"],
        input="QUIT\r\n", capture_output=True, text=True, timeout=30,
    )
    if proc.returncode == 0:
        assert "Verified peername" in proc.stderr + proc.stdout
    return proc.returncode


# --------------------------------------------------------------------------- --tlsa


@pytest.mark.lab
def test_live_with_matching_tlsa(postfix_lab: PostfixLab,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(capsys, HOSTNAME, "--address", postfix_lab.address,
                           "--tlsa", rec311(postfix_lab, "ecdsa-p256"),
                           "--tlsa", rec311(postfix_lab, "rsa2048"))
    assert code == ExitStatus.OK, out + err
    lines = out.splitlines()
    assert len(lines) == 3
    for line, alg in zip(lines, ("ecdsa-p256", "rsa2048"), strict=False):
        assert line.startswith(f"OK    {postfix_lab.address}:25 {alg} vs --tlsa: 3 1 1 ")
        assert "(DANE-EE) matched the leaf (depth 0)" in line
    assert lines[-1] == "_25._tcp.mail.example.test. all 2 chain(s) match"


@pytest.mark.lab
def test_live_with_one_algorithm_unmatched(postfix_lab: PostfixLab,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, HOSTNAME, "--address", postfix_lab.address,
                         "--tlsa", rec311(postfix_lab, "ecdsa-p256"))
    assert code == ExitStatus.ERROR
    ok, fail = out.splitlines()[:2]
    assert ok.startswith("OK    ") and "ecdsa-p256" in ok
    assert fail.startswith(f"FAIL  {postfix_lab.address}:25 rsa2048 vs --tlsa: no record "
                           "matched: 3 1 1 ")
    assert "(DANE-EE) does not match the leaf's public key" in fail


@pytest.mark.lab
def test_json_output(postfix_lab: PostfixLab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, HOSTNAME, "--address", postfix_lab.address, "--algorithm",
                         "rsa2048", "--tlsa", rec311(postfix_lab, "rsa2048"), "--json")
    assert code == ExitStatus.OK
    doc = json.loads(out)
    assert doc["ok"] is True and doc["owner"] == "_25._tcp.mail.example.test."
    (chain,) = doc["chains"]
    assert chain["address"] == postfix_lab.address and chain["algorithm"] == "rsa2048"
    assert chain["leaf"]["tlsa_311"] == rec311(postfix_lab, "rsa2048")
    assert chain["leaf"]["algorithm"] == "rsa2048"
    (verdict,) = chain["verdicts"]
    assert verdict["ok"] is True
    assert verdict["verdict"]["by_preference"]["sha2-256"]["depth"] == 0
    assert "PRIVATE" not in out


@pytest.mark.lab
@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa2048"])
def test_verdicts_agree_with_openssl(postfix_lab: PostfixLab, algorithm: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    leaf = leaf_of(postfix_lab, algorithm)
    other = certgen.new_key("p256")
    cases = {
        "3 1 1 match": tlsa.tlsa_record(leaf, 3, 1, 1).to_text(),
        "3 0 1 match": tlsa.tlsa_record(leaf, 3, 0, 1).to_text(),
        "3 1 2 match": tlsa.tlsa_record(leaf, 3, 1, 2).to_text(),
        "3 1 1 other key": tlsa.tlsa_record(other, 3, 1, 1).to_text(),
        "2 1 1 leaf as TA": tlsa.tlsa_record(leaf, 2, 1, 1).to_text(),
    }
    for what, rrdata in cases.items():
        code, out, _ = check(capsys, HOSTNAME, "--address", postfix_lab.address,
                             "--algorithm", algorithm, "--tlsa", rrdata)
        ours = code == ExitStatus.OK
        theirs = openssl_dane(postfix_lab, algorithm, rrdata) == 0
        assert ours == theirs, f"{what}: rollover {ours}, openssl {theirs}: {out}"
        assert ours == what.endswith("match"), what


# --------------------------------------------------------------------------- DNS


@pytest.mark.lab
def test_against_every_lab_nameserver(dns_lab: DnsLab, postfix_lab: PostfixLab,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    records = [rec311(postfix_lab, "ecdsa-p256"), rec311(postfix_lab, "rsa2048")]
    dns_lab.update(OWNER, "TLSA", 2, records)
    try:
        dns_lab.wait_all(OWNER, "TLSA", records)
        code, out, err = check(capsys, HOSTNAME, "--resolver", dns_lab.primary.address)
        assert code == ExitStatus.OK, out + err
        lines = out.splitlines()
        assert len(lines) == 2 * 3 + 1
        for server in dns_lab.servers:
            hits = [ln for ln in lines if f"({server.address}):" in ln]
            assert len(hits) == 2 and all(h.startswith("OK    ") for h in hits)
        for rr in records:
            assert sum(rr.split()[3][:12] in ln for ln in lines) == 3  # each 3 1 1 per server

        code, out, _ = check(capsys, HOSTNAME, "--resolver", dns_lab.primary.address, "--json")
        doc = json.loads(out)
        assert code == ExitStatus.OK and doc["ok"] is True
        assert sorted(s["address"] for s in doc["record_sources"]) == sorted(
            s.address for s in dns_lab.servers)
        assert all(sorted(s["records"]) == sorted(records) for s in doc["record_sources"])

        # only the ECDSA key published: the RSA chain fails against every server
        dns_lab.update(OWNER, "TLSA", 2, records[:1])
        dns_lab.wait_all(OWNER, "TLSA", records[:1])
        code, out, _ = check(capsys, HOSTNAME, "--resolver", dns_lab.primary.address)
        assert code == ExitStatus.ERROR
        fails = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
        assert len(fails) == 3 and all("rsa2048" in ln for ln in fails)
        assert out.splitlines()[-1].endswith("1 of 2 chain(s) do not match")
    finally:
        dns_lab.delete(OWNER, "TLSA")
        dns_lab.wait_all(OWNER, "TLSA", [])


@pytest.mark.lab
def test_no_tlsa_record(dns_lab: DnsLab, postfix_lab: PostfixLab,
                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, HOSTNAME, "--resolver", dns_lab.primary.address,
                         "--algorithm", "ecdsa-p256")
    assert code == ExitStatus.ERROR
    fails = out.splitlines()[:-1]
    assert len(fails) == 3 and all(ln.endswith(": no TLSA records") for ln in fails)


@pytest.mark.lab
def test_chain_file_against_dns(dns_lab: DnsLab, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    chain = certgen.make_chain(2, key=certgen.new_key("p256"))
    path = certgen.write_pem(tmp_path / "candidate.pem", *chain.served())
    root_ta = tlsa.tlsa_record(chain.intermediates[0].cert, 2, 1, 1).to_text()
    dns_lab.update(OWNER, "TLSA", 2, [root_ta])
    try:
        dns_lab.wait_all(OWNER, "TLSA", [root_ta])
        code, out, _ = check(capsys, HOSTNAME, "--chain", str(path),
                             "--resolver", dns_lab.primary.address)
        assert code == ExitStatus.OK, out
        assert out.count("(DANE-TA) matched depth 1") == 3
    finally:
        dns_lab.delete(OWNER, "TLSA")
        dns_lab.wait_all(OWNER, "TLSA", [])


# --------------------------------------------------------------------------- offline


def test_chain_file_with_tlsa(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = certgen.make_chain(2, key=certgen.new_key("rsa2048"))
    path = certgen.write_pem(tmp_path / "chain.pem", *chain.served())
    good = tlsa.tlsa_record(chain.leaf.cert, 3, 1, 1).to_text()
    code, out, _ = check(capsys, HOSTNAME, "--chain", str(path), "--tlsa", good)
    assert code == ExitStatus.OK
    assert out.startswith(f"OK    file {path} vs --tlsa: 3 1 1 ")
    wrong_name = certgen.make_chain(2, sans=("other.example.test",))
    ta = tlsa.tlsa_record(wrong_name.root.cert, 2, 1, 1).to_text()
    path2 = certgen.write_pem(tmp_path / "other.pem", *wrong_name.served(root=True))
    code, out, _ = check(capsys, HOSTNAME, "--chain", str(path2), "--tlsa", ta)
    assert code == ExitStatus.ERROR
    assert "host name mail.example.test is not in the leaf" in out


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["--tlsa", "3 1 1 zz", "--address", "127.0.0.1"], ExitStatus.USAGE, "--tlsa: bad TLSA"),
    (["--tlsa", "3 1 1 abcd", "--address", "127.0.0.1"], ExitStatus.USAGE, "needs 32 bytes"),
    (["--address", "mail.example.test", "--tlsa", "3 1 1 " + "ab" * 32], ExitStatus.USAGE,
     "--address 'mail.example.test' is not an IP address"),
    (["--chain", "/nonexistent/chain.pem", "--tlsa", "3 1 1 " + "ab" * 32],
     ExitStatus.NO_INPUT, "/nonexistent/chain.pem does not exist"),
    (["--port", "0", "--tlsa", "3 1 1 " + "ab" * 32], ExitStatus.USAGE, "out of range"),
    (["--resolver", "dns.example"], ExitStatus.USAGE, "is not an IP address"),
    ([], ExitStatus.USAGE, "give --resolver IP"),
    (["--config", "/nonexistent/rollover.yaml"], ExitStatus.CONFIG, "does not exist"),
    (["--chain", "x.pem", "--address", "127.0.0.1"], ExitStatus.USAGE, "leave out --address"),
    (["--algorithm", "dsa"], ExitStatus.USAGE, "invalid choice"),
])
def test_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str], status: int,
                       message: str) -> None:
    code, out, err = check(capsys, HOSTNAME, *argv)
    assert code == status, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_chain_file_without_certificate(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = certgen.write_key(tmp_path / "key.pem", certgen.new_key("p256"))
    code, _, err = check(capsys, HOSTNAME, "--chain", str(path), "--tlsa", "3 1 1 " + "ab" * 32)
    assert code == ExitStatus.DATA
    assert "holds no certificate" in err and "PRIVATE" not in err


def test_unreachable_address_is_a_failed_chain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, HOSTNAME, "--address", "127.0.0.1", "--port", "9",
                         "--algorithm", "rsa2048", "--tlsa", "3 1 1 " + "ab" * 32)
    assert code == ExitStatus.ERROR
    assert out.splitlines()[0] == "FAIL  127.0.0.1:9 rsa2048: connection refused (nothing listens)"
