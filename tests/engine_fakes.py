"""In-memory edges for driving the real Engine without the lab: a zone whose nameservers lag
behind the provider, a CA, an installer, a prober, and an invariant monitor over all of them.

Time is a FakeClock: `Engine.run(wait=True)` sleeps on it, which advances it; every advance and
every install is checked by the monitor, so a moment in which the served chain matches no record
on some server is caught exactly when it would begin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover.clock import FakeClock
from rollover.config.load import Config, EndpointConfig, load_config
from rollover.edges.protocols import Edges, IssuedCert
from rollover.engine.loop import Engine
from rollover.engine.wiring import verify_chain
from rollover.errors import InstallError
from rollover.model import Algorithm, Observation, PresentedChain, RRset, ServerAnswer, SlotId
from rollover.providers.base import Change, check_change
from rollover.state.store import StateStore

import certgen

ZONE = "example.test."


class MonitoredClock(FakeClock):
    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.watchers: list[Callable[[], None]] = []

    def sleep(self, seconds: float) -> None:
        step = 0.25  # look at the world in small steps, as a monitor polling would
        while seconds > 0:
            super().sleep(min(step, seconds))
            seconds -= step
            for watch in self.watchers:
                watch()


@dataclass
class FakeZone:
    """The provider's copy of the zone; each nameserver serves it `lag` seconds late."""

    clock: FakeClock
    lags: tuple[float, ...] = (0.0, 0.5, 1.5)
    history: dict[str, list[tuple[datetime, frozenset[str]]]] = field(default_factory=dict)
    changes: int = 0

    def current(self, owner: str) -> frozenset[str]:
        h = self.history.get(owner)
        return h[-1][1] if h else frozenset()

    def served(self, owner: str, server: int) -> frozenset[str]:
        at = self.clock.now() - timedelta(seconds=self.lags[server])
        out: frozenset[str] = frozenset()
        for t, rrset in self.history.get(owner, []):
            if t <= at:
                out = rrset
        return out

    def set(self, owner: str, rrset: frozenset[str]) -> None:
        self.history.setdefault(owner, []).append((self.clock.now(), rrset))
        self.changes += 1


class FakeProvider:
    name = "lab"

    def __init__(self, zone: FakeZone, ttl: int) -> None:
        self.zone, self.ttl = zone, ttl

    def read(self, zone: str, owner: str, rtype: str) -> RRset:
        rd = self.zone.current(owner)
        return RRset(owner, rtype, self.ttl if rd else None, rd)

    def apply(self, change: Change) -> None:
        after = check_change(change, self.read(change.zone, change.owner, change.rtype))
        self.zone.set(change.owner, after)

    def wait_applied(self, timeout: float) -> None:
        return None


class FakeObserver:
    def __init__(self, zone: FakeZone, clock: FakeClock, ttl: int) -> None:
        self.zone, self.clock, self.ttl = zone, clock, ttl

    def find_zone(self, owner: str) -> str:
        return ZONE

    def observe(self, owner: str, rtype: str = "TLSA", zone: str | None = None,
                extra: tuple[str, ...] = ()) -> Observation:
        answers = tuple(
            ServerAnswer(f"ns{i + 1}.example.test.", f"192.0.2.{i + 1}", True, "NOERROR",
                         rd := self.zone.served(owner, i), self.ttl if rd else None, 1, None)
            for i in range(len(self.zone.lags)))
        return Observation(owner, rtype, self.clock.now(), answers, ZONE, 30, False)


class FakeCA:
    """Issues leaf <- intermediate <- root; `change_ca()` makes a new root and intermediate."""

    def __init__(self, bundle: Path, intermediates: int = 1) -> None:
        self.bundle = bundle
        self.orders = 0
        self.depth = intermediates
        self.change_ca()

    def change_ca(self) -> None:
        # fresh keys: certgen reuses one cached key per position, and a CA change (or two
        # intermediates) with the same key would have the same 2 1 1
        self.root = certgen.make_root(f"Fake Root {self.orders}", key=certgen.new_key("p256"))
        above = self.root
        self.chain_cas = []  # nearest the root first
        for i in range(self.depth):
            above = certgen.make_ca(f"Fake Intermediate {self.orders}.{i}", above,
                                    key=certgen.new_key("p256"))
            self.chain_cas.append(above)
        self.intermediate = above  # signs the leaves
        with self.bundle.open("ab") as f:
            f.write(self.root.cert_pem())

    def order(self, endpoint: EndpointConfig, slot: SlotId, key_pem: bytes) -> IssuedCert:
        self.orders += 1
        key = serialization.load_pem_private_key(key_pem, password=None)
        leaf = certgen.make_leaf(self.intermediate, [endpoint.host], key=key)  # type: ignore[arg-type]
        pem = leaf.cert_pem() + b"".join(c.cert_pem() for c in reversed(self.chain_cas))
        return IssuedCert(pem, leaf.cert.not_valid_after_utc, f"{leaf.cert.serial_number:x}")

    def renewal(self, chain_pem: bytes) -> tuple[datetime | None, datetime | None]:
        return None, None

    def describe(self) -> str:
        return "the fake CA"


