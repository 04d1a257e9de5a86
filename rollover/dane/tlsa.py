"""TLSA maths: certificates, keys and bundles in; TLSA records and zone-file lines out.

Ground floor: imports only the standard library, `cryptography`, and rollover's ground floor
(model, errors, display, fileio). Everything here is pure except `load_material`, which reads
one file (bounded, never blocking).

The records equal what the seed how-to's openssl recipes give, e.g. for 3 1 1:
`openssl x509 -noout -pubkey | openssl pkey -pubin -outform DER | openssl sha256`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Literal, cast, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.utils import CryptographyDeprecationWarning

from rollover.display import printable, shown_path
from rollover.errors import InputError
from rollover.fileio import CERT_LIMIT, read_limited
from rollover.model import Algorithm, TLSARecord

PublicKey = PublicKeyTypes
PrivateKey = PrivateKeyTypes

_PRIVATE_CLASSES: tuple[type, ...] = get_args(PrivateKeyTypes)

USAGES = (0, 1, 2, 3)
SELECTORS = (0, 1)
MTYPES = (0, 1, 2)

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END ([A-Z0-9 ]+)-----", re.DOTALL
)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"}
_PUBLIC_LABELS = {"PUBLIC KEY", "RSA PUBLIC KEY"}
_PRIVATE_LABELS = {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY",
                   "OPENSSH PRIVATE KEY"}
_CSR_LABELS = {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}
_OTHER_LABELS = {
    "X509 CRL": "a certificate revocation list (CRL)",
    "PKCS7": "a PKCS#7 structure (convert it: openssl pkcs7 -print_certs)",
    "CMS": "a CMS structure",
    "DH PARAMETERS": "Diffie-Hellman parameters",
    "EC PARAMETERS": "EC parameters only (no key)",
}
# The file names in messages are the operator's; nothing read from the file is ever echoed.


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Material:
    """What one file holds: certificates (in file order), bare public keys, private keys."""

    source: str
    encoding: Literal["PEM", "DER"]
    certificates: tuple[x509.Certificate, ...] = ()
    public_keys: tuple[PublicKeyTypes, ...] = ()
    private_keys: tuple[PrivateKeyTypes, ...] = ()
    notes: tuple[str, ...] = ()  # worth telling the operator, not fatal (a non-positive serial)

    @property
    def kind(self) -> str:
        """"certificate", "bundle" (several certificates), "public key" or "private key"."""
        if len(self.certificates) > 1:
            return "bundle"
        if self.certificates:
            return "certificate"
        if self.public_keys:
            return "public key"
        return "private key"

    def primary(self) -> x509.Certificate | PublicKeyTypes | PrivateKeyTypes:
        """The first certificate (the leaf of a chain file), else the first key."""
        if self.certificates:
            return self.certificates[0]
        if self.public_keys:
            return self.public_keys[0]
        return self.private_keys[0]


def load_material(path: str | Path) -> Material:
    """Read a PEM or DER file holding certificates and/or keys.

    Raises MissingInputError (missing, unreadable, a directory) or InputError (empty, not PEM/DER,
    truncated, a CSR, an encrypted private key, ...), each one line naming the file.
    """
    label = shown_path(path)
    data = read_limited(path, "certificate or key file", CERT_LIMIT)
    return parse_material(data, label)


def parse_material(data: bytes, label: str) -> Material:
    """Parse bytes (PEM or DER) from `label` (a file name, for messages)."""
    if not data.strip():
        raise InputError(f"{label}: file is empty")
    with warnings.catch_warnings(record=True) as caught:
        # cryptography warns (with its own file path) about certificates RFC 5280 forbids;
        # the operator gets one sentence instead
        warnings.simplefilter("always", CryptographyDeprecationWarning)
        if b"-----BEGIN " in data:
            material = _parse_pem(data, label)
        elif data[:1] == b"\x30":
            material = _parse_der(data, label)
        else:
            raise InputError(f"{label}: not a PEM or DER certificate or key")
        for n, cert in enumerate(material.certificates, 1):
            _check_public_key(cert, f"{label}: certificate {n}")
        notes = [
            f"{label}: certificate {n} has a non-positive serial number (RFC 5280 forbids it; "
            "some TLS clients refuse such a certificate)"
            for n, cert in enumerate(material.certificates, 1)
            if cert.serial_number <= 0
        ]
    for w in caught:  # not ours to hide: hand back what we did not explain
        if not issubclass(w.category, CryptographyDeprecationWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return replace(material, notes=tuple(notes)) if notes else material


def _check_public_key(cert: x509.Certificate, what: str) -> None:
    """Refuse a certificate whose key rollover cannot read (an unknown algorithm or EC curve):
    every record and every DANE match needs it."""
    try:
        cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        oid = _key_oid(cert)
        raise InputError(
            f"{what} has a public key of a type rollover cannot read{oid} (supported: RSA, "
            "ECDSA P-256/P-384/P-521, Ed25519, Ed448, DSA)"
        ) from None


def _key_oid(cert: x509.Certificate) -> str:
    try:
        return f" (algorithm OID {cert.public_key_algorithm_oid.dotted_string})"
    except (ValueError, UnsupportedAlgorithm):  # pragma: no cover - the OID is always there
        return ""


def _parse_pem(data: bytes, label: str) -> Material:
    certs: list[x509.Certificate] = []
    pubs: list[PublicKeyTypes] = []
    privs: list[PrivateKeyTypes] = []
    pos = 0
    n = 0
    while True:
        begin = _PEM_BEGIN.search(data, pos)
        if begin is None:
            break
        n += 1
        block_label = begin.group(1).decode()
        what = f"{label}: PEM block {n} ({block_label})"
        m = _PEM_BLOCK.match(data, begin.start())
        if m is None or m.group(3) != m.group(1):
            raise InputError(f"{what} is truncated: no matching END line")
        pos = m.end()
        body = m.group(2)
        block = m.group(0)
        if block_label in _CSR_LABELS:
            raise InputError(
                f"{what} is a certificate signing request (CSR), not a certificate or key"
            )
        encrypted = block_label == "ENCRYPTED PRIVATE KEY" or (
            b"Proc-Type:" in body and b"ENCRYPTED" in body
        )
        if encrypted:
            raise InputError(
                f"{what} is an encrypted private key; decrypt it first "
                "(openssl pkey -in FILE -out FILE.plain) or give the certificate"
            )
        if block_label in _OTHER_LABELS:
            raise InputError(f"{what} is {_OTHER_LABELS[block_label]}, not a certificate or key")
        _check_base64(body, what)
        try:
            if block_label in _CERT_LABELS:
                certs.append(x509.load_pem_x509_certificate(_normal_cert_block(block)))
            elif block_label in _PUBLIC_LABELS:
                pubs.append(serialization.load_pem_public_key(block))
            elif block_label == "OPENSSH PRIVATE KEY":
                privs.append(serialization.load_ssh_private_key(block, password=None))
            elif block_label in _PRIVATE_LABELS:
                privs.append(serialization.load_pem_private_key(block, password=None))
            else:
                raise InputError(f"{what}: unsupported PEM type, not a certificate or key")
        except InputError:
            raise
        except TypeError:  # password needed
            raise InputError(f"{what} is an encrypted private key; decrypt it first") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InputError(f"{what} cannot be parsed ({_short(exc)}); truncated or corrupt?") \
                from None
    if n == 0:  # pragma: no cover - parse_material only sends data containing BEGIN
        raise InputError(f"{label}: not a PEM or DER certificate or key")
    return Material(label, "PEM", tuple(certs), tuple(pubs), tuple(privs))


def _normal_cert_block(block: bytes) -> bytes:
    """TRUSTED CERTIFICATE / X509 CERTIFICATE blocks parse as plain CERTIFICATE (the openssl
    'trusted' auxiliary data after the certificate is ignored)."""
    m = _PEM_BLOCK.match(block)
    assert m is not None
    if m.group(1) == b"CERTIFICATE":
        return block
    raw = base64.b64decode(b"".join(m.group(2).split()))
    length = _der_length(raw)
    if length is not None and length <= len(raw):
        raw = raw[:length]
    return (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(raw)
            + b"-----END CERTIFICATE-----\n")


def _check_base64(body: bytes, what: str) -> None:
    lines = [ln.strip() for ln in body.splitlines()]
    payload = b"".join(ln for ln in lines if ln and b":" not in ln)
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is corrupt or truncated: bad base64") from None
    declared = _der_length(raw)
    if declared is not None and declared > len(raw):
        raise InputError(
            f"{what} is truncated: DER header says {declared} bytes, block has {len(raw)}"
        )


def _der_length(raw: bytes) -> int | None:
    """Total length (header + content) an outer DER SEQUENCE declares, or None if unreadable."""
    if len(raw) < 2 or raw[0] != 0x30:
        return None
    first = raw[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(raw) < 2 + count:
        return None
    return 2 + count + int.from_bytes(raw[2 : 2 + count], "big")


def _parse_der(data: bytes, label: str) -> Material:
    declared = _der_length(data)
    if declared is None:
        raise InputError(f"{label}: not a PEM or DER certificate or key")
    if declared > len(data):
        raise InputError(
            f"{label}: DER data is truncated: header says {declared} bytes, file has {len(data)}"
        )
    if declared < len(data) and data[declared:].strip(b"\x00\r\n\t ") != b"":
        raise InputError(f"{label}: DER data has {len(data) - declared} unexpected trailing bytes")
    data = data[:declared]
    try:
        return Material(label, "DER", certificates=(x509.load_der_x509_certificate(data),))
    except ValueError:
        pass
    try:
        return Material(label, "DER", public_keys=(serialization.load_der_public_key(data),))
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:
        key = serialization.load_der_private_key(data, password=None)
        return Material(label, "DER", private_keys=(key,))
    except TypeError:
        raise InputError(f"{label}: DER data is an encrypted private key; decrypt it first") \
            from None
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:
        x509.load_der_x509_csr(data)
    except ValueError:
        pass
    else:
        raise InputError(
            f"{label}: DER data is a certificate signing request (CSR), not a certificate or key"
        )
    raise InputError(f"{label}: DER data is not a certificate or key (corrupt?)")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


# --------------------------------------------------------------------------- records


def public_key_of(obj: x509.Certificate | PublicKeyTypes | PrivateKeyTypes) -> PublicKeyTypes:
    if isinstance(obj, x509.Certificate):
        return obj.public_key()
    if isinstance(obj, _PRIVATE_CLASSES):
        return cast(PrivateKeyTypes, obj).public_key()
    return cast(PublicKeyTypes, obj)


def spki_der(public_key: PublicKeyTypes | PrivateKeyTypes | x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo (of a key, or of a certificate's key): what
    `openssl x509 -noout -pubkey | openssl pkey -pubin -outform DER` writes."""
    return public_key_of(public_key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def digest(mtype: int, data: bytes) -> bytes:
    """Apply matching type `mtype` (0 Full, 1 SHA2-256, 2 SHA2-512) to `data`."""
    if mtype == 0:
        return data
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    raise InputError(f"matching type {mtype} is not supported (0 Full, 1 SHA2-256, 2 SHA2-512)")


def selected_data(obj: x509.Certificate | PublicKeyTypes | PrivateKeyTypes, selector: int) -> bytes:
    """The bytes selector `selector` picks: 0 the full certificate DER, 1 the SPKI DER."""
    if selector == 0:
        if not isinstance(obj, x509.Certificate):
            raise InputError(
                "selector 0 (full certificate) needs a certificate, not a bare key; "
                "use selector 1 (SPKI)"
            )
        return cert_der(obj)
    if selector == 1:
        return spki_der(public_key_of(obj))
    raise InputError(f"selector {selector} is not supported (0 Cert, 1 SPKI)")


def tlsa_record(
    obj: x509.Certificate | PublicKeyTypes | PrivateKeyTypes,
    usage: int = 3,
    selector: int = 1,
    mtype: int = 1,
) -> TLSARecord:
    """The TLSA record for a certificate or key. Raises InputError for impossible combinations
    (selector 0 on a bare key, unknown usage/selector/mtype)."""
    if usage not in USAGES:
        raise InputError(f"usage {usage} is not defined (0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, "
                         "3 DANE-EE)")
    return TLSARecord(usage, selector, mtype, digest(mtype, selected_data(obj, selector)))


def spki_sha256_hex(key: PublicKeyTypes | PrivateKeyTypes | x509.Certificate) -> str:
    """SHA2-256 of the SPKI in lowercase hex: the data of a 3 1 1 record for this key."""
    return hashlib.sha256(spki_der(public_key_of(key))).hexdigest()


def zone_line(record: TLSARecord, host: str, port: int = 25, ttl: int | None = None,
              proto: str = "tcp") -> str:
    """"_25._tcp.mail.example.nl. [TTL] IN TLSA 3 1 1 hex"."""
    owner = f"_{port}._{proto}.{host.rstrip('.').lower()}."
    ttl_part = f" {ttl}" if ttl is not None else ""
    return f"{owner}{ttl_part} IN TLSA {record.to_text()}"


# --------------------------------------------------------------------------- bundles


class Role(StrEnum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"
    LEAF = "leaf"


def name_text(name: x509.Name) -> str:
    """A Name the way `openssl x509 -noout -subject` prints it: "C = NL, O = X, CN = Y"."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            short = _SHORT_NAMES.get(attr.oid.dotted_string)
            key = short or attr.oid.dotted_string
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            # a certificate is untrusted input: no newline or escape sequence gets through
            parts.append(f"{key} = {printable(value)}")
    return ", ".join(parts)


_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.25": "DC", "2.5.4.97": "organizationIdentifier",
}


def verify_signed_by(cert: x509.Certificate, public_key: PublicKeyTypes) -> bool:
    """True when `cert`'s signature verifies with `public_key` (RSA PKCS#1 v1.5 or PSS, ECDSA,
    Ed25519, Ed448, DSA). Names are not compared here."""
    hash_alg = cert.signature_hash_algorithm
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            pad = params if isinstance(params, padding.PSS | padding.PKCS1v15) \
                else padding.PKCS1v15()
            if hash_alg is None:
                return False
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, pad, hash_alg)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if hash_alg is None:
                return False
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_alg))
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes)
        elif isinstance(public_key, dsa.DSAPublicKey):
            if hash_alg is None:
                return False
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, hash_alg)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def is_self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def is_self_signed(cert: x509.Certificate) -> bool:
    """subject == issuer AND the signature verifies with the certificate's own public key."""
    return is_self_issued(cert) and verify_signed_by(cert, _cert_key(cert))


def _cert_key(cert: x509.Certificate) -> PublicKeyTypes:
    key: CertificatePublicKeyTypes = cert.public_key()
    return key


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


@dataclass(frozen=True)
class BundleEntry:
    index: int  # 1-based position in the bundle
    cert: x509.Certificate
    subject: str
    issuer: str
    role: Role
    self_issued: bool
    self_signed: bool

    @property
    def note(self) -> str:
        if self.self_issued and not self.self_signed:
            return "subject equals issuer, but the signature does not verify with its own key"
        return ""


def split_bundle(certs: Sequence[x509.Certificate]) -> list[BundleEntry]:
    """Describe each certificate of a bundle: subject, issuer and role. A root is self-signed
    (subject == issuer and its own key verifies it). Any other certificate that is a CA or that
    issued another certificate of the bundle is an intermediate; the rest are leaves."""
    entries = []
    for i, cert in enumerate(certs):
        self_issued = is_self_issued(cert)
        self_signed = self_issued and is_self_signed(cert)
        if self_signed:
            role = Role.ROOT
        elif is_ca(cert) or any(
            other is not cert and other.issuer == cert.subject
            and verify_signed_by(other, _cert_key(cert))
            for other in certs
        ):
            role = Role.INTERMEDIATE
        else:
            role = Role.LEAF
        entries.append(BundleEntry(i + 1, cert, name_text(cert.subject), name_text(cert.issuer),
                                   role, self_issued, self_signed))
    return entries


IssuerChoice = Literal["root", "intermediate", "all"]


def issuer_records(
    certs: Sequence[x509.Certificate] | Sequence[BundleEntry],
    which: IssuerChoice = "root",
    selector: int = 1,
    mtype: int = 1,
) -> list[TLSARecord]:
    """DANE-TA (2 S M, default 2 1 1) records for the chosen issuers of a bundle, in bundle order,
    without duplicates. Empty when the bundle has no certificate of that role."""
    entries = [c for c in certs if isinstance(c, BundleEntry)]
    if len(entries) != len(certs):
        entries = split_bundle([c for c in certs if isinstance(c, x509.Certificate)])
    wanted = {
        "root": {Role.ROOT},
        "intermediate": {Role.INTERMEDIATE},
        "all": {Role.ROOT, Role.INTERMEDIATE},
    }[which]
    out: list[TLSARecord] = []
    for e in entries:
        if e.role in wanted:
            rec = tlsa_record(e.cert, 2, selector, mtype)
            if rec not in out:
                out.append(rec)
    return out


# --------------------------------------------------------------------------- keys


def generate_private_key(algorithm: Algorithm) -> PrivateKeyTypes:
    """A new private key for a slot's algorithm."""
    if algorithm.is_rsa:
        bits = int(algorithm.value[3:])
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if algorithm == Algorithm.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == Algorithm.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    raise InputError(f"unsupported key algorithm {algorithm}")  # pragma: no cover


def algorithm_of(key: PublicKeyTypes | PrivateKeyTypes | x509.Certificate) -> Algorithm | None:
    """The slot algorithm a key (or a certificate's key) belongs to, or None."""
    pub = public_key_of(key)
    if isinstance(pub, rsa.RSAPublicKey):
        try:
            return Algorithm(f"rsa{pub.key_size}")
        except ValueError:
            return None
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return {"secp256r1": Algorithm.ECDSA_P256, "secp384r1": Algorithm.ECDSA_P384}.get(
            pub.curve.name
        )
    return None


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM, unencrypted (the caller writes it 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes, label: str) -> PrivateKeyTypes:
    """Parse one unencrypted private key (PEM). InputError names `label`, never the content."""
    material = parse_material(data, label)
    if not material.private_keys:
        raise InputError(f"{label}: holds no private key")
    return material.private_keys[0]


def records_for(objs: Iterable[x509.Certificate | PublicKeyTypes | PrivateKeyTypes],
                usage: int = 3, selector: int = 1, mtype: int = 1) -> list[TLSARecord]:
    """tlsa_record for each object, duplicates dropped, order kept."""
    out: list[TLSARecord] = []
    for obj in objs:
        rec = tlsa_record(obj, usage, selector, mtype)
        if rec not in out:
            out.append(rec)
    return out



__all__ = [
    "BundleEntry",
    "Material",
    "Role",
    "algorithm_of",
    "cert_der",
    "digest",
    "generate_private_key",
    "is_ca",
    "is_self_issued",
    "is_self_signed",
    "issuer_records",
    "load_material",
    "load_private_key_pem",
    "name_text",
    "parse_material",
    "private_key_pem",
    "public_key_of",
    "records_for",
    "selected_data",
    "spki_der",
    "spki_sha256_hex",
    "split_bundle",
    "tlsa_record",
    "verify_signed_by",
    "zone_line",
]
