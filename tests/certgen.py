"""Test helper: keys, CA roots, intermediates and leaf certificates made with `cryptography`.

Reusable by every test module (tests/ is on sys.path: `import certgen`).

    root = certgen.make_root("Test Root", key="p256")
    chain = certgen.make_chain(depth=2, sans=["mail.example.test"], key="rsa2048")
    chain.served()          # [leaf, intermediate]          (what a server usually sends)
    chain.served(root=True) # [leaf, intermediate, root]
    certgen.write_pem(tmp_path / "fullchain.pem", *chain.served())

Key kinds: "rsa2048", "rsa3072", "rsa4096", "p256", "p384", "ed25519" (also Algorithm values such
as "ecdsa-p256"). RSA keys are slow to make: `key(kind)` hands out one cached key per kind (RSA 4096
is generated once per test session); `new_key(kind)` always makes a fresh one.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rollover.clock import SystemClock

PrivateKey = CertificateIssuerPrivateKeyTypes

KEY_KINDS = ("rsa2048", "rsa3072", "rsa4096", "p256", "p384", "ed25519")
_ALIASES = {
    "ecdsa-p256": "p256",
    "ecdsa-p384": "p384",
    "rsa": "rsa2048",
    "ec": "p256",
    "ecdsa": "p256",
}
_CACHE: dict[str, PrivateKey] = {}

ONE_DAY = _dt.timedelta(days=1)


def now() -> _dt.datetime:
    return SystemClock().now().replace(microsecond=0)


def _kind(kind: str) -> str:
    kind = _ALIASES.get(kind.lower(), kind.lower())
    if kind not in KEY_KINDS:
        raise ValueError(f"unknown key kind {kind!r}; one of {', '.join(KEY_KINDS)}")
    return kind


def new_key(kind: str = "p256") -> PrivateKey:
    """A fresh private key of `kind`."""
    kind = _kind(kind)
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


def key(kind: str = "p256", slot: int = 0) -> PrivateKey:
    """A cached key of `kind`; different `slot`s give different keys (slot 0, 1, ...)."""
    name = f"{_kind(kind)}#{slot}"
    if name not in _CACHE:
        _CACHE[name] = new_key(kind)
    return _CACHE[name]


def _as_key(k: str | PrivateKey | None, default_slot: int) -> PrivateKey:
    if k is None:
        return new_key("p256")
    if isinstance(k, str):
        return key(k, default_slot)
    return k


def name(cn: str, org: str | None = "Rollover Test") -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


def _hash_for(signing_key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(signing_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(signing_key, ec.EllipticCurvePrivateKey) and signing_key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def make_cert(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer_name: x509.Name,
    signing_key: PrivateKey,
    *,
    ca: bool,
    path_length: int | None = None,
    sans: Sequence[str] = (),
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    pss: bool = False,
    server_auth: bool = True,
) -> x509.Certificate:
    """The general builder: any subject/issuer/key combination (e.g. subject == issuer but signed
    by another key: self-issued yet not self-signed)."""
    start = not_before or (now() - ONE_DAY)
    end = not_after or (now() + 90 * ONE_DAY)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
    elif server_auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    rsa_padding = None
    if pss and isinstance(signing_key, rsa.RSAPrivateKey):
        rsa_padding = padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                  salt_length=padding.PSS.DIGEST_LENGTH)
    return builder.sign(signing_key, _hash_for(signing_key), rsa_padding=rsa_padding)


def make_root(cn: str = "Rollover Test Root", key: str | PrivateKey = "p256", *,
              not_before: _dt.datetime | None = None, not_after: _dt.datetime | None = None,
              pss: bool = False) -> Issued:
    """A self-signed CA root."""
    k = _as_key(key, 0)
    subject = name(cn)
    cert = make_cert(subject, k.public_key(), subject, k, ca=True, not_before=not_before,
                     not_after=not_after or now() + 3650 * ONE_DAY, pss=pss)
    return Issued(cert, k)


def make_ca(cn: str, issuer: Issued, key: str | PrivateKey = "p256", *,
            not_before: _dt.datetime | None = None, not_after: _dt.datetime | None = None,
            path_length: int | None = None, pss: bool = False) -> Issued:
    """An intermediate CA issued by `issuer`."""
    k = _as_key(key, 1)
    cert = make_cert(name(cn), k.public_key(), issuer.cert.subject, issuer.key, ca=True,
                     path_length=path_length, not_before=not_before,
                     not_after=not_after or now() + 1825 * ONE_DAY, pss=pss)
    return Issued(cert, k)


def make_leaf(issuer: Issued | None, sans: Sequence[str] = ("mail.example.test",),
              key: str | PrivateKey = "p256", *, cn: str | None = None,
              not_before: _dt.datetime | None = None, not_after: _dt.datetime | None = None,
              expired: bool = False, pss: bool = False) -> Issued:
    """A server certificate issued by `issuer` (None: self-signed). `expired=True` makes one
    that ended yesterday. `cn` defaults to the first SAN."""
    k = _as_key(key, 2)
    subject = name(cn if cn is not None else (sans[0] if sans else "leaf"), org=None)
    if expired:
        not_before = now() - 100 * ONE_DAY
        not_after = now() - ONE_DAY
    if issuer is None:
        cert = make_cert(subject, k.public_key(), subject, k, ca=False, sans=sans,
                         not_before=not_before, not_after=not_after, pss=pss)
    else:
        cert = make_cert(subject, k.public_key(), issuer.cert.subject, issuer.key, ca=False,
                         sans=sans, not_before=not_before, not_after=not_after, pss=pss)
    return Issued(cert, k)


@dataclass(frozen=True)
class Chain:
    """leaf <- intermediates (nearest first) <- root."""

    leaf: Issued
    intermediates: tuple[Issued, ...]
    root: Issued
    extra: tuple[Issued, ...] = field(default=())

    def served(self, root: bool = False) -> list[x509.Certificate]:
        """What a server sends, leaf first; with the root when `root`."""
        certs = [self.leaf.cert, *(i.cert for i in self.intermediates)]
        if root:
            certs.append(self.root.cert)
        return certs

    @property
    def cas(self) -> list[x509.Certificate]:
        """The issuers, nearest first, root last (a CA bundle)."""
        return [*(i.cert for i in self.intermediates), self.root.cert]


def make_chain(depth: int = 2, sans: Sequence[str] = ("mail.example.test",),
               key: str | PrivateKey = "p256", *, ca_key: str = "p256", expired: bool = False,
               prefix: str = "Rollover Test", pss: bool = False) -> Chain:
    """A chain of `depth` CAs above the leaf: 1 = root signs the leaf, 2 = root -> intermediate ->
    leaf, 3 = two intermediates. Each call makes new CA keys (so chains never share a root)."""
    if not 1 <= depth <= 3:
        raise ValueError("depth must be 1, 2 or 3")
    root = make_root(f"{prefix} Root", new_key(ca_key), pss=pss)
    issuer = root
    inters: list[Issued] = []
    for n in range(depth - 1, 0, -1):
        issuer = make_ca(f"{prefix} Intermediate {n}", issuer, new_key(ca_key), pss=pss)
        inters.insert(0, issuer)
    leaf = make_leaf(issuer, sans, key, expired=expired, pss=pss)
    return Chain(leaf, tuple(inters), root)


def make_csr(key: str | PrivateKey = "p256", cn: str = "mail.example.test") -> bytes:
    """A PEM certificate signing request (for bad-input tests)."""
    k = _as_key(key, 0)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name(cn, org=None))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .sign(k, _hash_for(k))
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def private_key_pem(k: PrivateKey, password: bytes | None = None,
                    traditional: bool = False) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if traditional
           else serialization.PrivateFormat.PKCS8)
    return k.private_bytes(serialization.Encoding.PEM, fmt, enc)


def private_key_der(k: PrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def public_key_pem(k: PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_der(k: PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(*items: x509.Certificate | Issued) -> bytes:
    out = b""
    for item in items:
        cert = item.cert if isinstance(item, Issued) else item
        out += cert.public_bytes(serialization.Encoding.PEM)
    return out


def write_pem(path: Path, *items: x509.Certificate | Issued) -> Path:
    path.write_bytes(pem(*items))
    return path


def write_key(path: Path, k: PrivateKey) -> Path:
    path.write_bytes(private_key_pem(k))
    path.chmod(0o600)
    return path
