"""The engine's edges: what the loop and the executors need of the world, as Protocols.

Plugins (providers, installers, certificate sources) and the real observer and prober implement
them; tests swap in fakes. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509

from rollover.clock import Clock
from rollover.config.load import Config, EndpointConfig
from rollover.model import Observation, PresentedChain, SlotId
from rollover.providers.base import Provider
from rollover.state.store import StateStore


class ObserverEdge(Protocol):
    def find_zone(self, owner: str) -> str: ...

    def observe(
        self, owner: str, rtype: str = "TLSA", zone: str | None = None, extra: tuple[str, ...] = ()
    ) -> Observation: ...


@dataclass(frozen=True)
class IssuedCert:
    chain_pem: bytes
    not_after: datetime
    serial: str
    renew_at: datetime | None = None
    ari_retry_after: datetime | None = None


class CertSource(Protocol):
    def order(self, endpoint: EndpointConfig, slot: SlotId, key_pem: bytes) -> IssuedCert: ...

    def renewal(self, chain_pem: bytes) -> tuple[datetime | None, datetime | None]:
        """(when to renew, when to ask again) from the CA's ARI; (None, None): no ARI."""
        ...

    def describe(self) -> str: ...


class Installer(Protocol):
    def install(self, slot: SlotId, key_pem: bytes, chain_pem: bytes) -> None:
        """Write atomically (keeping the previous files), reload. On failure restore the
        previous files, reload again, and raise InstallError."""
        ...

    def rollback(self, slot: SlotId) -> None: ...

    def describe(self, slot: SlotId) -> str: ...


class Prober(Protocol):
    def probe(self, endpoint: EndpointConfig, slot: SlotId) -> list[PresentedChain]: ...


class Verifier(Protocol):
    """RFC 7671 matching of a chain against an RRset; returns None or why it does not match."""

    def __call__(
        self, chain: list[x509.Certificate], records: frozenset[str], host: str, now: datetime
    ) -> str | None: ...


@dataclass
class Edges:
    clock: Clock
    store: StateStore
    observer: ObserverEdge
    providers: dict[str, Provider]
    verify: Verifier
    certs: dict[str, CertSource] = field(default_factory=dict)  # endpoint host:port -> source
    installers: dict[str, Installer] = field(default_factory=dict)  # endpoint host:port -> inst
    prober: Prober | None = None


class ExecContext(Protocol):
    """What an executor may use: the configuration, the edges, zone lookup and observation."""

    config: Config
    edges: Edges
    clock: Clock

    def zone_of(self, endpoint: EndpointConfig) -> str: ...

    def observe(self, endpoint: EndpointConfig) -> Observation: ...
