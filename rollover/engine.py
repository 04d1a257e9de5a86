"""The loop: load state, observe, step, act, persist after every action, until the machine waits.

The engine owns no policy: `rollover.machine` decides, the engine carries out one action at a
time through the edges (providers, observer, key store, certificate source, installer, prober)
and feeds the outcome back. State is saved after every step and every action, under the lock,
so `kill -9` at any instant leaves a state from which the next run resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollover import machine as m
from rollover import registry, spool, tlsa
from rollover.clock import Clock
from rollover.config import Config, EndpointConfig
from rollover.errors import (
    AcmeError,
    InstallError,
    ObserveError,
    ProviderError,
    StateError,
)
from rollover.issuers import IssuerError, issuer_chain
from rollover.model import Observation, PresentedChain, Scheme, SlotId
from rollover.providers.base import Change, Provider
from rollover.report import SlotReport
from rollover.sources import CertSourceError, ExternalCert, NoCertYet
from rollover.state import StateStore

log = logging.getLogger("rollover.engine")

MAX_ACTIONS_PER_SLOT = 64  # a run that wants more than this is looping: stop and say so


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


def policy_for(endpoint: EndpointConfig) -> m.Policy:
    p = endpoint.policy
    return m.Policy(
        ttl=endpoint.ttl,
        key_lifetime=p.key_lifetime,
        renew_before=p.renew_before,
        retire_grace=p.retire_grace,
        min_wait=p.min_wait,
        certificates=endpoint.certificate is not None,
        inspect_live=endpoint.bootstrap != "no-certificate",
        scheme=endpoint.scheme.value,
        issuer_pins=frozenset(endpoint.issuer_pins),
        max_records=endpoint.max_records,
        external_source=_external(endpoint),
    )


def _external(endpoint: EndpointConfig) -> str:
    """Who decides the key when the source is external (certbot, files); "" for ACME."""
    if endpoint.certificate is None:
        return ""
    try:
        plugin = registry.find("source", endpoint.certificate.source)
    except registry.PluginError:
        return ""  # refused when the config loaded; nothing to build here
    return str(getattr(plugin, "EXTERNAL", ""))


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class Engine:
    def __init__(self, config: Config, edges: Edges) -> None:
        self.config = config
        self.edges = edges
        self.clock = edges.clock
        self._zones: dict[str, str] = {}

    # --- state document ------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        doc = self.edges.store.load() or {}
        doc.setdefault("slots", {})
        return doc

    def _slot_state(self, doc: dict[str, Any], slot: SlotId) -> m.SlotState:
        raw = doc["slots"].get(slot.key)
        if raw is None:
            return m.SlotState.new(slot, self.clock.now())
        try:
            return m.slot_from_dict(raw)
        except (KeyError, ValueError, TypeError) as exc:
            raise StateError(
                f"state of slot {slot} is damaged ({exc.__class__.__name__}: "
                f"{exc}); restore {self.edges.store.state_dir}/state.json "
                "from a backup"
            ) from None

    def _save(self, doc: dict[str, Any], st: m.SlotState) -> None:
        doc["slots"][st.slot.key] = m.slot_to_dict(st)
        self.edges.store.save(doc)

    # --- observation -------------------------------------------------------------------------

    def zone_of(self, endpoint: EndpointConfig) -> str:
        if endpoint.zone:
            return endpoint.zone if endpoint.zone.endswith(".") else endpoint.zone + "."
        owner = endpoint.endpoint.owner
        if owner not in self._zones:
            self._zones[owner] = self.edges.observer.find_zone(owner)
        return self._zones[owner]

    def observe(self, endpoint: EndpointConfig) -> Observation:
        return self.edges.observer.observe(
            endpoint.endpoint.owner,
            "TLSA",
            self.zone_of(endpoint),
            tuple(endpoint.extra_nameservers),
        )

    # --- public entry points -----------------------------------------------------------------

    def slots(self) -> Iterator[tuple[EndpointConfig, SlotId]]:
        for ep in self.config.endpoints:
            for slot in ep.slots():
                yield ep, slot

    def run(
        self,
        *,
        roll: bool = False,
        wait: bool = False,
        max_wait: float = 86400.0,
        progress: Callable[[list[SlotReport], datetime], None] | None = None,
    ) -> list[SlotReport]:
        """Advance every slot as far as the rules allow. With `wait`, keep going until no slot
        has anything scheduled (or `max_wait` seconds pass)."""
        with self.edges.store.lock():
            doc = self._load()
            self._check_providers()
            if roll:
                for _, slot in self.slots():
                    st = self._slot_state(doc, slot)
                    if not st.roll_requested:
                        self._save(doc, m.request_roll(st))
            deadline = self.clock.now() + timedelta(seconds=max_wait)
            while True:
                self._pick_up_spool(doc)
                reports = [self._advance(doc, ep, slot) for ep, slot in self.slots()]
                now = self.clock.now()
                wakes = [r.wake_at for r in reports if r.wake_at is not None]
                if not wait or not wakes or any(r.error for r in reports):
                    return reports
                wake = min(wakes)
                if wake > deadline:
                    return reports
                if progress is not None:
                    progress(reports, wake)
                self.clock.sleep(max(0.05, (wake - now).total_seconds()))

    def _pick_up_spool(self, doc: dict[str, Any]) -> None:
        """What deploy hooks left while no run held the lock (or while this one did): the
        slots of those endpoints look at their source on their next step."""
        spooled = spool.read(self.edges.store.state_dir)
        for ep, slot in self.slots():
            entry = spooled.get(str(ep.endpoint))
            if entry is not None:
                log.info("%s: %s", slot, entry.describe())
                self._save(doc, m.source_changed(self._slot_state(doc, slot)))
        for ep in self.config.endpoints:
            if str(ep.endpoint) in spooled:
                spool.remove(self.edges.store.state_dir, spooled[str(ep.endpoint)])

    def _check_providers(self) -> None:
        """Read each endpoint's RRset through its provider before changing anything, so bad
        credentials fail the run before a single key is generated or state written."""
        for ep in self.config.endpoints:
            provider = self.edges.providers[ep.provider]
            try:
                zone = self.zone_of(ep)
            except ObserveError:
                continue  # reported per slot by _advance
            provider.read(zone, ep.endpoint.owner, "TLSA")

    def plan(self) -> list[SlotReport]:
        """What `run` would do now, per slot. Reads state and DNS; writes nothing."""
        doc = self._load()
        reports = []
        for ep, slot in self.slots():
            st = self._slot_state(doc, slot)
            try:
                obs = self.observe(ep)
            except ObserveError as exc:
                reports.append(SlotReport(slot, st, f"cannot observe: {exc}", error=str(exc)))
                continue
            reports.append(self._simulate(ep, st, obs))
        return reports

    def status(self, observe: bool = True) -> list[SlotReport]:
        """The stored state of every slot, with a fresh observation when `observe`."""
        doc = self._load()
        reports = []
        for ep, slot in self.slots():
            st = self._slot_state(doc, slot)
            obs: Observation | None = None
            if observe:
                try:
                    obs = self.observe(ep)
                except ObserveError as exc:
                    reports.append(SlotReport(slot, st, f"cannot observe: {exc}", error=str(exc)))
                    continue
            r = m.step(st, obs, policy_for(ep), self.clock.now())
            report = SlotReport(slot, r.state, r.reason,
                                r.action.describe() if r.action else None, r.wake_at)
            if observe and self.edges.prober is not None and ep.certificate is not None:
                report.live = self._live(ep, r.state)
            reports.append(report)
        return reports

    def _live(self, ep: EndpointConfig, st: m.SlotState) -> list[str]:
        """What every address presents for this slot's algorithm, and whether every
        nameserver's RRset matches it (read-only: one STARTTLS handshake per address)."""
        assert self.edges.prober is not None
        roles = {k.spki_sha256: k.role.value for k in st.keys}
        obs, now, lines = st.observation, self.clock.now(), []
        for presented in self.edges.prober.probe(ep, st.slot):
            if presented.error or not presented.chain:
                lines.append(f"{presented.address}: {presented.error or 'no certificate'}")
                continue
            spki = tlsa.spki_sha256_hex(presented.chain[0])
            which = roles.get(spki, "a key rollover does not know")
            verdicts = []
            for answer in obs.answers if obs else ():
                why = self.edges.verify(list(presented.chain), answer.records, ep.host, now)
                verdicts.append(f"{answer.server} {'matches' if why is None else 'NO MATCH'}")
            lines.append(f"{presented.address}: presents 3 1 1 {spki[:12]}… ({which} key); "
                         + ", ".join(verdicts))
        return lines

    # --- the loop for one slot ---------------------------------------------------------------

    def _advance(self, doc: dict[str, Any], ep: EndpointConfig, slot: SlotId) -> SlotReport:
        policy = policy_for(ep)
        st = self._slot_state(doc, slot)
        done: list[str] = []
        for _ in range(MAX_ACTIONS_PER_SLOT):
            try:
                obs = self.observe(ep)
            except ObserveError as exc:
                return SlotReport(slot, st, f"cannot observe: {exc}", None, None, done, str(exc))
            now = self.clock.now()
            result = m.step(st, obs, policy, now)
            st = result.state
            self._save(doc, st)
            if result.transition:
                log.info("%s: %s (%s)", slot, result.transition, result.reason)
            if result.action is None:
                if result.wake_at is not None and result.wake_at <= now:
                    continue  # the phase moved on without an action: look again at once
                log.info("%s: %s", slot, result.reason)
                blind = st.phase == m.Phase.NEW and not st.live_checked and st.last_error
                return SlotReport(slot, st, result.reason, None, result.wake_at, done,
                                  result.reason if blind else None)
            action = result.action
            log.info("%s: %s", slot, action.describe())
            try:
                event = self._execute(ep, st, action)
            except (ProviderError, ObserveError, StateError) as exc:
                # Nothing was recorded for the action: the next run starts it again.
                return SlotReport(
                    slot, st, f"{action.describe()} failed: {exc}", None, None, done, str(exc)
                )
            st = m.apply(st, event, policy, self.clock.now())
            self._save(doc, st)
            done.append(action.describe())
            if isinstance(event, m.CertAwaited) and event.problem:
                log.warning("%s: %s", slot, event.problem)
                return SlotReport(slot, st, f"certificate source: {event.problem}", None, None,
                                  done, event.problem)
            if isinstance(event, m.LiveUnseen):
                # Nothing else can progress for this slot until the look succeeds: say so
                # with a non-zero exit rather than wait quietly.
                reason = (f"blocked: {event.error}; can't see the key in service, so nothing "
                          "is published")
                log.warning("%s: %s", slot, reason)
                return SlotReport(slot, st, reason, None, st.retry_at, done, reason)
        return SlotReport(
            slot,
            st,
            "stopped: too many actions in one run (a loop?)",
            None,
            None,
            done,
            "too many actions",
        )

    # --- actions -----------------------------------------------------------------------------

    def _execute(self, ep: EndpointConfig, st: m.SlotState, action: m.Action) -> m.Event:
        if isinstance(action, m.StageKey):
            return self._stage_key(action)
        if isinstance(action, m.Publish):
            return self._publish(ep, action)
        if isinstance(action, m.OrderCert):
            return self._order(ep, st, action)
        if isinstance(action, m.InstallCert):
            return self._install(ep, st, action)
        if isinstance(action, m.ProbeLive):
            return self._probe(ep, st, action)
        if isinstance(action, m.Rollback):
            return self._rollback(ep, st)
        if isinstance(action, m.InspectLive):
            return self._inspect_live(ep, st)
        if isinstance(action, m.TakeCert):
            return self._take(ep, st, action)
        if isinstance(action, m.RefreshAri):
            return self._refresh_ari(ep, st)
        if isinstance(action, m.DropKey):
            if ep.policy.archive_keys and self.edges.store.has_key(action.key_id):
                where = self.edges.store.archive_key(action.key_id)
                log.info("%s: archived retired key %s as %s", st.slot, action.key_id, where)
            else:
                self.edges.store.delete_key(action.key_id)
            return m.KeyDropped(self.clock.now(), action.key_id)
        raise TypeError(f"unknown action {action!r}")  # pragma: no cover

    def _stage_key(self, action: m.StageKey) -> m.Event:
        store = self.edges.store
        if store.has_key(action.key_id):  # a crashed earlier attempt: same id, same key
            pem = store.read_key(action.key_id)
        else:
            key = tlsa.generate_private_key(action.slot.algorithm)
            pem = tlsa.private_key_pem(key)
            store.write_key(action.key_id, pem)
        private = serialization.load_pem_private_key(pem, password=None)
        spki = tlsa.tlsa_record(private, 3, 1, 1).data.hex()
        return m.KeyStaged(self.clock.now(), action.key_id, action.role, spki)

    def _publish(self, ep: EndpointConfig, action: m.Publish) -> m.Event:
        provider = self.edges.providers[ep.provider]
        zone = self.zone_of(ep)
        current = provider.read(zone, action.owner, "TLSA")
        change = Change(
            zone,
            action.owner,
            "TLSA",
            action.ttl,
            add=action.add,
            remove=action.remove,
            expect=current.rdatas,
        )
        provider.apply(change)
        provider.wait_applied(60.0)
        return m.Published(self.clock.now())

    def _order(self, ep: EndpointConfig, st: m.SlotState, action: m.OrderCert) -> m.Event:
        source = self.edges.certs.get(str(ep.endpoint))
        if source is None:
            return m.Failed(self.clock.now(), "no certificate source configured")
        key_pem = self.edges.store.read_key(action.key_id)
        try:
            issued = source.order(ep, st.slot, key_pem)
        except (AcmeError, ProviderError, CertSourceError) as exc:
            return m.Failed(self.clock.now(), f"order for key {action.key_id}: {exc}")
        leaf = x509.load_pem_x509_certificate(issued.chain_pem)
        key = st.key_by_id(action.key_id)
        assert key is not None
        if tlsa.tlsa_record(leaf, 3, 1, 1).data.hex() != key.spki_sha256:
            return m.Failed(self.clock.now(), "the CA returned a certificate for another key")
        chain_pem, issuers = issued.chain_pem, tuple[str, ...]()
        if ep.scheme == Scheme.CURRENT_ISSUER:
            try:
                chain_pem, issuers = issuer_chain(issued.chain_pem, ep)
            except IssuerError as exc:
                return m.Failed(self.clock.now(), f"order for key {action.key_id}: {exc}")
        rel = f"certs/{st.slot.key.replace(':', '_')}-{issued.serial}.pem"
        self.edges.store.write_file(rel, chain_pem, 0o644)
        now = self.clock.now()
        return m.CertIssued(
            now,
            m.CertInfo(
                action.key_id,
                issued.serial,
                issued.not_after,
                now,
                rel,
                issued.renew_at,
                issued.ari_retry_after,
                issuers,
            ),
        )

    def _take(self, ep: EndpointConfig, st: m.SlotState, action: m.TakeCert) -> m.Event:
        """An external source's newest certificate, if rollover has not seen it: its key is
        copied into the state dir (the installer reads it there; the source's files are never
        written), the chain stored like an ordered one."""
        now = self.clock.now()
        source = self.edges.certs.get(str(ep.endpoint))
        latest = getattr(source, "latest", None)
        if source is None or not callable(latest):
            return m.CertAwaited(now, "the certificate source is not an external one")
        try:
            snap: ExternalCert = latest(st.slot)
        except NoCertYet as exc:
            log.info("%s: %s", st.slot, exc)
            return m.CertAwaited(now)
        except CertSourceError as exc:
            return m.CertAwaited(now, str(exc))
        seen = {c.serial for c in (st.installed, st.pending) if c is not None}
        if snap.serial in seen:
            return m.CertAwaited(now)
        known = next((k for k in st.keys if k.spki_sha256 == snap.spki_sha256), None)
        key_id = known.key_id if known else action.key_id
        store = self.edges.store
        if not store.has_key(key_id):
            store.write_key(key_id, snap.key_pem)
        elif store.read_key(key_id) != snap.key_pem and known is None:
            # a crashed take wrote this id for a key certbot has replaced since
            store.delete_key(key_id)
            store.write_key(key_id, snap.key_pem)
        chain_pem, issuers = snap.chain_pem, tuple[str, ...]()
        if ep.scheme == Scheme.CURRENT_ISSUER:
            try:
                chain_pem, issuers = issuer_chain(snap.chain_pem, ep)
            except IssuerError as exc:
                return m.CertAwaited(now, f"{st.slot}: {exc}")
        rel = f"certs/{st.slot.key.replace(':', '_')}-{snap.serial}.pem"
        store.write_file(rel, chain_pem, 0o644)
        log.info("%s: took certificate %s (key %s%s)", st.slot, snap.serial, key_id,
                 "" if known else ", new")
        return m.CertTaken(now, key_id, snap.spki_sha256,
                           m.CertInfo(key_id, snap.serial, snap.not_after, now, rel,
                                      issuers=issuers))

    def _load_chain(self, rel: str) -> list[x509.Certificate]:
        data = self.edges.store.read_file(rel)
        if data is None:
            raise StateError(f"certificate file {rel} is missing from the state directory")
        return x509.load_pem_x509_certificates(data)

    def _latest(self, ep: EndpointConfig, st: m.SlotState) -> Observation:
        """The observation the machine just decided on (taken this iteration, milliseconds
        ago), so an action is judged on exactly what its guard saw; a fresh one otherwise."""
        return st.observation if st.observation is not None else self.observe(ep)

    def preflight(self, ep: EndpointConfig, chain: list[x509.Certificate],
                  obs: Observation) -> str | None:
        """Safety rule 2: the chain must match the RRset each authoritative server serves."""
        now = self.clock.now()
        if not obs.answers:
            return "pre-flight: no authoritative server found"
        for answer in obs.answers:
            if not answer.ok:
                return f"pre-flight: {answer.label}: {answer.error or answer.rcode}"
            why = self.edges.verify(chain, answer.records, ep.host, now)
            if why is not None:
                return f"pre-flight: {answer.label}: {why}"
        return None

    def _install(self, ep: EndpointConfig, st: m.SlotState, action: m.InstallCert) -> m.Event:
        installer = self.edges.installers.get(str(ep.endpoint))
        if installer is None:
            return m.Failed(self.clock.now(), "no installer configured for this endpoint")
        chain = self._load_chain(action.chain_file)
        refusal = self.preflight(ep, chain, self._latest(ep, st))
        if refusal is not None:
            return m.Failed(self.clock.now(), refusal)
        data = self.edges.store.read_file(action.chain_file)
        assert data is not None
        try:
            installer.install(st.slot, self.edges.store.read_key(action.key_id), data)
        except InstallError as exc:
            return m.Failed(self.clock.now(), f"install: {exc}")
        return m.Installed(self.clock.now())

    def _probe(self, ep: EndpointConfig, st: m.SlotState, action: m.ProbeLive) -> m.Event:
        if self.edges.prober is None:
            return m.ProbeOk(self.clock.now())  # nothing to probe with: installer-only setups
        key = st.key_by_id(action.key_id)
        assert key is not None
        obs = self._latest(ep, st)
        records = obs.agreed()
        if records is None:
            return m.Failed(
                self.clock.now(), f"post-flight: nameservers disagree: {obs.disagreement()}"
            )
        now = self.clock.now()
        seen = self.edges.prober.probe(ep, st.slot)
        if not seen:
            return m.Failed(now, f"post-flight: no address to probe for {ep.host}")
        for presented in seen:
            if presented.error or not presented.chain:
                return m.Failed(
                    now, f"post-flight: {presented.address}: {presented.error or 'no certificate'}"
                )
            leaf_spki = tlsa.tlsa_record(presented.chain[0], 3, 1, 1).data.hex()
            if leaf_spki != key.spki_sha256:
                return m.Failed(
                    now,
                    f"post-flight: {presented.address} presents another key "
                    f"(3 1 1 {leaf_spki[:16]}...), not {action.key_id}",
                )
            why = self.edges.verify(list(presented.chain), records, ep.host, now)
            if why is not None:
                return m.Failed(now, f"post-flight: {presented.address}: {why}")
        return m.ProbeOk(now)

    def _refresh_ari(self, ep: EndpointConfig, st: m.SlotState) -> m.Event:
        source = self.edges.certs.get(str(ep.endpoint))
        now = self.clock.now()
        data = self.edges.store.read_file(st.installed.chain_file) if st.installed else None
        if source is None or data is None:
            return m.AriChecked(now, None, None)
        try:
            renew_at, retry_after = source.renewal(data)
        except AcmeError as exc:
            log.info("%s: ARI: %s; asking again in 6 h", st.slot, exc)
            return m.AriChecked(now, None, now + timedelta(hours=6))
        return m.AriChecked(now, renew_at, retry_after)

    def _inspect_live(self, ep: EndpointConfig, st: m.SlotState) -> m.Event:
        """Bootstrap: the keys the server presents now, so their 3 1 1 go out with ours and
        the certificate in service keeps matching until ours replaces it. A look that fails for
        a reason other than "nothing of this algorithm is served there" blocks publishing."""
        now = self.clock.now()
        if ep.bootstrap == "no-certificate":
            return m.LiveSeen(now)  # the operator says nothing is in service
        if self.edges.prober is None:
            return m.LiveUnseen(now, "no prober to look at the server with")
        seen: set[str] = set()
        blind: list[str] = []
        for presented in self.edges.prober.probe(ep, st.slot):
            if presented.chain:
                seen.add(f"3 1 1 {tlsa.spki_sha256_hex(presented.chain[0])}")
            elif presented.nothing_served:
                log.info("%s: %s:%d presents nothing for %s: %s", st.slot, presented.address,
                         ep.port, st.slot.algorithm.value, presented.error)
            else:
                blind.append(f"{_hostport(presented.address, ep.port)}: "
                             f"{presented.error or 'no certificate'}")
        if blind:
            return m.LiveUnseen(self.clock.now(), "; ".join(blind))
        return m.LiveSeen(self.clock.now(), frozenset(seen))

    def _rollback(self, ep: EndpointConfig, st: m.SlotState) -> m.Event:
        installer = self.edges.installers.get(str(ep.endpoint))
        if installer is not None:
            try:
                installer.rollback(st.slot)
            except InstallError as exc:
                return m.Failed(self.clock.now(), f"rollback: {exc}")
        return m.RolledBack(self.clock.now())

    # --- dry run -----------------------------------------------------------------------------

    def _where(self, ep: EndpointConfig, action: m.Action) -> str:
        """Where an action would go, from the configuration alone (plan builds no edges)."""
        if isinstance(action, m.OrderCert) and ep.certificate is not None:
            return f" {ep.certificate.describe()}"
        if isinstance(action, m.InstallCert):
            ic = self.config.installer_for(ep)
            if ic is not None:
                return f" {ic.describe(action.slot)}"
        return ""

    def _simulate(self, ep: EndpointConfig, st: m.SlotState, obs: Observation) -> SlotReport:
        """Step with imagined outcomes for the actions whose outcome is predictable (key
        generation, publishing), so `plan` shows the whole sequence a run would start. The
        report carries the real state (with the fresh observation), not the imagined one."""
        policy = policy_for(ep)
        now = self.clock.now()
        would: list[str] = []
        shown: m.SlotState | None = None
        for n in range(8):
            r = m.step(st, obs, policy, now)
            st = r.state
            shown = shown or st
            if r.action is None:
                if r.wake_at is not None and r.wake_at <= now and n < 7:
                    continue
                return SlotReport(st.slot, shown, r.reason, None, r.wake_at, would)
            would.append(f"would {r.action.describe()}{self._where(ep, r.action)} ({r.reason})")
            if isinstance(r.action, m.StageKey):
                imagined = f"{n + 1:x}" * 64  # stands for a key not generated yet
                st = m.apply(st, m.KeyStaged(now, r.action.key_id, r.action.role,
                                             imagined[:64]), policy, now)
            elif isinstance(r.action, m.InspectLive):
                st = m.apply(st, m.LiveSeen(now), policy, now)
            elif isinstance(r.action, m.Publish):
                st = m.apply(st, m.Published(now), policy, now)
                return SlotReport(st.slot, shown, "then wait until every server serves the "
                                  "records for 2 x TTL", None, None, would)
            else:
                return SlotReport(st.slot, shown, r.reason, r.action.describe(), None, would)
        return SlotReport(st.slot, shown or st, "more steps follow", None, None, would)
