"""The configuration file (YAML): load, check everything, and hand back frozen, typed dataclasses.

`load_config(path)` reports every problem of the file at once as one ConfigFileError whose str()
has one line per problem, each "FILE:LINE: key.path: problem". Advice that is not an error (the
seed's TTL range, one key shared by several MX hosts, a weak TSIG algorithm) goes to
`Config.warnings` in the same format. Relative paths are taken relative to the config file.

The sections of providers, installers and certificate sources belong to their plugins
(`rollover.config.registry`): this loader reads their `type` (`source`), finds the plugin, and
hands it the section to check with the same FILE:LINE machinery; it knows none of their keys.

Secrets never live here: a plugin keeps the *path* of a secret, checked to exist and be private
(`ParseContext.secret_file`), and reads it when the edge is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from rollover import fileio
from rollover.config import registry
from rollover.config.check import Problems, Section, compose, line_of
from rollover.display import clip, shown
from rollover.errors import ConfigError, RolloverError
from rollover.model import (
    KEY_LIFETIME,
    MIN_WAIT,
    RENEW_BEFORE,
    RETIRE_GRACE,
    Algorithm,
    Endpoint,
    Scheme,
    SlotId,
)

DEFAULT_STATE_DIR = Path("/var/lib/rollover")
RESOLV_CONF = Path("/etc/resolv.conf")
DEFAULT_ALGORITHMS = (Algorithm.ECDSA_P256,)
ADVISED_TTL = (1800, 3600)  # the seed how-to: "between 30 minutes and 1 hour"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_KEYS = ("state_dir", "resolver", "dns", "acme", "providers", "installers", "endpoints")
_ENDPOINT_KEYS = (
    "host", "port", "zone", "provider", "scheme", "algorithms", "ttl", "extra_nameservers",
    "addresses", "installer", "certificate", "policy", "bootstrap", "issuer", "issuer_bundle",
    "max_records",
)  # fmt: skip
ISSUER_CHOICES = ("root", "intermediate")
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_PIN = re.compile(r"^2 1 1 [0-9a-f]{64}$")
# bootstrap: how the key in service is found before the first publish
BOOTSTRAP_MODES = ("inspect", "no-certificate")


class ConfigFileError(ConfigError):
    """All problems of one config file; str() is one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# --------------------------------------------------------------------------------------------
# The typed result


@dataclass(frozen=True)
class DnsOptions:
    timeout: float = 2.0  # seconds per query
    port: int = 53
    in_flight: int = 32  # queries outstanding at once per nameserver address (one round)


@dataclass(frozen=True)
class EabConfig:
    """ACME external account binding. The HMAC key stays in its (private) file."""

    kid: str
    hmac_key_file: Path

    def read_hmac_key(self) -> str:
        return fileio.read_secret(self.hmac_key_file, "ACME EAB HMAC key file")


@dataclass(frozen=True)
class AcmeConfig:
    directory: str | None = None  # URL; required when an endpoint uses source: acme
    email: str | None = None
    ca_bundle: Path | None = None  # CA to trust for the ACME server's HTTPS (e.g. Pebble)
    profile: str | None = None  # ACME profile (draft-ietf-acme-profiles), e.g. "tlsserver"
    eab: EabConfig | None = None
    dns_timeout: int = 300  # how long DNS-01 TXT records may take to reach every nameserver
    order_timeout: int = 300  # an order not valid by then is given up (a fresh one comes later)
    network_timeout: int = 30  # seconds one HTTP request to the CA may take
    challenge_attempts: int = 3  # orders in a row whose DNS-01 challenge the CA rejected: stop
    where: str = ""


@dataclass(frozen=True)
class ProviderConfig:
    """One `providers:` entry. `options` is what its plugin's parse_options returned (its own
    type; a plugin without a schema gets the plain mapping)."""

    name: str
    type: str
    # the plugin's options; may hold a third-party secret: kept out of repr()
    options: Any = field(default=None, repr=False, compare=False)
    where: str = ""  # "FILE:LINE" of the provider's definition


