"""The ACME client (rollover.edges.acme_client) against real Pebble, DNS-01 through the real
DNS lab."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from rollover.clock import SystemClock
from rollover.edges.acme_client import AcmeIssueError, AcmeIssuer, ari_cert_id, translate
from rollover.errors import AcmeError

from lab.dns import DnsLab
from lab.dns01 import LabDns01
from lab.pebble import PebbleLab
from lab.pki import LabCA, generate_key, key_pem

CLOCK = SystemClock()


def fresh_host(prefix: str = "acme") -> str:
    return f"{prefix}-{secrets.token_hex(3)}.example.test"


class NoDns01:
    """For cases that must fail before any DNS-01 work."""

    def publish(self, name: str, values: frozenset[str]) -> None:
        raise AssertionError(f"publish {name} called")

    def wait_visible(self, name: str, values: frozenset[str]) -> None:
        raise AssertionError(f"wait_visible {name} called")

    def cleanup(self, name: str, values: frozenset[str]) -> None:
        raise AssertionError(f"cleanup {name} called")


def issuer(pebble: PebbleLab, path: Path, **kw: object) -> AcmeIssuer:
    return AcmeIssuer(pebble.directory_url, path / "account.key", ca_bundle=pebble.ca_bundle,
                      timeout=60, **kw)  # type: ignore[arg-type]


# -- pure parts (no server) ---------------------------------------------------------------------


def test_ari_cert_id_matches_rfc9773_example() -> None:
    key = generate_key("ecdsa-p256")
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    now = CLOCK.now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(0x87654321)
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(key, hashes.SHA256()))
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize(("code", "retryable"), [
    ("rateLimited", True), ("badNonce", True), ("serverInternal", True),
    ("unauthorized", True), ("connection", True), ("malformed", False), ("badCSR", False),
    ("rejectedIdentifier", False), ("caa", False),
])
def test_acme_problem_codes_map_to_retryable(code: str, retryable: bool) -> None:
    err = translate(messages.Error.with_code(code, detail="line one\nline two"), "new order",
                    "ca.example")
    assert isinstance(err, AcmeError)
    assert err.retryable is retryable
    assert err.code == code
    assert "\n" not in str(err) and code in str(err) and "line one line two" in str(err)


def test_bad_staged_key_is_refused_before_any_network(tmp_path: Path) -> None:
    iss = AcmeIssuer("https://127.0.0.1:9/dir", tmp_path / "account.key")
    with pytest.raises(AcmeIssueError) as info:
        iss.order(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
                  ["mail.example.test"], NoDns01())
    assert not info.value.retryable
    assert "not a key" not in str(info.value)
    with pytest.raises(AcmeIssueError, match="no names"):
        iss.order(key_pem(generate_key()), [], NoDns01())
    assert not (tmp_path / "account.key").exists()


def test_loose_account_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "account.key"
    path.write_bytes(key_pem(generate_key()))
    os.chmod(path, 0o644)
    iss = AcmeIssuer("https://127.0.0.1:9/dir", path)
    with pytest.raises(AcmeIssueError) as info:
        iss.order(key_pem(generate_key()), ["mail.example.test"], NoDns01())
    assert str(path) in str(info.value) and "0644" in str(info.value)
    assert not info.value.retryable


# -- against Pebble ---------------------------------------------------------------------------


@pytest.mark.lab
def test_account_created_private_and_reused(dns_lab: DnsLab, pebble_lab: PebbleLab,
                                            tmp_path: Path) -> None:
    first = issuer(pebble_lab, tmp_path)
    first.order(key_pem(generate_key()), [fresh_host()], LabDns01(dns_lab))
    key_file = tmp_path / "account.key"
    registration = tmp_path / "account.key.account.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert registration.stat().st_mode & 0o777 == 0o600
    saved = registration.read_bytes()
    key_before = key_file.read_bytes()
    assert first.account_uri and first.account_uri.encode() in saved
    assert b"PRIVATE" not in saved

    second = issuer(pebble_lab, tmp_path)  # a later run
    second.order(key_pem(generate_key("rsa2048")), [fresh_host()], LabDns01(dns_lab))
    assert second.account_uri == first.account_uri
    assert registration.read_bytes() == saved  # nothing re-registered
    assert key_file.read_bytes() == key_before


@pytest.mark.lab
def test_wildcard_and_apex_share_one_txt_name(dns_lab: DnsLab, pebble_lab: PebbleLab,
                                              tmp_path: Path) -> None:
    base = fresh_host("wild")
    dns01 = LabDns01(dns_lab)
    issued = issuer(pebble_lab, tmp_path).order(key_pem(generate_key()), [base, f"*.{base}"],
                                                dns01)
    challenge = f"_acme-challenge.{base}."
    published = [v for kind, name, v in dns01.calls if kind == "publish"]
    assert dns01.names("publish") == [challenge] and len(published[0]) == 2
    assert dns01.names("cleanup") == [challenge]
    leaf = x509.load_pem_x509_certificates(issued.chain_pem)[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted([base, f"*.{base}"])


@pytest.mark.lab
def test_ca_down_is_retryable(pebble_lab: PebbleLab, tmp_path: Path) -> None:
    dead = f"https://{pebble_lab.address}:14999/dir"  # nothing listens there
    iss = AcmeIssuer(dead, tmp_path / "account.key", ca_bundle=pebble_lab.ca_bundle)
    with pytest.raises(AcmeIssueError) as info:
        iss.order(key_pem(generate_key()), [fresh_host()], NoDns01())
    assert info.value.retryable
    assert "connection refused" in str(info.value) and "14999" in str(info.value)


@pytest.mark.lab
def test_untrusted_acme_server_is_not_retryable(pebble_lab: PebbleLab, tmp_path: Path) -> None:
    other_ca = LabCA(tmp_path / "other-ca", "some other CA")
    iss = AcmeIssuer(pebble_lab.directory_url, tmp_path / "account.key",
                     ca_bundle=other_ca.ca_bundle)
    with pytest.raises(AcmeIssueError) as info:
        iss.order(key_pem(generate_key()), [fresh_host()], NoDns01())
    assert not info.value.retryable
    assert "TLS verification" in str(info.value) and "ca_bundle" in str(info.value)


@pytest.mark.lab
def test_profile_not_offered_is_refused_before_dns(dns_lab: DnsLab, pebble_lab: PebbleLab,
                                                   tmp_path: Path) -> None:
    dns01 = LabDns01(dns_lab)
    iss = issuer(pebble_lab, tmp_path, profile="shortlived")
    with pytest.raises(AcmeIssueError, match="does not offer profile 'shortlived'") as info:
        iss.order(key_pem(generate_key()), [fresh_host()], dns01)
    assert not info.value.retryable
    assert dns01.calls == []


@pytest.mark.lab
def test_no_renewal_info_on_pebble_2_4(dns_lab: DnsLab, pebble_lab: PebbleLab,
                                       tmp_path: Path) -> None:
    iss = issuer(pebble_lab, tmp_path)
    issued = iss.order(key_pem(generate_key()), [fresh_host()], LabDns01(dns_lab))
    assert issued.ari is None
    assert iss.renewal_window(issued.chain_pem, issued.chain_pem) is None


# -- separate Pebble instances (EAB; a restart that forgets accounts) ---------------------------


@pytest.fixture
def eab_pebble(dns_lab: DnsLab) -> Iterator[tuple[PebbleLab, str, str]]:
    hmac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    lab = PebbleLab(f"{dns_lab.primary.address}:53", dns_lab.net,
                    eab_keys={"kid-1": hmac_key}, port=14001, management_port=15001)
    lab.start()
    try:
        yield lab, "kid-1", hmac_key
    finally:
        lab.close()


@pytest.mark.lab
def test_external_account_binding(dns_lab: DnsLab, eab_pebble: tuple[PebbleLab, str, str],
                                  tmp_path: Path) -> None:
    pebble, kid, hmac_key = eab_pebble
    without = issuer(pebble, tmp_path / "a")
    with pytest.raises(AcmeIssueError, match="requires external account binding") as info:
        without.order(key_pem(generate_key()), [fresh_host()], LabDns01(dns_lab))
    assert not info.value.retryable

    wrong = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    bad = issuer(pebble, tmp_path / "b", eab_kid=kid, eab_hmac_key=wrong)
    with pytest.raises(AcmeIssueError) as info:
        bad.order(key_pem(generate_key()), [fresh_host()], LabDns01(dns_lab))
    assert "account registration" in str(info.value)
    assert wrong not in str(info.value) and hmac_key not in str(info.value)

    good = issuer(pebble, tmp_path / "c", eab_kid=kid, eab_hmac_key=hmac_key)
    issued = good.order(key_pem(generate_key()), [fresh_host()], LabDns01(dns_lab))
    assert issued.chain_pem.count(b"BEGIN CERTIFICATE") >= 2


@pytest.mark.lab
def test_account_forgotten_by_ca_is_registered_again(dns_lab: DnsLab, tmp_path: Path) -> None:
    pebble = PebbleLab(f"{dns_lab.primary.address}:53", dns_lab.net, port=14002,
                       management_port=15002)
    try:
        pebble.start()
        first = issuer(pebble, tmp_path)
        first.order(key_pem(generate_key()), [fresh_host()], LabDns01(dns_lab))
        old_uri = first.account_uri
        pebble.stop()
        pebble.start()  # Pebble keeps no state: the saved account URL is now unknown to it
        second = issuer(pebble, tmp_path)
        issued = second.order(key_pem(generate_key()), [fresh_host()], LabDns01(dns_lab))
        assert issued.serial
        assert second.account_uri and second.account_uri != old_uri
        saved = (tmp_path / "account.key.account.json").read_text()
        assert second.account_uri in saved and str(old_uri) not in saved
    finally:
        pebble.close()


@pytest.mark.lab
def test_certificate_key_is_the_staged_key(dns_lab: DnsLab, pebble_lab: PebbleLab,
                                           tmp_path: Path) -> None:
    staged = generate_key("rsa2048")
    issued = issuer(pebble_lab, tmp_path).order(key_pem(staged), [fresh_host()],
                                                LabDns01(dns_lab))
    leaf = x509.load_pem_x509_certificates(issued.chain_pem)[0]
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert leaf.public_key().public_bytes(*fmt) == staged.public_key().public_bytes(*fmt)


@pytest.mark.lab
def test_bad_nonces_are_retried_then_reported_as_retryable(dns_lab: DnsLab,
                                                           tmp_path: Path) -> None:
    flaky = PebbleLab(f"{dns_lab.primary.address}:53", dns_lab.net, port=14004,
                      management_port=15004, nonce_reject=30)
    hopeless = PebbleLab(f"{dns_lab.primary.address}:53", dns_lab.net, port=14005,
                         management_port=15005, nonce_reject=100)
    try:
        flaky.start()
        hopeless.start()
        # 30 % of nonces rejected: the client's retries carry the order through.
        issued = issuer(flaky, tmp_path / "flaky").order(key_pem(generate_key()),
                                                         [fresh_host()], LabDns01(dns_lab))
        assert issued.serial
        # Every nonce rejected: a retryable error, not a hang or a traceback.
        with pytest.raises(AcmeIssueError) as info:
            issuer(hopeless, tmp_path / "hopeless").order(key_pem(generate_key()),
                                                          [fresh_host()], NoDns01())
        assert info.value.retryable and info.value.code == "badNonce"
        assert "\n" not in str(info.value)
    finally:
        flaky.close()
        hopeless.close()
