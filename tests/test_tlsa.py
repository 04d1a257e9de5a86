"""rollover.dane.tlsa against the real openssl CLI (the seed how-to's recipes) as the reference."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rollover.dane import tlsa
from rollover.errors import InputError, MissingInputError
from rollover.model import Algorithm, TLSARecord

import certgen

KINDS = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384"]
COMBOS = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def openssl(*args: str, data: bytes | None = None) -> bytes:
    res = subprocess.run(["openssl", *args], input=data, capture_output=True, check=True)
    return res.stdout


def openssl_digest(mtype: int, data: bytes) -> str:
    """`openssl sha256` / `openssl sha512` output "SHA2-256(stdin)= hex" -> hex; mtype 0: hex."""
    if mtype == 0:
        return data.hex()
    out = openssl("sha256" if mtype == 1 else "sha512", data=data).decode()
    return out.strip().rsplit("= ", 1)[1]


def openssl_cert_data(cert_file: Path, selector: int, inform: str = "PEM") -> bytes:
    """The seed's recipes: selector 1 = `x509 -noout -pubkey | pkey -pubin -outform DER`,
    selector 0 = `x509 -outform DER`."""
    if selector == 1:
        pub_pem = openssl("x509", "-inform", inform, "-in", str(cert_file), "-noout", "-pubkey")
        return openssl("pkey", "-pubin", "-outform", "DER", data=pub_pem)
    return openssl("x509", "-inform", inform, "-in", str(cert_file), "-outform", "DER")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, certgen.Issued]:
    root = certgen.make_root("TLSA Test Root", certgen.new_key("p256"))
    return {k: certgen.make_leaf(root, ["mail.example.test"], certgen.key(k)) for k in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_certificate_records_equal_openssl(kind: str, certs: dict[str, certgen.Issued],
                                           tmp_path: Path) -> None:
    leaf = certs[kind]
    pem_file = certgen.write_pem(tmp_path / "cert.pem", leaf)
    der_file = tmp_path / "cert.der"
    der_file.write_bytes(certgen.cert_der(leaf.cert))
    ref_data = {s: openssl_cert_data(pem_file, s) for s in (0, 1)}
    assert openssl_cert_data(der_file, 1, "DER") == ref_data[1]
    for path in (pem_file, der_file):
        material = tlsa.load_material(path)
        assert material.kind == "certificate"
        assert material.encoding == ("PEM" if path is pem_file else "DER")
        for selector, mtype in COMBOS:
            rec = tlsa.tlsa_record(material.primary(), 3, selector, mtype)
            assert rec.data.hex() == openssl_digest(mtype, ref_data[selector]), (
                path.name, selector, mtype)
            assert rec.to_text().startswith(f"3 {selector} {mtype} ")
    # the how-to's exact default, 3 1 1, and spki_sha256_hex agree
    assert tlsa.spki_sha256_hex(leaf.cert) == openssl_digest(1, ref_data[1])
    assert tlsa.spki_der(leaf.key) == ref_data[1]


@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096", "p256", "p384"])
def test_key_files_equal_openssl(kind: str, tmp_path: Path) -> None:
    key = certgen.key(kind)
    files = {
        "pub.pem": certgen.public_key_pem(key),
        "pub.der": certgen.public_key_der(key),
        "key.pem": certgen.private_key_pem(key),
        "key-traditional.pem": certgen.private_key_pem(key, traditional=True),
        "key.der": certgen.private_key_der(key),
    }
    priv = tmp_path / "key.pem"
    priv.write_bytes(files["key.pem"])
    ref_spki = openssl("pkey", "-in", str(priv), "-pubout", "-outform", "DER")
    pub = tmp_path / "pub.pem"
    pub.write_bytes(files["pub.pem"])
    assert openssl("pkey", "-pubin", "-in", str(pub), "-outform", "DER") == ref_spki
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        material = tlsa.load_material(path)
        assert material.kind == ("public key" if name.startswith("pub") else "private key"), name
        for mtype in (0, 1, 2):
            rec = tlsa.tlsa_record(material.primary(), 3, 1, mtype)
            assert rec.data.hex() == openssl_digest(mtype, ref_spki), (name, mtype)
        with pytest.raises(InputError, match=r"selector 0 .* needs a certificate"):
            tlsa.tlsa_record(material.primary(), 3, 0, 1)


def test_zone_line_and_record_text() -> None:
    rec = TLSARecord.from_text(
        "3 1 1 29c8601cb562d00aa7190003b5c17e61a93dcbed3f61fd2f86bd35fbb461d084")
    assert tlsa.zone_line(rec, "mail.example.nl") == (
        "_25._tcp.mail.example.nl. IN TLSA 3 1 1 "
        "29c8601cb562d00aa7190003b5c17e61a93dcbed3f61fd2f86bd35fbb461d084")
    assert tlsa.zone_line(rec, "Mail.Example.NL.", port=465, ttl=300).startswith(
        "_465._tcp.mail.example.nl. 300 IN TLSA 3 1 1 29c8")


def test_unknown_usage_selector_mtype_rejected() -> None:
    key = certgen.key("p256")
    for kwargs in ({"usage": 4}, {"selector": 2}, {"mtype": 3}):
        with pytest.raises(InputError):
            tlsa.tlsa_record(key, **kwargs)


# --------------------------------------------------------------------------- bundles


def _fake_root() -> certgen.Issued:
    """subject == issuer, but signed by a different key: self-issued, NOT self-signed."""
    key = certgen.new_key("p256")
    other = certgen.new_key("p256")
    name = certgen.name("Fake Root")
    cert = certgen.make_cert(name, key.public_key(), name, other, ca=True)
    return certgen.Issued(cert, key)


def test_bundle_roles_and_issuer_records_match_openssl(tmp_path: Path) -> None:
    chain = certgen.make_chain(3, key="p256", ca_key="rsa2048")
    fake = _fake_root()
    bundle = [*chain.served(root=True), fake.cert]
    entries = tlsa.split_bundle(bundle)
    roles = [e.role for e in entries]
    assert roles == [tlsa.Role.LEAF, tlsa.Role.INTERMEDIATE, tlsa.Role.INTERMEDIATE,
                     tlsa.Role.ROOT, tlsa.Role.INTERMEDIATE]
    assert entries[4].self_issued and not entries[4].self_signed
    assert "does not verify" in entries[4].note
    assert entries[3].subject == entries[3].issuer == "O = Rollover Test, CN = Rollover Test Root"
    assert entries[1].issuer == entries[2].subject

    # openssl agrees on the names and on which one is self-signed
    for i, cert in enumerate(bundle):
        f = certgen.write_pem(tmp_path / f"c{i}.pem", cert)
        out = openssl("x509", "-in", str(f), "-noout", "-subject", "-issuer").decode()
        assert f"subject={entries[i].subject}\n" in out
        assert f"issuer={entries[i].issuer}\n" in out
        verify = subprocess.run(["openssl", "verify", "-check_ss_sig", "-CAfile", str(f), str(f)],
                                capture_output=True)
        assert (verify.returncode == 0) == (entries[i].role is tlsa.Role.ROOT), i

    def ref_211(cert: x509.Certificate) -> str:
        f = certgen.write_pem(tmp_path / "ref.pem", cert)
        return "2 1 1 " + openssl_digest(1, openssl_cert_data(f, 1))

    roots = tlsa.issuer_records(bundle, "root")
    assert [r.to_text() for r in roots] == [ref_211(chain.root.cert)]
    inters = tlsa.issuer_records(entries, "intermediate")
    assert [r.to_text() for r in inters] == [ref_211(c) for c in
                                             (chain.intermediates[0].cert,
                                              chain.intermediates[1].cert, fake.cert)]
    everything = tlsa.issuer_records(bundle, "all")
    assert [r.to_text() for r in everything] == [ref_211(c) for c in bundle[1:]]
    assert tlsa.issuer_records(bundle, "root", selector=0, mtype=2)[0].to_text() == (
        "2 0 2 " + openssl_digest(2, openssl_cert_data(tmp_path / "c3.pem", 0)))
    assert tlsa.issuer_records(chain.served(), "root") == []


@pytest.mark.parametrize(("kind", "pss"), [("rsa2048", False), ("rsa2048", True),
                                           ("p384", False), ("ed25519", False)])
def test_self_signed_detection_per_algorithm(kind: str, pss: bool) -> None:
    root = certgen.make_root("R", certgen.key(kind), pss=pss)
    assert tlsa.is_self_signed(root.cert)
    inter = certgen.make_ca("I", root, certgen.new_key("p256"), pss=pss)
    assert not tlsa.is_self_signed(inter.cert)
    assert tlsa.verify_signed_by(inter.cert, root.cert.public_key())
    assert not tlsa.verify_signed_by(inter.cert, inter.cert.public_key())


def test_pem_bundle_with_key_and_chain(tmp_path: Path) -> None:
    """A Postfix chain file: the key, then the chain."""
    chain = certgen.make_chain(2)
    path = tmp_path / "chain.pem"
    path.write_bytes(certgen.private_key_pem(chain.leaf.key) + certgen.pem(*chain.served()))
    m = tlsa.load_material(path)
    assert m.kind == "bundle" and len(m.certificates) == 2 and len(m.private_keys) == 1
    assert m.primary() == chain.leaf.cert
    assert tlsa.tlsa_record(m.private_keys[0]) == tlsa.tlsa_record(m.primary())


# --------------------------------------------------------------------------- loading errors


def _error(path: Path) -> str:
    with pytest.raises((InputError, MissingInputError)) as info:
        tlsa.load_material(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_load_errors(tmp_path: Path) -> None:
    chain = certgen.make_chain(1)
    pem = chain.leaf.cert_pem()
    der = certgen.cert_der(chain.leaf.cert)
    cases = {
        "empty": (b"", "empty"),
        "blank": (b"\n  \n", "empty"),
        "text": (b"hello world\n", "not a PEM or DER"),
        "no-end.pem": (pem[: len(pem) // 2], "truncated"),
        "cut-body.pem": (pem[:200] + b"\n-----END CERTIFICATE-----\n", "truncated"),
        "csr.pem": (certgen.make_csr(), "certificate signing request"),
        "cut.der": (der[:-50], "truncated"),
        "garbage.der": (b"\x30\x03\x02\x01\x01", "not a certificate or key"),
        "enc.pem": (certgen.private_key_pem(chain.leaf.key, b"secret"), "encrypted"),
        "enc-trad.pem": (certgen.private_key_pem(certgen.key("rsa2048"), b"secret",
                                                 traditional=True), "encrypted"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert expected in _error(path), name
    assert "does not exist" in _error(tmp_path / "missing.pem")
    assert "directory" in _error(tmp_path)
    csr_der = x509.load_pem_x509_csr(certgen.make_csr()).public_bytes(
        serialization.Encoding.DER)
    (tmp_path / "csr.der").write_bytes(csr_der)
    assert "certificate signing request" in _error(tmp_path / "csr.der")


# --------------------------------------------------------------------------- keys for the engine


@pytest.mark.parametrize("alg", [Algorithm.ECDSA_P256, Algorithm.ECDSA_P384, Algorithm.RSA2048])
def test_generate_private_key(alg: Algorithm, tmp_path: Path) -> None:
    key = tlsa.generate_private_key(alg)
    assert tlsa.algorithm_of(key) == alg
    if alg.is_rsa:
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
    pem = tlsa.private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    ref = openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")
    assert tlsa.spki_sha256_hex(key) == openssl_digest(1, ref)
    loaded = tlsa.load_private_key_pem(pem, "k.pem")
    assert tlsa.spki_sha256_hex(loaded) == tlsa.spki_sha256_hex(key)
