"""Certificate sources (entry-point group `rollover.sources`): where an endpoint's certificates
come from. Built-ins: `acme` (ordered for the key rollover published, DNS-01 through the
endpoint's provider), `files` (dropped by another tool, picked up when they change) and
`certbot` (a certbot lineage, read through its live/ links).

`files` and `certbot` are *external* sources: the other tool decides the key. Such a plugin sets
`EXTERNAL` (the name the operator reads in "waiting: certbot has not renewed HOST yet") and
offers `latest(slot) -> ExternalCert`; the machine takes what it finds (take-cert) and guards its
installation like any other (a new key's 3 1 1 goes out first, see rollover.core.machine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rollover.errors import RolloverError
from rollover.model import own_rdata


class CertSourceError(RolloverError):
    """A certificate source could not deliver: files missing, in flux, or for another key."""


class NoCertYet(CertSourceError):
    """Nothing to take yet (certbot has not issued the lineage): a wait, not a failure."""


@dataclass(frozen=True)
class ExternalCert:
    """One consistent snapshot of an external source's certificate and key for one slot."""

    chain_pem: bytes  # leaf first, then intermediates, PEM
    key_pem: bytes = field(repr=False)
    spki_sha256: str  # hex: the data of the key's 3 1 1 record
    not_after: datetime
    serial: str
    fingerprint: str  # sha256 over chain and key: a different value means "changed"

    @property
    def rdata(self) -> str:
        return own_rdata(self.spki_sha256)