class FakeInstaller:
    """What the server presents per slot: the chain of the last install (None: nothing)."""

    def __init__(self, on_install: Callable[[], None]) -> None:
        self.serving: dict[SlotId, list[x509.Certificate]] = {}
        self.previous: dict[SlotId, list[x509.Certificate] | None] = {}
        self.on_install = on_install
        self.fail_next = False

    def install(self, slot: SlotId, key_pem: bytes, chain_pem: bytes) -> None:
        if self.fail_next:
            self.fail_next = False
            raise InstallError("reload failed (fake)")
        self.previous[slot] = self.serving.get(slot)
        self.serving[slot] = x509.load_pem_x509_certificates(chain_pem)
        self.on_install()

    def rollback(self, slot: SlotId) -> None:
        before = self.previous.get(slot)
        if before is None:
            self.serving.pop(slot, None)
        else:
            self.serving[slot] = before

    def describe(self, slot: SlotId) -> str:
        return "the fake installer"


class FakeProber:
    def __init__(self, installer: FakeInstaller) -> None:
        self.installer = installer

    def probe(self, endpoint: EndpointConfig, slot: SlotId) -> list[PresentedChain]:
        chain = self.installer.serving.get(slot)
        if chain is None:
            return []  # nothing listens yet
        return [PresentedChain("192.0.2.25", tuple(chain))]


@dataclass
class World:
    engine: Engine
    clock: MonitoredClock
    zone: FakeZone
    ca: FakeCA
    installer: FakeInstaller
    config: Config
    violations: list[str]
    samples: int = 0

    def owner(self, host: str = "mail.example.test") -> str:
        return f"_25._tcp.{host}."


def build_world(tmp: Path, *, scheme: str = "current+next", ttl: int = 60,
                algorithms: tuple[str, ...] = ("ecdsa-p256",),
                hosts: tuple[str, ...] = ("mail.example.test",),
                schemes: dict[str, str] | None = None, issuer: object = "root",
                intermediates: int = 1) -> World:
    """`schemes`: host -> scheme, for a config that mixes them (default: `scheme` for all)."""
    tmp.mkdir(parents=True, exist_ok=True)
    secret = tmp / "tsig.key"
    secret.write_text("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n")
    secret.chmod(0o600)
    (tmp / "tls").mkdir(exist_ok=True)
    bundle = tmp / "roots.pem"
    bundle.write_bytes(b"")
    ca = FakeCA(bundle, intermediates)
    if callable(issuer):
        issuer = issuer(ca)  # e.g. a pin of one of this CA's certificates
    endpoints = []
    for host in hosts:
        ep: dict[str, object] = {
            "host": host, "zone": "example.test", "provider": "lab", "ttl": ttl,
            "algorithms": list(algorithms), "installer": "mta",
            "certificate": {"source": "acme"},
            "policy": {"retire_grace": "30s", "key_lifetime": "60d", "renew_before": "1d"},
        }
        if (schemes or {}).get(host, scheme) == "current+issuer":
            ep.update({"scheme": "current+issuer", "issuer": issuer,
                       "issuer_bundle": str(bundle)})
        endpoints.append(ep)
    doc = {
        "state_dir": str(tmp / "state"), "resolver": ["192.0.2.53"],
        "acme": {"directory": "https://ca.example.test/dir"},
        "providers": {"lab": {"type": "rfc2136", "server": "192.0.2.1",
                              "tsig_key_name": "k", "tsig_secret_file": str(secret)}},
        "installers": {"mta": {"type": "postfix", "directory": str(tmp / "tls")}},
        "endpoints": endpoints,
    }
    path = tmp / "rollover.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = load_config(path)
    clock = MonitoredClock(datetime.fromisoformat("2026-12-01T12:00:00+00:00"))
    zone = FakeZone(clock)
    violations: list[str] = []
    world: World

    # The verdict depends on the time only through which certificates of the chain are inside
    # their validity window: one (chain, RRset, windows) key always gets the same verdict.
    # Looking it up keeps the 0.25 s sampling of days of fake time to seconds of real time.
    Key = tuple[tuple[x509.Certificate, ...], frozenset[str], str, tuple[bool, ...]]
    verdicts: dict[Key, str | None] = {}

    def judged(chain: list[x509.Certificate], records: frozenset[str], host: str) -> str | None:
        now = clock.now()
        inside = tuple(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in chain)
        key = (tuple(chain), records, host, inside)
        if key not in verdicts:
            verdicts[key] = verify_chain(chain, records, host, now)
        return verdicts[key]

    def watch() -> None:
        world.samples += 1
        for slot, chain in installer.serving.items():
            owner = world.owner(slot.host)
            for i in range(len(zone.lags)):
                records = zone.served(owner, i)
                why = judged(chain, records, slot.host)
                if why is not None:
                    violations.append(f"{clock.now()}: ns{i + 1} {slot}: {why}")

    installer = FakeInstaller(watch)
    store = StateStore(config.state_dir, create=True)
    edges = Edges(clock=clock, store=store, observer=FakeObserver(zone, clock, ttl),
                  providers={"lab": FakeProvider(zone, ttl)}, verify=verify_chain,
                  prober=FakeProber(installer))
    engine = Engine(config, edges)
    for ep in config.endpoints:
        edges.certs[str(ep.endpoint)] = ca
        edges.installers[str(ep.endpoint)] = installer
    clock.watchers.append(watch)
    world = World(engine, clock, zone, ca, installer, config, violations)
    return world


def algorithm(name: str) -> Algorithm:
    return Algorithm(name)
