"""`source: acme`: certificates from the top-level `acme` directory, ordered with a CSR for the key
rollover staged and published; DNS-01 goes through the endpoint's own provider."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover.clock import Clock
from rollover.config.check import Section
from rollover.config.registry import ParseContext, SourceEnv
from rollover.edges.acme_client import AcmeIssuer, RenewalWindow
from rollover.edges.dns01 import ProviderDns01
from rollover.edges.observe import Observer
from rollover.edges.protocols import IssuedCert
from rollover.model import SlotId
from rollover.providers.base import Provider
from rollover.state.store import StateStore


@dataclass(frozen=True)
class AcmeOptions:
    directory: str
    profile: str | None = None  # overrides acme.profile for this endpoint

    def describe(self) -> str:
        return f"from {self.directory}"

    def key_paths(self) -> tuple[()]:
        return ()


class AcmeSource:
    """Certificates from the configured ACME directory, DNS-01 through the endpoint's provider."""

    OPTIONS = ("profile",)
    REQUIRES_RTYPES = ("TXT",)  # DNS-01 through the endpoint's provider

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> AcmeOptions | None:
        profile = sec.get_str("profile")
        acme = ctx.acme
        if acme is None:
            sec.bad("source", "acme needs a top-level acme section with a directory URL")
            return None
        if acme.directory is None:
            return None  # reported on acme.directory
        return AcmeOptions(acme.directory, profile)

    @classmethod
    def from_config(cls, options: AcmeOptions, env: SourceEnv) -> AcmeSource:
        return cls(env.config, env.store, env.provider, env.observer, env.zone, env.clock,
                   options.profile)

    def __init__(self, config: Any, store: StateStore, provider: Provider,
                 observer: Observer, zone: str, clock: Clock, profile: str | None) -> None:
        acme = config.acme
        assert acme is not None and acme.directory is not None
        eab_kid = acme.eab.kid if acme.eab else None
        eab_key = acme.eab.read_hmac_key() if acme.eab else None
        self.directory = acme.directory
        self.issuer = AcmeIssuer(acme.directory, store.blob_path("acme/account.key"),
                                 email=acme.email, ca_bundle=acme.ca_bundle,
                                 profile=profile or acme.profile, eab_kid=eab_kid,
                                 eab_hmac_key=eab_key, timeout=float(acme.order_timeout),
                                 network_timeout=float(acme.network_timeout), clock=clock)
        self.provider = provider
        self.observer = observer
        self.zone = zone
        self.clock = clock
        self.dns_timeout = float(acme.dns_timeout)

    def describe(self) -> str:
        return f"ACME {self.directory}"

    def order(self, endpoint: Any, slot: SlotId, key_pem: bytes) -> IssuedCert:
        dns01 = ProviderDns01(self.provider, self.observer, self.zone, self.clock,
                              ttl=min(endpoint.ttl, 60), extra=endpoint.extra_nameservers,
                              timeout=self.dns_timeout)
        issued = self.issuer.order(key_pem, [endpoint.host], dns01)
        renew_at, retry = _pick(issued.ari)
        return IssuedCert(issued.chain_pem, issued.not_after, issued.serial, renew_at, retry)

    def renewal(self, chain_pem: bytes) -> tuple[datetime | None, datetime | None]:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        return _pick(self.issuer.renewal_window(leaf_pem, chain_pem))


def _pick(window: RenewalWindow | None) -> tuple[datetime | None, datetime | None]:
    """RFC 9773 4.2: renew at a uniformly random point of the suggested window (spreads the
    CA's load); ask again after its Retry-After."""
    if window is None:
        return None, None
    return window.start + (window.end - window.start) * random.random(), window.retry_after
