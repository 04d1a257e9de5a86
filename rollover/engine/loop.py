"""The loop: load state, observe, step, act, persist, until the machine waits.

The engine owns no policy: `rollover.core.machine` decides, the engine carries out the actions
through the edges (providers, observer, key store, certificate source, installer, prober) and
feeds the outcomes back. It works in rounds over every slot at once:

1. observe every owner that needs a look in one wave (`Observer.observe_many`);
2. step each slot on it; actions that change nothing the observation saw (staging a key,
   looking at the live server, an order, ARI) are executed at once and the slot steps again on
   the same observation; publishes are collected;
3. save the state once (the batch of actions just executed), then apply the publishes of
   every slot together (`apply_many`: one RFC 2136 message carries many owners), save again;
4. slots that acted, or whose phase moved on, get a fresh observation in the next round.

State is saved after every batch, under the lock; every action is idempotent on a retry (key
ids are derived from the state, a publish already in effect sends nothing), so `kill -9` at any
instant leaves a state from which the next run resumes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rollover.config import registry
from rollover.config.load import Config, EndpointConfig
from rollover.core import machine as m
from rollover.dane import tlsa
from rollover.edges import spool
from rollover.edges.observe import Want
from rollover.edges.protocols import (  # re-exported: plugins import the edge types from here too
    CertSource,
    Edges,
    Installer,
    IssuedCert,
    ObserverEdge,
    Prober,
    Verifier,
)
from rollover.engine.executors import (
    DRY,
    DRY_BATCH,
    REAL,
    REAL_BATCH,
    BatchExecutor,
    Executor,
    Unknowable,
)
from rollover.errors import ObserveError, ProviderError, StateError
from rollover.model import Observation, SlotId
from rollover.monitor.report import SlotReport
from rollover.state.store import StateConflict

__all__ = ["CertSource", "Edges", "Engine", "Installer", "IssuedCert", "ObserverEdge", "Prober",
           "Verifier", "policy_for"]

log = logging.getLogger("rollover.engine.loop")

MAX_ACTIONS_PER_SLOT = 64  # a run that wants more than this is looping: stop and say so
MAX_CONFLICTS = 3  # lost compare-and-swaps on a shared store before the run gives up
# Outcomes after which the observation the machine decided on still describes the world: the
# slot steps on with it in the same round. Any other outcome waits for the next round's look.
KEEPS_OBSERVATION: tuple[type[m.Event], ...] = (m.KeyStaged, m.LiveSeen, m.CertIssued,
                                                m.AriChecked, m.KeyDropped)


@dataclass
class _Slot:
    """One slot during a run: its endpoint, state, what was done, and its report once final."""

    ep: EndpointConfig
    slot: SlotId
    st: m.SlotState
    done: list[str] = field(default_factory=list)
    actions: int = 0
    report: SlotReport | None = None
    dirty: bool = False

    def finish(self, reason: str, action: str | None = None, wake_at: datetime | None = None,
               error: str | None = None) -> None:
        self.report = SlotReport(self.slot, self.st, reason, action, wake_at, self.done, error)


def config_id(config: Config) -> str:
    """A digest of the configuration file: a slot stopped by an error that cannot heal resumes
    when the operator changes the file."""
    try:
        data = config.path.read_bytes()
    except OSError:
        return ""
    return hashlib.sha256(data).hexdigest()[:16]


def policy_for(endpoint: EndpointConfig, config_digest: str = "") -> m.Policy:
    p = endpoint.policy
    return m.Policy(
        ttl=endpoint.ttl,
        key_lifetime=p.key_lifetime,
        renew_before=p.renew_before,
        retire_grace=p.retire_grace,
        min_wait=p.min_wait,
        retry_base=p.retry_backoff,
        certificates=endpoint.certificate is not None,
        inspect_live=endpoint.bootstrap != "no-certificate",
        scheme=endpoint.scheme.value,
        issuer_pins=frozenset(endpoint.issuer_pins),
        max_records=endpoint.max_records,
        config_id=config_digest,
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


class Engine:
    def __init__(self, config: Config, edges: Edges) -> None:
        self.config = config
        self.edges = edges
        self.clock = edges.clock
        self.config_id = config_id(config)
        # stamps observations with the monotonic clock they were read on (see machine._absorb)
        epoch = getattr(self.clock, "epoch", None)
        self.run_id = (epoch() if epoch is not None else "") or secrets.token_hex(6)
        self._zones: dict[str, str] = {}
        self._zone_errors: dict[str, ObserveError] = {}

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
        if owner in self._zone_errors:
            raise self._zone_errors[owner]
        if owner not in self._zones:
            self._zones[owner] = self.edges.observer.find_zone(owner)
        return self._zones[owner]

    def _find_zones(self, endpoints: Sequence[EndpointConfig]) -> None:
        """The zones of all endpoints without a configured zone, in one wave."""
        owners = [ep.endpoint.owner for ep in endpoints if not ep.zone
                  and ep.endpoint.owner not in self._zones
                  and ep.endpoint.owner not in self._zone_errors]
        find_zones = getattr(self.edges.observer, "find_zones", None)
        if not owners or find_zones is None:
            return
        for owner, zone in find_zones(owners).items():
            if isinstance(zone, ObserveError):
                self._zone_errors[owner] = zone
            else:
                self._zones[owner] = zone

    def observe_all(self, endpoints: Sequence[EndpointConfig]
                    ) -> dict[str, Observation | ObserveError]:
        """One observation round for all `endpoints`, by owner: one wave when the observer
        can (`observe_many`), else one owner after the other."""
        self._find_zones(endpoints)
        out: dict[str, Observation | ObserveError] = {}
        wants: list[Want] = []
        keys: list[str] = []
        for ep in endpoints:
            key = _owner_key(ep)
            if key in out or key in keys:
                continue
            try:
                wants.append(Want(ep.endpoint.owner, "TLSA", self.zone_of(ep),
                                  tuple(ep.extra_nameservers)))
                keys.append(key)
            except ObserveError as exc:
                out[key] = exc
        many = getattr(self.edges.observer, "observe_many", None)
        if many is not None:
            results: list[Observation | ObserveError] = many(wants)
        else:
            results = []
            for w in wants:
                try:
                    results.append(self.edges.observer.observe(w.owner, w.rtype, w.zone,
                                                               w.extra))
                except ObserveError as exc:
                    results.append(exc)
        mono = self.clock.monotonic()
        stamped = [replace(r, mono=mono, run=self.run_id) if isinstance(r, Observation) else r
                   for r in results]
        out.update(zip(keys, stamped, strict=True))
        return out

    def observe(self, endpoint: EndpointConfig) -> Observation:
        obs = self.edges.observer.observe(
            endpoint.endpoint.owner,
            "TLSA",
            self.zone_of(endpoint),
            tuple(endpoint.extra_nameservers),
        )
        return replace(obs, mono=self.clock.monotonic(), run=self.run_id)

    # --- public entry points -----------------------------------------------------------------

    def slots(self) -> Iterator[tuple[EndpointConfig, SlotId]]:
        for ep in self.config.endpoints:
            for slot in ep.slots():
                yield ep, slot

    def run(
        self,
        *,
        roll: bool = False,
        resume: bool = False,
        wait: bool = False,
        max_wait: float = 86400.0,
        progress: Callable[[list[SlotReport], datetime], None] | None = None,
    ) -> list[SlotReport]:
        """Advance every slot as far as the rules allow. With `wait`, keep going until no slot
        has anything scheduled (or `max_wait` seconds pass)."""
        with self.edges.store.lock():
            doc = self._load()
            self._check_providers()
            changed = False  # the operator's asks, all in one write
            for _, slot in self.slots():
                st = new = self._slot_state(doc, slot)
                if resume and st.stopped is not None:
                    log.info("%s: resumed by the operator (was stopped: %s)", slot, st.stopped)
                    new = m.resume(new)
                if roll and not new.roll_requested:
                    new = m.request_roll(new)
                if new is not st:
                    doc["slots"][slot.key] = m.slot_to_dict(new)
                    changed = True
            if changed:
                self.edges.store.save(doc)
            deadline = self.clock.now() + timedelta(seconds=max_wait)
            conflicts = 0
            while True:
                self._pick_up_spool(doc)
                try:
                    reports = self._rounds(doc, REAL, REAL_BATCH, persist=True)
                except StateConflict:
                    # A shared store was written by another host: what we decided on is
                    # stale. Re-read and plan again (every action is idempotent on a retry).
                    conflicts += 1
                    if conflicts > MAX_CONFLICTS:
                        raise
                    log.warning("the shared state changed under us; re-reading (%d)", conflicts)
                    doc = self._load()
                    continue
                now = self.clock.now()
                wakes = [r.wake_at for r in reports if r.wake_at is not None]
                if not wait or not wakes or any(r.error for r in reports):
                    return self._mark_success(doc, reports, now)
                wake = min(wakes)
                if wake > deadline:
                    return self._mark_success(doc, reports, now)
                if progress is not None:
                    progress(reports, wake)
                self.clock.sleep(max(0.05, (wake - now).total_seconds()))

    def _mark_success(self, doc: dict[str, Any], reports: list[SlotReport], now: datetime
                      ) -> list[SlotReport]:
        """The run ended: each slot that ends it without error (none reported, none recorded,
        not stopped) notes when, for `status` (rollover_slot_last_success_timestamp_seconds)."""
        changed = False
        for r in reports:
            raw = doc["slots"].get(r.slot.key)
            if raw is None or r.error or r.state.last_error or r.state.stopped:
                continue
            doc["slots"][r.slot.key] = m.slot_to_dict(
                replace(m.slot_from_dict(raw), last_success=now))
            r.state = replace(r.state, last_success=now)
            changed = True
        if changed:
            try:
                self.edges.store.save(doc)
            except StateConflict:  # only a note for monitoring: the next run writes it
                log.warning("the shared state changed under us; last success not recorded")
        return reports

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
        """Read one RRset per provider and zone before changing anything, so bad credentials
        fail the run before a single key is generated or state written."""
        self._find_zones(self.config.endpoints)
        checked: set[tuple[str, str]] = set()
        for ep in self.config.endpoints:
            try:
                zone = self.zone_of(ep)
            except ObserveError:
                continue  # reported per slot by the round
            if (ep.provider, zone) in checked:
                continue
            checked.add((ep.provider, zone))
            self.edges.providers[ep.provider].read(zone, ep.endpoint.owner, "TLSA")

    def plan(self) -> list[SlotReport]:
        """What `run` would do now, per slot: the same rounds with executors that record
        instead of act (rollover.engine.executors.DRY). Reads state, DNS and the live servers;
        writes
        nothing."""
        doc = self._load()
        reports = self._rounds(doc, DRY, DRY_BATCH, persist=False)
        for report in reports:
            stored = self._slot_state(doc, report.slot)  # keys a dry run "staged" have no file
            report.error = report.error or self._key_problem(stored)
        return reports

    def status(self, observe: bool = True) -> list[SlotReport]:
        """The stored state of every slot, with a fresh observation (one wave) when
        `observe`."""
        doc = self._load()
        items = list(self.slots())
        seen = self.observe_all([ep for ep, _ in items]) if observe else {}
        reports = []
        for ep, slot in items:
            st = self._slot_state(doc, slot)
            obs: Observation | None = None
            if observe:
                got = seen[_owner_key(ep)]
                if isinstance(got, ObserveError):
                    reports.append(SlotReport(slot, st, f"cannot observe: {got}", error=str(got)))
                    continue
                obs = got
            r = m.step(st, obs, policy_for(ep, self.config_id), self.clock.now())
            report = SlotReport(slot, r.state, r.reason,
                                r.action.describe() if r.action else None, r.wake_at)
            if observe and self.edges.prober is not None and ep.certificate is not None:
                report.live = self._live(ep, r.state)
            if r.state.stopped is not None:
                report.error = report.error or r.reason
            report.error = report.error or self._key_problem(st)
            reports.append(report)
        return reports

    def _key_problem(self, st: m.SlotState) -> str | None:
        """A current or next key the state names whose file is missing, empty or loose: a
        problem of the slot that plan and status show (a previous key may be gone already:
        it is deleted just before the state says so)."""
        for k in st.keys:
            if k.role in (m.KeyRole.CURRENT, m.KeyRole.NEXT):
                try:
                    self.edges.store.read_key(k.key_id)
                except StateError as exc:
                    return f"{k.role.value} key: {exc}"
        return None

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

    # --- the rounds ----------------------------------------------------------------------------

    def _rounds(self, doc: dict[str, Any], executors: dict[type[m.Action], Executor],
                batches: dict[type[m.Action], BatchExecutor], *,
                persist: bool) -> list[SlotReport]:
        """Observe, step, execute, apply, persist, round after round, until every slot waits.
        `plan` runs these very rounds with dry executors and `persist=False`."""
        slots = [_Slot(ep, slot, self._slot_state(doc, slot)) for ep, slot in self.slots()]
        active = slots
        while active:
            seen = self.observe_all([s.ep for s in active])
            again: list[_Slot] = []
            queued: dict[type[m.Action], list[tuple[_Slot, m.Action, m.StepResult]]] = {}
            for s in active:
                got = seen[_owner_key(s.ep)]
                if isinstance(got, ObserveError):
                    s.finish(f"cannot observe: {got}", error=str(got))
                    continue
                step = self._steps(s, got, executors, batches, persist)
                if step is None:
                    again.append(s)
                elif step.action is not None and s.report is None:
                    queued.setdefault(type(step.action), []).append((s, step.action, step))
            self._persist(doc, slots, persist)
            for kind, items in queued.items():
                again.extend(self._batch(batches[kind], items, persist))
            if queued:
                self._persist(doc, slots, persist)
            active = [s for s in again if s.report is None]
        out = []
        for s in slots:
            assert s.report is not None
            out.append(s.report)
        return out

    def _persist(self, doc: dict[str, Any], slots: list[_Slot], persist: bool) -> None:
        """One atomic write for every slot changed since the last one (nothing when dry)."""
        changed = [s for s in slots if s.dirty]
        if not persist or not changed:
            return
        for s in changed:
            doc["slots"][s.slot.key] = m.slot_to_dict(s.st)
            s.dirty = False
        self.edges.store.save(doc)

    def _steps(self, s: _Slot, obs: Observation, executors: dict[type[m.Action], Executor],
               batches: dict[type[m.Action], BatchExecutor], persist: bool
               ) -> m.StepResult | None:
        """Step one slot on this round's observation, executing at once the actions whose
        outcome leaves the observation valid. Returns the step whose action waits for the
        batch, or None when the slot needs a fresh observation; else the slot is finished
        (`s.report`)."""
        policy = policy_for(s.ep, self.config_id)
        would = "" if persist else "would "
        observation: Observation | None = obs
        while True:
            if s.actions >= MAX_ACTIONS_PER_SLOT:
                s.finish("stopped: too many actions in one run (a loop?)",
                         error="too many actions")
                return m.StepResult(s.st, None, None, "")
            now = self.clock.now()
            result = m.step(s.st, observation, policy, now)
            observation = None  # absorbed: further steps this round decide on the same look
            s.st, s.dirty = result.state, True
            if result.transition:
                log.info("%s: %s (%s)", s.slot, result.transition, result.reason)
            if result.action is None:
                if result.wake_at is not None and result.wake_at <= now:
                    s.actions += 1  # counts as a turn of the loop too: a loop is stopped
                    return None  # the phase moved on without an action: look again at once
                log.info("%s: %s", s.slot, result.reason)
                st = s.st
                blind = st.phase == m.Phase.NEW and not st.live_checked and st.last_error
                s.finish(result.reason, None, result.wake_at,
                         result.reason if blind or st.stopped else None)
                return result
            action = result.action
            s.actions += 1
            log.info("%s: %s%s", s.slot, would, action.describe())
            if type(action) in batches:
                return result
            try:
                event = executors[type(action)](self, s.ep, s.st, action)
            except Unknowable as stop:
                s.done.append(f"would {action.describe()} {stop}")
                s.finish(f"then: {result.reason}")
                return result
            except ProviderError as exc:
                self._provider_failed(s, action, exc, policy, persist)
                return result
            except (ObserveError, StateError) as exc:
                # Nothing was recorded for the action: the next run starts it again.
                s.finish(f"{action.describe()} failed: {exc}", error=str(exc))
                return result
            if not self._applied(s, action, event, policy, persist):
                return result
            if not isinstance(event, KEEPS_OBSERVATION):
                return None

    def _applied(self, s: _Slot, action: m.Action, event: m.Event, policy: m.Policy,
                 persist: bool) -> bool:
        """Record `event`; False when the slot is finished for this run."""
        s.st, s.dirty = m.apply(s.st, event, policy, self.clock.now()), True
        s.done.append(("" if persist else "would ") + action.describe())
        if not persist and isinstance(event, m.Published):
            s.finish("then: every server must serve the records, continuously, for "
                     f"{m.required_wait(s.st, policy)[1]}")
            return False
        if isinstance(event, m.CertAwaited) and event.problem:
            log.warning("%s: %s", s.slot, event.problem)
            s.finish(f"certificate source: {event.problem}", error=event.problem)
            return False
        if isinstance(event, m.LiveUnseen):
            # Nothing else can progress for this slot until the look succeeds: say so with a
            # non-zero exit rather than wait quietly.
            reason = (f"blocked: {event.error}; every key in service must be seen and "
                      "covered first, so nothing is published")
            log.warning("%s: %s", s.slot, reason)
            s.finish(reason, None, s.st.retry_at, reason)
            return False
        return True

    def _provider_failed(self, s: _Slot, action: m.Action, exc: ProviderError,
                         policy: m.Policy, persist: bool) -> None:
        if exc.permanent and persist:
            # Retrying cannot heal this: stop the slot (status says why) rather than try again
            # on every run.
            s.st = m.apply(s.st, m.Stopped(self.clock.now(), str(exc)), policy, self.clock.now())
            s.dirty = True
            log.error("%s: stopped: %s", s.slot, exc)
        # Otherwise nothing was recorded for the action: the next run starts it again.
        would = "" if persist else "would "
        s.finish(f"{would}{action.describe()} failed: {exc}", error=str(exc))

    def _batch(self, execute: BatchExecutor, items: list[tuple[_Slot, m.Action, m.StepResult]],
               persist: bool) -> list[_Slot]:
        """Execute one kind of action for many slots together; the slots to look at again."""
        outcomes = execute(self, [(s.ep, s.st, action) for s, action, _r in items])
        again = []
        for (s, action, result), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Unknowable):
                s.done.append(f"would {action.describe()} {outcome}")
                s.finish(f"then: {result.reason}")
            elif isinstance(outcome, ProviderError):
                self._provider_failed(s, action, outcome, policy_for(s.ep, self.config_id),
                                      persist)
            elif isinstance(outcome, Exception):  # ObserveError, StateError
                s.finish(f"{action.describe()} failed: {outcome}", error=str(outcome))
            elif self._applied(s, action, outcome, policy_for(s.ep, self.config_id), persist):
                again.append(s)
        return again


def _owner_key(ep: EndpointConfig) -> str:
    return ep.endpoint.owner + "|" + ",".join(ep.extra_nameservers)