@dataclass(frozen=True)
class InstallerConfig:
    """One `installers:` entry; `options` belongs to its plugin."""

    name: str
    type: str
    options: Any = field(default=None, repr=False, compare=False)
    where: str = ""

    def file_names(self, slot: SlotId) -> tuple[str, ...]:
        """The file names this installer writes for `slot` (none known: empty)."""
        names = getattr(self.options, "file_names", None)
        return tuple(names(slot)) if callable(names) else ()

    def describe(self, slot: SlotId) -> str:
        """Where an install goes, for `plan` ("into FILES; then COMMAND")."""
        describe = getattr(self.options, "describe", None)
        return str(describe(slot)) if callable(describe) else f"with {self.type} {self.name}"


@dataclass(frozen=True)
class CertificateConfig:
    """An endpoint's `certificate:` section; `options` belongs to the source's plugin."""

    source: str
    options: Any = field(default=None, repr=False, compare=False)
    where: str = ""

    def describe(self) -> str:
        describe = getattr(self.options, "describe", None)
        return str(describe()) if callable(describe) else f"from {self.source}"

    def key_paths(self) -> tuple[Path, ...]:
        """Private key files the source reads (for the one-key-per-host advice)."""
        paths = getattr(self.options, "key_paths", None)
        return tuple(paths()) if callable(paths) else ()


@dataclass(frozen=True)
class PolicyConfig:
    """The `policy:` section; its defaults are the machine's (rollover.model)."""

    key_lifetime: int = KEY_LIFETIME
    renew_before: int = RENEW_BEFORE
    retire_grace: int = RETIRE_GRACE
    min_wait: int = MIN_WAIT
    archive_keys: bool = False  # keep retired private keys in keys/archive/ (0600), not delete
    retry_backoff: int = 300  # first wait after a failed order/install; doubles, capped at 1 day


@dataclass(frozen=True)
class EndpointConfig:
    host: str  # lowercase, no trailing dot
    provider: str  # a key of Config.providers
    port: int = 25
    zone: str | None = None  # None: discovered by SOA walk
    scheme: Scheme = Scheme.CURRENT_NEXT
    algorithms: tuple[Algorithm, ...] = DEFAULT_ALGORITHMS
    ttl: int = 3600
    extra_nameservers: tuple[str, ...] = ()  # IPs also to check (hidden primary, ...)
    addresses: tuple[str, ...] = ()  # IPs to probe; empty: resolve the host
    installer: str | None = None  # a key of Config.installers
    certificate: CertificateConfig | None = None  # None: manage the records only
    policy: PolicyConfig = PolicyConfig()
    # "inspect": look at the key every address presents before publishing (a failed look blocks
    # publishing); "no-certificate": the operator says nothing is in service yet
    bootstrap: str = "inspect"
    # current+issuer: which issuer's 2 1 1 to publish ("root", "intermediate", or "pins": the
    # operator's list in issuer_pins), and the CA bundle the root is looked up in
    issuer: str = "root"
    issuer_pins: tuple[str, ...] = ()
    issuer_bundle: Path | None = None
    max_records: int = 8  # TLSA records per owner this endpoint may want
    where: str = ""  # "FILE:LINE" of this endpoint

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port)

    def slots(self) -> list[SlotId]:
        return [SlotId(self.host, self.port, alg) for alg in self.algorithms]


