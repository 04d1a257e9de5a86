"""The STARTTLS probe: per-algorithm chains from the lab's real Postfix (TLS 1.2 cipher forcing
and TLS 1.3 signature-algorithm forcing agree), LiveProber with configured and resolved (lab DNS)
addresses, and failures that must come back as one-line errors, never exceptions."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from smtp_stub import SmtpStub

from rollover.config.load import EndpointConfig
from rollover.edges.probe import (
    TLS13_AVAILABLE,
    LiveProber,
    probe_chain,
    probe_tls,
    resolve_addresses,
)
from rollover.model import Algorithm, PresentedChain, SlotId

import certgen
from lab.dns import DnsLab
from lab.postfix import HOSTNAME, PostfixLab

ALGORITHMS = ("ecdsa-p256", "rsa2048")


def der(chain: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in chain]


def file_chain(lab: PostfixLab, algorithm: str) -> list[bytes]:
    return der(x509.load_pem_x509_certificates(lab.chain_files[algorithm].read_bytes()))


# --------------------------------------------------------------------------- real Postfix


@pytest.mark.lab
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_probe_postfix_per_algorithm(postfix_lab: PostfixLab, algorithm: str) -> None:
    p = probe_tls(postfix_lab.address, postfix_lab.port, algorithm, HOSTNAME)
    assert p.error is None
    assert p.protocol == "TLSv1.2"
    assert der(p.chain) == file_chain(postfix_lab, algorithm)
    assert der(p.chain) == postfix_lab.served_chain(algorithm)  # the lab's own probe agrees
    other = "rsa2048" if algorithm == "ecdsa-p256" else "ecdsa-p256"
    assert der(p.chain) != file_chain(postfix_lab, other)
    presented = probe_chain(postfix_lab.address, postfix_lab.port, algorithm, HOSTNAME)
    assert isinstance(presented, PresentedChain)
    assert presented.address == postfix_lab.address and presented.error is None
    assert der(presented.chain) == der(p.chain)


@pytest.mark.lab
@pytest.mark.skipif(not TLS13_AVAILABLE, reason="pyOpenSSL exposes no sigalgs control")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_probe_postfix_tls13_sigalgs(postfix_lab: PostfixLab, algorithm: str) -> None:
    p = probe_tls(postfix_lab.address, postfix_lab.port, algorithm, HOSTNAME, tls="1.3")
    assert p.error is None and p.protocol == "TLSv1.3"
    assert der(p.chain) == file_chain(postfix_lab, algorithm)


@pytest.mark.lab
def test_live_prober_configured_addresses(postfix_lab: PostfixLab) -> None:
    ep = EndpointConfig(host=HOSTNAME, provider="lab", addresses=(postfix_lab.address,))
    slot = SlotId(HOSTNAME, 25, Algorithm.RSA2048)
    seen = LiveProber([]).probe(ep, slot)  # no resolver needed: addresses are configured
    assert [s.address for s in seen] == [postfix_lab.address]
    assert seen[0].error is None
    assert der(seen[0].chain) == file_chain(postfix_lab, "rsa2048")


@pytest.mark.lab
def test_live_prober_resolves_through_the_lab_dns(dns_lab: DnsLab,
                                                  postfix_lab: PostfixLab) -> None:
    primary = dns_lab.primary.address
    # mail.example.test has A {net}.25 (Postfix) and no AAAA
    assert resolve_addresses(HOSTNAME, [primary]) == [postfix_lab.address]
    ep = EndpointConfig(host=HOSTNAME, provider="lab")
    seen = LiveProber([primary]).probe(ep, SlotId(HOSTNAME, 25, Algorithm.ECDSA_P256))
    assert [(s.address, s.error) for s in seen] == [(postfix_lab.address, None)]
    assert der(seen[0].chain) == file_chain(postfix_lab, "ecdsa-p256")
    # mail2 has an address where nothing listens: an error entry, not an exception
    ep2 = EndpointConfig(host="mail2.example.test", provider="lab")
    seen2 = LiveProber([primary]).probe(ep2, SlotId("mail2.example.test", 25,
                                                    Algorithm.ECDSA_P256))
    assert [(s.error, s.nothing_served) for s in seen2] == [
        ("connection refused (nothing listens)", True)]
    # a name without addresses: nothing to probe (the engine reports "no address")
    ep3 = EndpointConfig(host="nothing.example.test", provider="lab")
    assert LiveProber([primary]).probe(ep3, SlotId("nothing.example.test", 25,
                                                   Algorithm.RSA2048)) == []


def test_live_prober_resolver_not_answering() -> None:
    ep = EndpointConfig(host=HOSTNAME, provider="lab")
    seen = LiveProber(["127.0.0.1"], dns_port=9, dns_timeout=0.5).probe(
        ep, SlotId(HOSTNAME, 25, Algorithm.RSA2048))
    assert len(seen) == 1 and seen[0].chain == ()
    assert seen[0].error is not None and seen[0].error.startswith("cannot resolve")
    assert "\n" not in seen[0].error


# --------------------------------------------------------------------------- failures


def test_nothing_listening_is_an_error_not_an_exception() -> None:
    with SmtpStub("127.0.0.1") as stub:
        port = stub.port
    p = probe_chain("127.0.0.1", port, "ecdsa-p256", HOSTNAME, timeout=2)
    assert p == PresentedChain("127.0.0.1", (), "connection refused (nothing listens)",
                               nothing_served=True)


def test_plain_server_without_starttls() -> None:
    with SmtpStub("127.0.0.1") as stub:
        p = probe_chain("127.0.0.1", stub.port, "rsa2048", HOSTNAME, timeout=5)
    assert p.chain == ()
    assert p.error is not None and p.error.startswith("no STARTTLS")
    assert not p.nothing_served  # a server that hides its key: bootstrap must not go blind


def test_refusing_banner() -> None:
    with SmtpStub("127.0.0.1", banner="554 go away") as stub:
        p = probe_chain("127.0.0.1", stub.port, "rsa2048", HOSTNAME, timeout=5)
    assert p.error == "SMTP banner 554 go away"


def test_silent_server_times_out() -> None:
    with SmtpStub("127.0.0.1", silent=True) as stub:
        p = probe_chain("127.0.0.1", stub.port, "rsa2048", HOSTNAME, timeout=0.3)
    assert p.error == "timed out waiting for the banner reply"
    assert not p.nothing_served


def test_not_an_ip_address_is_never_resolved() -> None:
    p = probe_chain("localhost", 25, "rsa2048", HOSTNAME)
    assert p.error == "'localhost' is not an IP address"


def test_no_certificate_of_that_algorithm() -> None:
    chain = certgen.make_chain(2, key=certgen.new_key("p256"))
    with SmtpStub("127.0.0.1", starttls=True, chain=chain.served(), key=chain.leaf.key) as stub:
        ok = probe_tls("127.0.0.1", stub.port, "ecdsa-p256", HOSTNAME, timeout=5)
        bad = probe_tls("127.0.0.1", stub.port, "rsa2048", HOSTNAME, timeout=5)
    assert ok.error is None and der(ok.chain) == der(chain.served())
    assert bad.chain == ()
    assert bad.error is not None and "no shared cipher" in bad.error
    assert "no rsa2048 certificate" in bad.error and "\n" not in bad.error
    assert bad.nothing_served and not ok.nothing_served


def test_ipv6_literal() -> None:
    chain = certgen.make_chain(1, key=certgen.new_key("rsa2048"))
    try:
        stub = SmtpStub("::1", starttls=True, chain=chain.served(), key=chain.leaf.key)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with stub:
        p = probe_chain("::1", stub.port, "rsa2048", HOSTNAME, timeout=5)
        bracketed = probe_chain("[::1]", stub.port, "rsa2048", HOSTNAME, timeout=5)
    assert p.error is None and p.address == "::1"
    assert der(p.chain) == der(chain.served())
    assert bracketed.error is None
