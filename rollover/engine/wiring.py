"""Build the engine's edges from the configuration: providers, observer, certificate sources,
installers, probe. Providers, installers and sources are found in their registries
(`rollover.config.registry`) by the type the config names, and built by their own plugin.

Everything that reads a secret (TSIG, API keys, EAB) happens here, once, when the edge is built;
nothing of it is kept where it could be printed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509

from rollover.clock import Clock
from rollover.config import registry
from rollover.config.load import Config, EndpointConfig
from rollover.dane import match as dane
from rollover.edges.observe import Observer
from rollover.engine.loop import CertSource, Edges, Engine, Installer
from rollover.errors import ConfigError, InstallError, ProviderError, RolloverError
from rollover.model import TLSARecord
from rollover.providers.base import Provider
from rollover.state.store import StateStore


def verify_chain(chain: list[x509.Certificate], records: frozenset[str], host: str,
                 now: datetime) -> str | None:
    """None when `chain` matches the RRset as a DANE SMTP client would see it, else why not."""
    if not records:
        return "no TLSA records served"
    parsed = [TLSARecord.from_text(r) for r in records]
    verdict = dane.match_chain(chain, parsed, host, now)
    return None if verdict.matched else verdict.reason


def _plugin(kind: registry.Kind, type_name: str, where: str) -> Any:
    try:
        return registry.find(kind, type_name)
    except registry.PluginError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_provider(config: Config, name: str) -> Provider:
    """The provider `name` of the config, built by its plugin (secrets are read now)."""
    pc = config.providers[name]
    cls = _plugin("provider", pc.type, pc.where)
    if hasattr(cls, "from_config"):
        provider: Provider = cls.from_config(name, pc.options)
    else:  # a third-party class without a schema: it checks its plain options itself
        provider = cls.from_options(name, dict(pc.options or {}))
    return provider


def build_installer(config: Config, endpoint: EndpointConfig) -> Installer | None:
    ic = config.installer_for(endpoint)
    if ic is None:
        return None
    cls = _plugin("installer", ic.type, ic.where)
    try:
        installer: Installer = cls.from_config(ic.name, ic.options)
    except InstallError as exc:
        raise ConfigError(f"{ic.where}: installer {ic.name}: {exc}") from None
    return installer


def build_source(config: Config, endpoint: EndpointConfig, env: registry.SourceEnv
                 ) -> CertSource | None:
    cc = endpoint.certificate
    if cc is None:
        return None
    cls = _plugin("source", cc.source, cc.where)
    try:
        source: CertSource = cls.from_config(cc.options, env)
    except RolloverError as exc:
        raise ConfigError(f"{cc.where}: source {cc.source}: {exc}") from None
    return source


def build_engine(config: Config, clock: Clock, *, with_certs: bool = True,
                 create_state: bool = True) -> Engine:
    """The engine with real edges. `with_certs=False` (plan, status) skips ACME, installers
    and the prober; `create_state=False` creates nothing on disk."""
    store = StateStore(config.state_dir, create=create_state)
    observer = Observer(config.resolver, port=config.dns.port, timeout=config.dns.timeout,
                        clock=clock, in_flight=config.dns.in_flight)
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
    from rollover.edges.probe import LiveProber

    edges.prober = LiveProber(config.resolver, dns_port=config.dns.port,
                              dns_timeout=config.dns.timeout, timeout=10.0)
    for ep in config.endpoints:
        key = str(ep.endpoint)
        installer = build_installer(config, ep)
        if installer is not None:
            edges.installers[key] = installer
        if ep.certificate is not None:
            env = registry.SourceEnv(config, ep, store, providers[ep.provider], observer,
                                     engine.zone_of(ep), clock)
            source = build_source(config, ep, env)
            if source is not None:
                edges.certs[key] = source
    return engine
