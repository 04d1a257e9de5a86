"""`source: files`: certificate, chain and private key dropped by another tool (certbot, acme.sh,
a corporate CA's process, ...) into files rollover only reads, picked up when they change.

    certificate:
      source: files
      files:
        ecdsa-p256: {chain: /etc/ssl/mx/fullchain.pem, key: /etc/ssl/mx/privkey.pem}
        rsa2048: {certificate: cert.pem, chain: chain.pem, key: key.pem}

`chain` alone is the full chain, leaf first; with `certificate`, `chain` holds the
intermediates. Nothing is checked for existence when the config loads: the other tool may not
have written the files yet.

What is handed on is always one consistent snapshot (`latest`): every file is read twice and must
be the same both times, the key must parse, be the slot's algorithm and belong to the leaf, the
leaf must name the host and not be expired, and the key file must not be readable by everyone.
A pair caught between two writes of the other tool is "in flux" (CertSourceError), never half
used. `changed(slot, fingerprint)` says whether there is something new since `fingerprint`.

The other tool decides the key (`EXTERNAL`): the machine takes each new snapshot (take-cert).
A same-key renewal goes in without a TLSA change; a NEW key (the other tool generated one) has
its 3 1 1 published first and is installed only once that record is omnipresent (current+next)
or at once when an omnipresent issuer 2 1 1 covers it (current+issuer). `order()` is kept for
callers that hold a staged key: it hands over the files' chain only when their key is that one.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover.clock import Clock, SystemClock
from rollover.config.check import Section
from rollover.config.registry import ParseContext, SourceEnv
from rollover.dane import tlsa
from rollover.edges.protocols import IssuedCert
from rollover.errors import InputError
from rollover.model import Algorithm, SlotId
from rollover.sources import CertSourceError, ExternalCert, NoCertYet


@dataclass(frozen=True)
class CertFiles:
    chain: Path  # full chain (leaf first), or the intermediates when `certificate` is given
    key: Path  # private key (PEM)
    certificate: Path | None = None  # the leaf alone


@dataclass(frozen=True)
class FilesOptions:
    files: Mapping[Algorithm, CertFiles] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def describe(self) -> str:
        shown = ", ".join(str(f.chain) for f in self.files.values())
        return f"from files ({shown})"

    def key_paths(self) -> tuple[Path, ...]:
        return tuple(f.key for f in self.files.values())


class FilesSource:
    OPTIONS = ("files",)
    REQUIRES_RTYPES: tuple[str, ...] = ()
    EXTERNAL = "the tool writing the files"  # it decides the key, not rollover

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> FilesOptions | None:
        names = [a.value for a in ctx.algorithms]
        asec = sec.section("files", names, required=True)
        if asec is None or asec.node is None:
            return None
        files: dict[Algorithm, CertFiles] = {}
        for alg in ctx.algorithms:
            if not asec.has(alg.value):
                asec.missing(alg.value)
                continue
            fsec = asec.section(alg.value, ("certificate", "chain", "key"))
            if fsec is None:
                continue
            chain = fsec.get_path("chain", ctx.base, required=True)
            key = fsec.get_path("key", ctx.base, required=True)
            leaf = fsec.get_path("certificate", ctx.base)
            if chain and key:
                if key in (chain, leaf):
                    fsec.bad("key", "must be a file of its own (not the certificate's)")
                    continue
                files[alg] = CertFiles(chain=chain, key=key, certificate=leaf)
        return FilesOptions(MappingProxyType(files))

    @classmethod
    def from_config(cls, options: FilesOptions, env: SourceEnv) -> FilesSource:
        return cls(options.files, env.clock)

    def __init__(self, files: Mapping[Algorithm, CertFiles], clock: Clock | None = None) -> None:
        self.files = dict(files)
        self.clock = clock or SystemClock()

    def describe(self) -> str:
        return "files " + ", ".join(str(f.chain) for f in self.files.values())

    # -- reading -----------------------------------------------------------------------------

    def latest(self, slot: SlotId) -> ExternalCert:
        """The slot's files now, checked; CertSourceError when missing, in flux or unusable."""
        spec = self.files.get(slot.algorithm)
        if spec is None:
            raise CertSourceError(f"{slot}: no files configured for {slot.algorithm.value}")
        paths = [p for p in (spec.certificate, spec.chain, spec.key) if p is not None]
        first = [_read(p, private=p == spec.key) for p in paths]
        second = [_read(p, private=p == spec.key) for p in paths]
        if first != second:
            raise CertSourceError(f"{slot}: {spec.chain.parent} is being written right now "
                                  "(the files changed while reading); trying again later")
        datas = dict(zip(paths, first, strict=True))
        return self._check(slot, spec, datas)

    def changed(self, slot: SlotId, fingerprint: str | None) -> ExternalCert | None:
        """The snapshot when it differs from `fingerprint` (None: nothing seen yet)."""
        snap = self.latest(slot)
        return None if snap.fingerprint == fingerprint else snap

    def _check(self, slot: SlotId, spec: CertFiles, datas: dict[Path, bytes]) -> ExternalCert:
        try:
            certs = x509.load_pem_x509_certificates(datas[spec.chain])
        except ValueError:
            raise CertSourceError(f"{slot}: {spec.chain} holds no PEM certificates (still "
                                  "being written?)") from None
        if spec.certificate is not None:
            try:
                leaf = x509.load_pem_x509_certificate(datas[spec.certificate])
            except ValueError:
                raise CertSourceError(f"{slot}: {spec.certificate} is not a PEM "
                                      "certificate") from None
            certs = [leaf] + [c for c in certs if c != leaf]
        leaf = certs[0]
        try:
            key = tlsa.load_private_key_pem(datas[spec.key], str(spec.key))
        except InputError as exc:
            raise CertSourceError(f"{slot}: {exc}") from None
        if tlsa.spki_der(key) != tlsa.spki_der(leaf):
            raise CertSourceError(f"{slot}: {spec.key} is not the key of the certificate in "
                                  f"{spec.certificate or spec.chain} (in flux, or the wrong "
                                  "files)")
        algorithm = tlsa.algorithm_of(key)
        if algorithm != slot.algorithm:
            got = algorithm.value if algorithm else "an unsupported algorithm"
            raise CertSourceError(f"{slot}: {spec.key} is {got}, not {slot.algorithm.value}")
        now = self.clock.now()
        not_after = leaf.not_valid_after_utc
        if not_after <= now:
            raise CertSourceError(f"{slot}: the certificate in {spec.certificate or spec.chain} "
                                  f"expired on {not_after:%Y-%m-%d %H:%M} UTC")
        if not _names_host(leaf, slot.host):
            raise CertSourceError(f"{slot}: the certificate in {spec.certificate or spec.chain} "
                                  f"does not name {slot.host}")
        chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
        key_pem = datas[spec.key]
        fingerprint = hashlib.sha256(chain_pem + b"\0" + key_pem).hexdigest()
        return ExternalCert(chain_pem, key_pem, tlsa.spki_sha256_hex(leaf), not_after,
                            format(leaf.serial_number, "x"), fingerprint)

    # -- CertSource protocol -----------------------------------------------------------------

    def order(self, endpoint: Any, slot: SlotId, key_pem: bytes) -> IssuedCert:
        """The files' certificate when it is for `key_pem` (the key rollover published)."""
        snap = self.latest(slot)
        try:
            wanted = tlsa.spki_sha256_hex(tlsa.load_private_key_pem(key_pem, "the staged key"))
        except InputError as exc:
            raise CertSourceError(str(exc)) from None
        if snap.spki_sha256 != wanted:
            raise CertSourceError(
                f"{slot}: the files hold a certificate for key 3 1 1 {snap.spki_sha256[:12]}..., "
                f"not for the published key 3 1 1 {wanted[:12]}...; a key another tool "
                "generated is installed only after its own 3 1 1 is published and omnipresent"
            )
        return IssuedCert(snap.chain_pem, snap.not_after, snap.serial)

    def renewal(self, chain_pem: bytes) -> tuple[datetime | None, datetime | None]:
        return None, None  # the other tool decides when to renew


def _read(path: Path, *, private: bool) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NoCertYet(f"{path} does not exist (not written yet?)") from None
    except OSError as exc:
        raise CertSourceError(f"cannot stat {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CertSourceError(f"{path} is not a regular file")
    if private and st.st_mode & 0o004:
        raise CertSourceError(f"{path} holds a private key and everyone may read it (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 (or 640) it")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertSourceError(f"cannot read {path}: {exc.strerror}") from None


def _names_host(leaf: x509.Certificate, host: str) -> bool:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    host = host.lower().rstrip(".")
    for name in san.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and host.split(".", 1)[-1] == name[2:] and "." in host:
            return True
    return False
