"""Build the engine's edges from the configuration: providers, observer, ACME, installers, probe.

Everything that reads a secret (TSIG, EAB) happens here, once, when the edge is built; nothing
of it is kept where it could be printed.
"""

from __future__ import annotations

import random
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover import dane
from rollover.clock import Clock
from rollover.config import Config, EndpointConfig, GenericProviderConfig, RFC2136Config
from rollover.dns01 import ProviderDns01
from rollover.engine import CertSource, Edges, Engine, Installer, IssuedCert
from rollover.errors import ConfigError, ProviderError
from rollover.issue import AcmeIssuer, RenewalWindow
from rollover.model import SlotId, TLSARecord
from rollover.observe import Observer
from rollover.providers.base import Provider, load_provider_class
from rollover.state import StateStore


def verify_chain(chain: list[x509.Certificate], records: frozenset[str], host: str,
                 now: datetime) -> str | None:
    """None when `chain` matches the RRset as a DANE SMTP client would see it, else why not."""
    if not records:
        return "no TLSA records served"
    parsed = [TLSARecord.from_text(r) for r in records]
    verdict = dane.match_chain(chain, parsed, host, now)
    return None if verdict.matched else verdict.reason


def build_provider(config: Config, name: str) -> Provider:
    pc = config.providers[name]
    if isinstance(pc, RFC2136Config):
        from rollover.providers.rfc2136 import RFC2136Provider

        secret = pc.read_secret()
        if secret is None or pc.tsig_key_name is None:
            raise ConfigError(f"{pc.where}: provider {name}: rfc2136 needs tsig_key_name and "
                              "tsig_secret_file")
        return RFC2136Provider(name, pc.server, pc.port, tsig_key_name=pc.tsig_key_name,
                               tsig_secret=secret, tsig_algorithm=pc.tsig_algorithm,
                               timeout=pc.timeout)
    if isinstance(pc, GenericProviderConfig):
        cls = load_provider_class(pc.type)
        provider: Provider = cls.from_options(name, dict(pc.options))
        return provider
    cls = load_provider_class(pc.type)  # route53 and friends register as entry points
    built: Provider = cls.from_config(pc)
    return built


class AcmeSource:
    """Certificates from the configured ACME directory, DNS-01 through the endpoint's provider."""

    def __init__(self, config: Config, store: StateStore, provider: Provider,
                 observer: Observer, zone: str, clock: Clock, profile: str | None) -> None:
        acme = config.acme
        assert acme is not None and acme.directory is not None
        eab_kid = acme.eab.kid if acme.eab else None
        eab_key = acme.eab.read_hmac_key() if acme.eab else None
        self.directory = acme.directory
        self.issuer = AcmeIssuer(acme.directory, store.blob_path("acme/account.key"),
                                 email=acme.email, ca_bundle=acme.ca_bundle,
                                 profile=profile or acme.profile, eab_kid=eab_kid,
                                 eab_hmac_key=eab_key, clock=clock)
        self.provider = provider
        self.observer = observer
        self.zone = zone
        self.clock = clock
        self.dns_timeout = float(acme.dns_timeout)

    def describe(self) -> str:
        return f"ACME {self.directory}"

    def order(self, endpoint: EndpointConfig, slot: SlotId, key_pem: bytes) -> IssuedCert:
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


def build_installer(config: Config, endpoint: EndpointConfig) -> Installer | None:
    ic = config.installer_for(endpoint)
    if ic is None:
        return None
    if ic.directory is None:
        raise ConfigError(f"{ic.where}: installer {ic.name} needs a directory")
    if ic.type == "postfix":
        from rollover.hooks.postfix import PostfixInstaller

        return PostfixInstaller(ic.directory, ic.reload_command or ("postfix", "reload"),
                                file_name=ic.file_name, file_mode=ic.file_mode, group=ic.group)
    if ic.type == "command":
        from rollover.hooks.command import CommandInstaller

        return CommandInstaller(ic.directory, ic.command, file_name=ic.file_name,
                                key_name=ic.key_name, chain_name=ic.chain_name,
                                file_mode=ic.file_mode, group=ic.group)
    raise ConfigError(f"{ic.where}: installer type {ic.type} is not available yet")


def build_engine(config: Config, clock: Clock, *, with_certs: bool = True,
                 create_state: bool = True) -> Engine:
    """The engine with real edges. `with_certs=False` (plan, status) skips ACME, installers
    and the prober; `create_state=False` creates nothing on disk."""
    store = StateStore(config.state_dir, create=create_state)
    observer = Observer(config.resolver, port=config.dns.port, timeout=config.dns.timeout,
                        clock=clock)
    providers: dict[str, Provider] = {}
    for ep in config.endpoints:
        if ep.provider not in providers:
            try:
                providers[ep.provider] = build_provider(config, ep.provider)
            except ProviderError as exc:
                raise ConfigError(f"{ep.where}: provider {ep.provider}: {exc}") from None
    edges = Edges(clock=clock, store=store, observer=observer, providers=providers,
                  verify=verify_chain)
    engine = Engine(config, edges)
    if not with_certs:
        return engine
    from rollover.probe import LiveProber

    edges.prober = LiveProber(config.resolver, dns_port=config.dns.port,
                              dns_timeout=config.dns.timeout, timeout=10.0)
    for ep in config.endpoints:
        key = str(ep.endpoint)
        installer = build_installer(config, ep)
        if installer is not None:
            edges.installers[key] = installer
        if ep.certificate is not None and ep.certificate.source == "acme":
            source: CertSource = AcmeSource(config, store, providers[ep.provider], observer,
                                            engine.zone_of(ep), clock, ep.certificate.profile)
            edges.certs[key] = source
    return engine