@dataclass(frozen=True)
class Config:
    path: Path
    resolver: tuple[str, ...]
    state_dir: Path = DEFAULT_STATE_DIR
    dns: DnsOptions = DnsOptions()
    acme: AcmeConfig | None = None
    providers: Mapping[str, ProviderConfig] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    installers: Mapping[str, InstallerConfig] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    endpoints: tuple[EndpointConfig, ...] = ()
    warnings: tuple[str, ...] = ()  # "FILE:LINE: key.path: advice", for stderr

    def endpoint_slots(self) -> list[SlotId]:
        return [slot for ep in self.endpoints for slot in ep.slots()]

    def endpoint(self, host: str, port: int = 25) -> EndpointConfig | None:
        host = host.lower().rstrip(".")
        return next((e for e in self.endpoints if e.host == host and e.port == port), None)

    def provider_for(self, endpoint: EndpointConfig) -> ProviderConfig:
        return self.providers[endpoint.provider]

    def installer_for(self, endpoint: EndpointConfig) -> InstallerConfig | None:
        return self.installers[endpoint.installer] if endpoint.installer else None


# --------------------------------------------------------------------------------------------
# Loading


def system_resolvers(resolv_conf: Path = RESOLV_CONF) -> tuple[str, ...]:
    """Nameserver addresses listed in resolv.conf (empty when none or unreadable)."""
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in out:
            out.append(parts[1])
    return tuple(out)


