"""Smoke tests of the application half of the lab: Pebble (ACME over HTTPS, DNS-01 against the lab
primary) and Postfix (STARTTLS per algorithm), end to end with an independent DANE verifier."""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rollover.dane.tlsa import tlsa_record
from rollover.edges.acme_client import AcmeIssueError, AcmeIssuer

from lab.dns import DnsLab
from lab.dns01 import LabDns01
from lab.pebble import PebbleLab
from lab.pki import chain_file_bytes, generate_key, key_pem
from lab.postfix import HOSTNAME, PostfixLab
from lab.proc import tcp_open, wait_for

pytestmark = pytest.mark.lab

CIPHER = {"ecdsa-p256": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa2048": "ECDHE-RSA-AES128-GCM-SHA256"}


def spki(key: object) -> bytes:
    data: bytes = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    hash_alg = cert.signature_hash_algorithm
    assert hash_alg is not None
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_alg))
        else:
            return False
    except Exception:
        return False
    return True


def dane_check(postfix: PostfixLab, algorithm: str,
               rrdata: str) -> subprocess.CompletedProcess[str]:
    """The independent verifier: openssl s_client with DANE, forced to one key algorithm."""
    return subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"{postfix.address}:{postfix.port}", "-name", "lab.example.test",
         "-tls1_2", "-cipher", CIPHER[algorithm],
         "-dane_tlsa_domain", HOSTNAME, "-dane_tlsa_rrdata", rrdata, "-verify_return_error"],
        input="QUIT\r\n", capture_output=True, text=True, timeout=30)


# -- Pebble -------------------------------------------------------------------------------------


def test_pebble_directory_over_https_trusted_by_lab_ca(pebble_lab: PebbleLab) -> None:
    assert pebble_lab.directory_url.startswith(f"https://{pebble_lab.address}:")
    ctx = ssl.create_default_context(cafile=str(pebble_lab.ca_bundle))
    with urllib.request.urlopen(pebble_lab.directory_url, context=ctx, timeout=5) as resp:
        directory = json.loads(resp.read())
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory)
    # Without the lab CA the server is not trusted: the trust really comes from ca_bundle.
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(pebble_lab.directory_url, context=ssl.create_default_context(),
                               timeout=5)
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_pebble_root_and_intermediate(pebble_lab: PebbleLab) -> None:
    roots = [x509.load_pem_x509_certificate(p) for p in pebble_lab.roots()]
    intermediates = [x509.load_pem_x509_certificate(p) for p in pebble_lab.intermediates()]
    assert roots and intermediates
    root, intermediate = roots[0], intermediates[0]
    assert root.subject == root.issuer and signed_by(root, root)
    assert intermediate.issuer == root.subject and signed_by(intermediate, root)


# -- Postfix ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa2048"])
def test_postfix_serves_starttls_per_algorithm(postfix_lab: PostfixLab, algorithm: str) -> None:
    chain = postfix_lab.served_chain(algorithm)
    leaf = x509.load_der_x509_certificate(chain[0])
    expected = {"ecdsa-p256": ec.EllipticCurvePublicKey, "rsa2048": rsa.RSAPublicKey}
    assert isinstance(leaf.public_key(), expected[algorithm])
    key = serialization.load_pem_private_key(
        postfix_lab.chain_files[algorithm].read_bytes(), password=None)
    assert spki(leaf.public_key()) == spki(key.public_key())
    mode = postfix_lab.chain_files[algorithm].stat().st_mode & 0o777
    assert mode == 0o600
    assert postfix_lab.reload_command[:3] == ["/usr/sbin/postfix", "-c",
                                              str(postfix_lab.config_dir)]