def load_config(path: str | Path, *, resolv_conf: Path = RESOLV_CONF) -> Config:
    """Read and check the config file; raise ConfigFileError listing every problem."""
    path = Path(path)
    p = Problems(str(path))
    try:
        raw = fileio.read_limited(path, "config file", fileio.CONFIG_LIMIT,
                                  missing=ConfigError, bad=ConfigError)
    except ConfigError as exc:
        raise ConfigFileError([str(exc)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigFileError([f"{path}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        root = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = clip(exc.problem or "cannot parse", 100)
        ctx = f" ({clip(exc.context, 60)})" if exc.context else ""
        raise ConfigFileError([f"{path}:{line}: YAML syntax error: {what}{ctx}"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ...)
        line = text[: exc.position].count("\n") + 1
        char = "a NUL byte" if exc.character in (0, "\0") else f"the character {_char(exc)}"
        raise ConfigFileError(
            [f"{path}:{line}: {char} is not allowed in YAML (is this a binary file?)"]
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "cannot parse"
        raise ConfigFileError([f"{path}:1: YAML error: {clip(first, 100)}"]) from None
    if root is None:
        raise ConfigFileError(
            [f"{path}:1: the file is empty; expected a mapping with providers and endpoints"]
        )
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise ConfigFileError(
            [f"{path}:{line_of(root)}: the top level must be a mapping of settings, not {kind}"]
        )
    known = [
        k for k, _ in root.value
        if isinstance(k, yaml.ScalarNode) and (k.value in _TOP_KEYS or k.value.startswith("x-"))
    ]
    if not known:
        # nothing of ours: say so without echoing a line of what may be someone else's file
        raise ConfigFileError([
            f"{path}:1: no rollover setting found (expected {', '.join(_TOP_KEYS)}); "
            "is this a rollover config file?"
        ])
    config = _Builder(p, path, resolv_conf).build(root)
    if p.errors or config is None:
        raise ConfigFileError(p.format(p.errors))
    return config


def _char(exc: yaml.reader.ReaderError) -> str:
    code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return f"U+{code:04X}"


class _Builder:
    def __init__(self, p: Problems, path: Path, resolv_conf: Path) -> None:
        self.p = p
        self.path = path
        self.base = path.absolute().parent
        self.resolv_conf = resolv_conf
        self._endpoint_sections: list[tuple[Section, EndpointConfig]] = []
        self._provider_plugins: dict[str, Any] = {}

    def build(self, root: yaml.MappingNode) -> Config | None:
        extensions = [k.value for k, _ in root.value if str(k.value).startswith("x-")]
        top = Section(self.p, root, "", (*_TOP_KEYS, *extensions))
        top.line = 1
        state_dir = top.get_path("state_dir", self.base) or DEFAULT_STATE_DIR
        resolver = self._resolver(top)
        dns = self._dns(top)
        acme = self._acme(top)
        providers = self._providers(top)
        installers = self._installers(top)
        endpoints = self._endpoints(
            top, self._declared(top, "providers"), self._declared(top, "installers"), acme
        )
        owners: dict[tuple[str, str], tuple[EndpointConfig, SlotId]] = {}
        for sec, ep in self._endpoint_sections:
            self._installer_collisions(sec, ep, installers, owners)
        return Config(
            path=self.path,
            resolver=resolver,
            state_dir=state_dir,
            dns=dns,
            acme=acme,
            providers=MappingProxyType(providers),
            installers=MappingProxyType(installers),
            endpoints=tuple(endpoints),
            warnings=tuple(self.p.format(self.p.warnings)),
        )

    # -- top-level sections ------------------------------------------------------------------

    def _resolver(self, top: Section) -> tuple[str, ...]:
        if top.has("resolver"):
            node = top.value_node("resolver")
            addrs = top.get_ip_list("resolver") or ()
            if isinstance(node, yaml.SequenceNode) and not node.value:
                top.bad("resolver", "must list at least one IP address")
            return addrs
        addrs = system_resolvers(self.resolv_conf)
        if not addrs:
            top.bad(
                "resolver",
                f"not set, and {self.resolv_conf} lists no nameserver; "
                "give the IP addresses of a resolver",
            )
        return addrs

    def _dns(self, top: Section) -> DnsOptions:
        sec = top.section("dns", ("timeout", "port", "in_flight"))
        if sec is None:
            return DnsOptions()
        return DnsOptions(
            timeout=sec.get_float("timeout", 2.0, hi=60),
            port=sec.get_int("port", 53, lo=1, hi=65535) or 53,
            in_flight=sec.get_int("in_flight", DnsOptions.in_flight, lo=1, hi=1024)
            or DnsOptions.in_flight,
        )

    def _acme(self, top: Section) -> AcmeConfig | None:
        if not top.has("acme"):
            return None
        sec = top.section(
            "acme",
            ("directory", "email", "ca_bundle", "profile", "eab", "dns_timeout",
             "order_timeout", "network_timeout", "challenge_attempts"),
        )
        if sec is None:
            return None
        directory = sec.get_str("directory", required=True)
        if directory and not re.match(r"^https?://[^/\s]+", directory):
            sec.bad("directory", f"{shown(directory)} is not an http(s) URL")
        elif directory and directory.startswith("http://"):
            sec.warn("directory", "plain http: an ACME server should be reached over https")
        email = sec.get_str("email")
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            sec.bad("email", f"{shown(email)} is not an email address")
        ca_bundle = sec.get_path("ca_bundle", self.base, must_exist="file")
        profile = sec.get_str("profile")
        dns_timeout = sec.get_duration("dns_timeout", AcmeConfig.dns_timeout)
        if dns_timeout <= 0:
            sec.bad("dns_timeout", "must be longer than 0")
        order_timeout = sec.get_duration("order_timeout", AcmeConfig.order_timeout)
        network_timeout = sec.get_duration("network_timeout", AcmeConfig.network_timeout)
        for key, value in (("order_timeout", order_timeout),
                           ("network_timeout", network_timeout)):
            if value <= 0:
                sec.bad(key, "must be longer than 0")
        challenge_attempts = sec.get_int("challenge_attempts", AcmeConfig.challenge_attempts,
                                         lo=1, hi=100)
        eab = None
        if sec.has("eab"):
            esec = sec.section("eab", ("kid", "hmac_key_file"))
            if esec is not None:
                kid = esec.get_str("kid", required=True)
                key_file = self._secret_file(esec, "hmac_key_file", "EAB HMAC key file", True)
                if kid and key_file:
                    eab = EabConfig(kid=kid, hmac_key_file=key_file)
        return AcmeConfig(
            directory=directory,
            email=email,
            ca_bundle=ca_bundle,
            profile=profile,
            eab=eab,
            dns_timeout=dns_timeout,
            order_timeout=order_timeout,
            network_timeout=network_timeout,
            challenge_attempts=challenge_attempts or AcmeConfig.challenge_attempts,
            where=f"{self.p.file}:{sec.line}",
        )

    def _secret_file(self, sec: Section, key: str, what: str, required: bool) -> Path | None:
        # no must_exist: check_private looks at the name itself (a link is refused, not followed)
        path = sec.get_path(key, self.base, required=required)
        if path is None:
            return None
        try:
            fileio.check_private(path, what, ConfigError)
        except RolloverError as exc:
            sec.bad(key, str(exc))
            return None
        return path

    def _context(self, name: str, **kw: Any) -> registry.ParseContext:
        return registry.ParseContext(name=name, base=self.base, secret_file=self._secret_file,
                                     **kw)

    def _edge(
        self, kind: registry.Kind, sec: Section, ctx: registry.ParseContext, type_key: str = "type"
    ) -> tuple[str, Any, Any] | None:
        """(type, plugin, options) of one edge section, checked by its plugin; None after
        reporting (unknown type, not loadable, not implemented yet, bad options)."""
        etype = sec.get_str(type_key, required=True)
        if etype is None:
            return None
        try:
            plugin = registry.find(kind, etype)
        except registry.PluginError as exc:
            sec.bad(type_key, str(exc))
            return None
        options = registry.parse_section(plugin, sec, ctx, type_key)
        if options is None:
            return None
        return etype, plugin, options

    def _named_sections(self, top: Section, key: str, what: str) -> list[tuple[str, Section]]:
        sec = top.section(key, (), open_ended=True)
        if sec is None:
            return []
        out = []
        for name, (knode, vnode) in sec.keys.items():
            path = f"{key}.{name}"
            if not _NAME.match(name):
                self.p.error(line_of(knode), path, f"{what} names may use letters, digits, . _ -")
                continue
            if not isinstance(vnode, yaml.MappingNode):
                self.p.error(line_of(vnode), path, "must be a mapping with at least 'type'")
                continue
            esec = Section(self.p, vnode, path, (), open_ended=True)
            esec.line = line_of(knode)
            out.append((name, esec))
        return out

    def _providers(self, top: Section) -> dict[str, ProviderConfig]:
        out: dict[str, ProviderConfig] = {}
        for name, sec in self._named_sections(top, "providers", "provider"):
            built = self._edge("provider", sec, self._context(name))
            if built is not None:
                ptype, plugin, options = built
                self._provider_plugins[name] = (plugin, options)
                out[name] = ProviderConfig(name, ptype, options, f"{self.p.file}:{sec.line}")
        return out

    def _installers(self, top: Section) -> dict[str, InstallerConfig]:
        out: dict[str, InstallerConfig] = {}
        for name, sec in self._named_sections(top, "installers", "installer"):
            built = self._edge("installer", sec, self._context(name))
            if built is not None:
                itype, _plugin, options = built
                out[name] = InstallerConfig(name, itype, options, f"{self.p.file}:{sec.line}")
        return out

    # -- endpoints ---------------------------------------------------------------------------

    def _declared(self, top: Section, key: str) -> set[str]:
        """Names given under providers/installers, valid or not (no cascade of errors)."""
        node = top.value_node(key)
        if not isinstance(node, yaml.MappingNode):
            return set()
        return {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}

    def _endpoints(
        self,
        top: Section,
        providers: set[str],
        installers: set[str],
        acme: AcmeConfig | None,
    ) -> list[EndpointConfig]:
        out: list[EndpointConfig] = []
        if not top.has("endpoints"):
            if "endpoints" not in top.keys:
                top.missing("endpoints")
            else:
                top.bad("endpoints", "must list at least one endpoint")
            return out
        seen: dict[tuple[str, int], int] = {}
        key_users: dict[Path, tuple[str, int]] = {}
        items = list(top.sequence("endpoints"))
        if not items and isinstance(top.value_node("endpoints"), yaml.SequenceNode):
            top.bad("endpoints", "must list at least one endpoint")
        for path, node in items:
            if not isinstance(node, yaml.MappingNode):
                self.p.error(
                    line_of(node), path, "each endpoint must be a mapping with host, provider"
                )
                continue
            sec = Section(self.p, node, path, _ENDPOINT_KEYS)
            ep = self._endpoint(sec, providers, installers, acme)
            if ep is None:
                continue
            ident = (ep.host, ep.port)
            if ident in seen:
                sec.bad("host", f"duplicate endpoint {ep.host} port {ep.port} "
                        f"(already listed on line {seen[ident]})")  # fmt: skip
                continue
            seen[ident] = sec.line
            self._shared_keys(sec, ep, key_users)
            self._endpoint_sections.append((sec, ep))
            out.append(ep)
        return out

    def _endpoint(
        self,
        sec: Section,
        providers: set[str],
        installers: set[str],
        acme: AcmeConfig | None,
    ) -> EndpointConfig | None:
        host = sec.get_hostname("host", required=True, what="a host name")
        port = sec.get_int("port", 25, lo=1, hi=65535) or 25
        zone = sec.get_hostname("zone", what="a zone name")
        if host and zone and not (host == zone or host.endswith("." + zone)):
            sec.bad("zone", f"{host} is not inside zone {zone}")
        provider = sec.get_str("provider", required=True)
        if provider is not None and provider not in providers:
            if not providers:
                sec.bad("provider", f"names {shown(provider)}, but no providers are configured")
            else:
                known = ", ".join(sorted(providers))
                sec.bad("provider", f"unknown provider {shown(provider)} (configured: {known})")
        scheme = self._scheme(sec)
        algorithms = self._algorithms(sec)
        ttl = sec.get_int("ttl", 3600, lo=1, hi=2**31 - 1)
        if ttl is not None and not ADVISED_TTL[0] <= ttl <= ADVISED_TTL[1]:
            sec.warn(
                "ttl",
                f"TLSA TTL {ttl} is outside {ADVISED_TTL[0]}-{ADVISED_TTL[1]} "
                "that the DANE how-to advises for production",
            )
        extra = sec.get_ip_list("extra_nameservers") or ()
        addresses = sec.get_ip_list("addresses") or ()
        installer = sec.get_str("installer")
        if installer is not None and installer not in installers:
            known = ", ".join(sorted(installers)) or "none"
            sec.bad("installer", f"unknown installer {shown(installer)} (configured: {known})")
        certificate, source_plugin = self._certificate(sec, host or "", algorithms, acme)
        self._capabilities(sec, provider, certificate, source_plugin)
        policy = self._policy(sec)
        issuer, pins, bundle = self._issuer(sec, scheme)
        max_records = sec.get_int("max_records", 8, lo=2, hi=64) or 8
        bootstrap = sec.get_str("bootstrap") or "inspect"
        if bootstrap not in BOOTSTRAP_MODES:
            sec.bad("bootstrap", f"unknown bootstrap mode {bootstrap[:40]!r} (allowed: "
                    f"{' | '.join(BOOTSTRAP_MODES)})")
            bootstrap = "inspect"
        if host is None or provider is None:
            return None
        return EndpointConfig(
            host=host,
            provider=provider,
            port=port,
            zone=zone,
            scheme=scheme,
            algorithms=algorithms,
            ttl=ttl or 3600,
            extra_nameservers=extra,
            addresses=addresses,
            installer=installer,
            certificate=certificate,
            policy=policy,
            bootstrap=bootstrap,
            issuer=issuer,
            issuer_pins=pins,
            issuer_bundle=bundle,
            max_records=max_records,
            where=f"{self.p.file}:{sec.line}",
        )

    def _issuer(self, sec: Section,
                scheme: Scheme) -> tuple[str, tuple[str, ...], Path | None]:
        """issuer: root (default; the how-to prefers it) | intermediate | a list of 2 1 1 pins."""
        if scheme != Scheme.CURRENT_ISSUER:
            for key in ("issuer", "issuer_bundle"):
                if sec.has(key):
                    sec.bad(key, "only for scheme current+issuer")
            return "root", (), None
        bundle = sec.get_path("issuer_bundle", self.base, must_exist="file")
        node = sec.value_node("issuer")
        choice, pins = "root", []
        if isinstance(node, yaml.SequenceNode):
            choice = "pins"
            for path, item in sec.sequence("issuer"):
                ok, value = self.p.construct(item, path)
                text = " ".join(str(value).lower().split()) if ok else ""
                if not _PIN.match(text):
                    self.p.error(line_of(item), path, "must be a DANE-TA pin '2 1 1 <64 hex "
                                 "digits>' (rollover tlsa --bundle FILE --issuer root prints it)")
                elif text not in pins:
                    pins.append(text)
            if not pins and not self.p.errors:
                sec.bad("issuer", "must list at least one pin")
        elif node is not None:
            value = sec.get_str("issuer") or "root"
            if value not in ISSUER_CHOICES:
                sec.bad("issuer", f"unknown issuer choice {value[:40]!r} (allowed: root | "
                        "intermediate | a list of '2 1 1 <hex>' pins)")
            else:
                choice = value
        if choice == "root" and bundle is None:
            bundle = SYSTEM_CA_BUNDLE
        return choice, tuple(pins), bundle

    def _scheme(self, sec: Section) -> Scheme:
        value = sec.get_str("scheme")
        if value is None:
            return Scheme.CURRENT_NEXT
        try:
            return Scheme(value.lower())
        except ValueError:
            allowed = " | ".join(s.value for s in Scheme)
            sec.bad("scheme", f"unknown scheme {shown(value)} (allowed: {allowed})")
            return Scheme.CURRENT_NEXT

    def _algorithms(self, sec: Section) -> tuple[Algorithm, ...]:
        if not sec.has("algorithms"):
            if "algorithms" in sec.keys:
                sec.bad("algorithms", "must list at least one algorithm")
            return DEFAULT_ALGORITHMS
        out: list[Algorithm] = []
        allowed = ", ".join(a.value for a in Algorithm)
        items = list(sec.sequence("algorithms", allow_scalar=True))
        if not items and isinstance(sec.value_node("algorithms"), yaml.SequenceNode):
            sec.bad("algorithms", "must list at least one algorithm")
        for path, node in items:
            ok, value = (
                self.p.construct(node, path) if isinstance(node, yaml.ScalarNode) else (True, None)
            )
            if not ok:
                continue
            try:
                alg = Algorithm(str(value).lower()) if isinstance(value, str) else None
            except ValueError:
                alg = None
            if alg is None:
                shown = repr(value) if isinstance(value, str | int) else "this"
                self.p.error(line_of(node), path, f"unknown algorithm {shown} (allowed: {allowed})")
                continue
            if alg in out:
                self.p.error(line_of(node), path, f"{alg.value} is listed twice")
                continue
            out.append(alg)
        return tuple(out) or DEFAULT_ALGORITHMS

    def _certificate(
        self, sec: Section, host: str, algorithms: tuple[Algorithm, ...],
        acme: AcmeConfig | None,
    ) -> tuple[CertificateConfig | None, Any]:
        if not sec.has("certificate"):
            return None, None
        csec = sec.section("certificate", (), open_ended=True)
        if csec is None:
            return None, None
        ctx = self._context(host, algorithms=algorithms, acme=acme)
        built = self._edge("source", csec, ctx, type_key="source")
        if built is None:
            return None, None
        source, plugin, options = built
        return CertificateConfig(source, options, f"{self.p.file}:{csec.line}"), plugin

    def _capabilities(
        self, sec: Section, provider: str | None, certificate: CertificateConfig | None,
        source: Any,
    ) -> None:
        """The endpoint's provider must write TLSA records (and what its source needs, e.g.
        TXT for ACME DNS-01), as its plugin declares in SUPPORTS."""
        plugin, options = self._provider_plugins.get(provider or "", (None, None))
        supports_for = getattr(plugin, "supports_for", None)
        supports = supports_for(options) if callable(supports_for) else None
        if supports is None or provider is None:
            return
        ptype = getattr(plugin, "TYPE", "?")
        if not supports.allows("TLSA"):
            sec.bad("provider", f"{provider} ({ptype}) cannot write TLSA records")
        for rtype in getattr(source, "REQUIRES_RTYPES", ()):
            if not supports.allows(rtype):
                assert certificate is not None
                sec.bad("certificate", f"source {certificate.source} needs {rtype} records, "
                        f"which provider {provider} ({ptype}) cannot write")

    def _policy(self, sec: Section) -> PolicyConfig:
        psec = sec.section(
            "policy",
            ("key_lifetime", "renew_before", "retire_grace", "min_wait", "archive_keys",
             "retry_backoff"),
        )
        if psec is None:
            return PolicyConfig()
        d = PolicyConfig()
        policy = PolicyConfig(
            key_lifetime=psec.get_duration("key_lifetime", d.key_lifetime),
            renew_before=psec.get_duration("renew_before", d.renew_before),
            retire_grace=psec.get_duration("retire_grace", d.retire_grace),
            min_wait=psec.get_duration("min_wait", d.min_wait),
            archive_keys=psec.get_bool("archive_keys", d.archive_keys),
            retry_backoff=psec.get_duration("retry_backoff", d.retry_backoff),
        )
        if policy.retry_backoff <= 0:
            psec.bad("retry_backoff", "must be longer than 0")
        if policy.key_lifetime <= 0:
            psec.bad("key_lifetime", "must be longer than 0")
        elif policy.renew_before >= policy.key_lifetime:
            psec.bad(
                "renew_before" if psec.has("renew_before") else "key_lifetime",
                f"renew_before ({policy.renew_before}s) must be shorter than key_lifetime "
                f"({policy.key_lifetime}s)",
            )
        return policy

    def _installer_collisions(
        self,
        sec: Section,
        ep: EndpointConfig,
        installers: dict[str, InstallerConfig],
        owners: dict[tuple[str, str], tuple[EndpointConfig, SlotId]],
    ) -> None:
        """Two slots must never write the same file: other port without {port}, or several
        algorithms without {algorithm} in the file names."""
        ic = installers.get(ep.installer or "")
        if ic is None:
            return
        # a server that cannot serve these slots (Dovecot: at most one RSA + one ECDSA)
        problem = getattr(ic.options, "slots_problem", None)
        why = problem(ep.algorithms) if callable(problem) else None
        if why:
            sec.bad("installer", f"{ic.name}: {why}")
        for slot in ep.slots():
            for name in ic.file_names(slot):
                first = owners.setdefault((ic.name, name), (ep, slot))
                if first[1] == slot:
                    continue
                other_ep, other_slot = first
                if other_ep is ep:
                    hint = "add {algorithm} to its file names"
                    whom = f"{other_slot.algorithm.value} too"
                else:
                    hint = "add {port} to its file names"
                    whom = f"{other_ep.host} port {other_ep.port} too"
                sec.bad("installer", f"{ic.name} would write {name} for {whom}; {hint}")
                return

    def _shared_keys(
        self, sec: Section, ep: EndpointConfig, users: dict[Path, tuple[str, int]]
    ) -> None:
        """Warn when several MX hosts share one key (the seed advises one key per host)."""
        cert = ep.certificate
        if cert is None:
            return
        for key_path in cert.key_paths():
            other = users.setdefault(key_path, (ep.host, sec.line))
            if other[0] != ep.host:
                sec.warn(
                    "certificate",
                    f"{key_path} is also the key of {other[0]} (line {other[1]}); the DANE how-to "
                    "advises one key per MX host",
                )