# -- ACME by DNS-01 into Postfix, verified with DANE ---------------------------------------------


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa2048"])
def test_acme_certificate_for_given_key_served_and_dane_verified(
        dns_lab: DnsLab, pebble_lab: PebbleLab, postfix_lab: PostfixLab, tmp_path: Path,
        algorithm: str) -> None:
    key = generate_key(algorithm)
    dns01 = LabDns01(dns_lab)
    issuer = AcmeIssuer(pebble_lab.directory_url, tmp_path / "account.key",
                        email="hostmaster@example.test", ca_bundle=pebble_lab.ca_bundle,
                        timeout=60)
    issued = issuer.order(key_pem(key), [HOSTNAME], dns01)

    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    leaf = chain[0]
    assert spki(leaf.public_key()) == spki(key.public_key())  # the given key, not a new one
    assert leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [HOSTNAME]
    assert issued.not_after == leaf.not_valid_after_utc
    assert issued.serial == f"{leaf.serial_number:x}"
    assert issued.ari is None  # Pebble 2.4 has no renewalInfo
    intermediate = x509.load_pem_x509_certificate(pebble_lab.intermediates()[0])
    root = x509.load_pem_x509_certificate(pebble_lab.roots()[0])
    assert chain[-1] == intermediate and signed_by(leaf, intermediate)
    assert signed_by(intermediate, root)

    # DNS-01 went through the lab: published, seen everywhere, removed again.
    challenge = f"_acme-challenge.{HOSTNAME}."
    assert dns01.names("publish") == dns01.names("cleanup") == [challenge]
    wait_for(lambda: not any(dns_lab.query(s, challenge, "TXT").records
                             for s in dns_lab.servers), 10, f"TXT {challenge} gone everywhere")

    # Install into Postfix (key then chain, 0600), reload, and wait until it is served.
    postfix_lab.install_chain(algorithm, chain_file_bytes(key, chain))
    postfix_lab.reload()
    wanted = leaf.public_bytes(serialization.Encoding.DER)
    wait_for(lambda: postfix_lab.served_chain(algorithm)[0] == wanted, 15,
             f"Postfix to serve the new {algorithm} certificate")
    assert len(postfix_lab.served_chain(algorithm)) == len(chain)

    good = tlsa_record(key).to_text()
    assert good.startswith("3 1 1 ")
    ok = dane_check(postfix_lab, algorithm, good)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "Verification: OK" in ok.stdout
    assert f"Verified peername: {HOSTNAME}" in ok.stdout or "DANE TLSA 3 1 1" in ok.stdout

    wrong = "3 1 1 " + secrets.token_hex(32)
    bad = dane_check(postfix_lab, algorithm, wrong)
    assert bad.returncode != 0
    assert "Verification: OK" not in bad.stdout


def test_acme_challenge_never_published_fails_cleanly(
        dns_lab: DnsLab, pebble_lab: PebbleLab, tmp_path: Path) -> None:
    host = f"nochallenge-{secrets.token_hex(3)}.example.test"
    dns01 = LabDns01(dns_lab, publish_for_real=False)
    issuer = AcmeIssuer(pebble_lab.directory_url, tmp_path / "account.key",
                        ca_bundle=pebble_lab.ca_bundle, timeout=60)
    with pytest.raises(AcmeIssueError) as info:
        issuer.order(key_pem(generate_key("ecdsa-p256")), [host], dns01)
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert host in message and "dns-01" in message
    assert "unauthorized" in message or "incorrectResponse" in message, message
    assert err.retryable  # a later run with the record published may succeed
    challenge = f"_acme-challenge.{host}."
    assert dns01.names("cleanup") == [challenge]  # cleaned up in the finally
    for server in dns_lab.servers:
        assert not dns_lab.query(server, challenge, "TXT").records


# -- clean stop and start, twice ---------------------------------------------------------------


def _master_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _on_lo(address: str) -> bool:
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                           text=True, check=True).stdout
    return f" {address}/" in shown


def test_postfix_stops_and_starts_cleanly_twice(postfix_lab: PostfixLab) -> None:
    served = postfix_lab.served_chain("ecdsa-p256")
    for _ in range(2):
        pid = postfix_lab.master_pid
        assert pid is not None and _master_alive(pid)
        postfix_lab.stop()
        try:
            assert not _master_alive(pid)
            assert not tcp_open(postfix_lab.address, postfix_lab.port)
            assert not _on_lo(postfix_lab.address)  # the address the lab added is gone again
        finally:
            postfix_lab.start()  # a failure here must not take the session's Postfix down
        assert _on_lo(postfix_lab.address)
        assert postfix_lab.served_chain("ecdsa-p256") == served  # same chain files


def test_pebble_stops_and_starts_cleanly_twice(dns_lab: DnsLab) -> None:
    pebble = PebbleLab(f"{dns_lab.primary.address}:53", dns_lab.net, port=14003,
                       management_port=15003)
    try:
        roots = []
        for _ in range(2):
            pebble.start()
            pid = pebble.pid
            assert pid is not None and "newOrder" in pebble.directory()
            roots.append(pebble.roots()[0])
            pebble.stop()
            assert not _master_alive(pid)
            assert not tcp_open(pebble.address, 14003)
        assert roots[0] != roots[1]  # Pebble makes a new root at every start
    finally:
        pebble.close()
    assert not pebble.workdir.exists()
