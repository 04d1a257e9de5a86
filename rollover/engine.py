"""The loop: load state, observe, step, act, persist after every action, until the machine waits.

The engine owns no policy: `rollover.machine` decides, the engine carries out one action at a
time through the edges (providers, observer, key store, certificate source, installer, prober)
and feeds the outcome back. State is saved after every step and every action, under the lock,
so `kill -9` at any instant leaves a state from which the next run resumes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from rollover import machine as m
from rollover import tlsa
from rollover.config import Config, EndpointConfig
from rollover.edges import (  # re-exported: plugins import the edge types from here too
    CertSource,
    Edges,
    Installer,
    IssuedCert,
    ObserverEdge,
    Prober,
    Verifier,
)
from rollover.errors import ObserveError, ProviderError, StateError
from rollover.executors import DRY, REAL, Executor, Unknowable
from rollover.model import Observation, SlotId
from rollover.report import SlotReport

__all__ = ["CertSource", "Edges", "Engine", "Installer", "IssuedCert", "ObserverEdge", "Prober",
           "Verifier", "policy_for"]

log = logging.getLogger("rollover.engine")

MAX_ACTIONS_PER_SLOT = 64  # a run that wants more than this is looping: stop and say so


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
        certificates=endpoint.certificate is not None,
        inspect_live=endpoint.bootstrap != "no-certificate",
        scheme=endpoint.scheme.value,
        issuer_pins=frozenset(endpoint.issuer_pins),
        max_records=endpoint.max_records,
        config_id=config_digest,
    )


class Engine:
    def __init__(self, config: Config, edges: Edges) -> None:
        self.config = config
        self.edges = edges
        self.clock = edges.clock
        self.config_id = config_id(config)
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
            for _, slot in self.slots():
                st = self._slot_state(doc, slot)
                if resume and st.stopped is not None:
                    log.info("%s: resumed by the operator (was stopped: %s)", slot, st.stopped)
                    st = m.resume(st)
                    self._save(doc, st)
                if roll and not st.roll_requested:
                    self._save(doc, m.request_roll(st))
            deadline = self.clock.now() + timedelta(seconds=max_wait)
            while True:
                reports = [self._advance(doc, ep, slot, REAL) for ep, slot in self.slots()]
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
        """What `run` would do now, per slot: the same loop with executors that record instead
        of act (rollover.executors.DRY). Reads state, DNS and the live servers; writes nothing."""
        doc = self._load()
        reports = []
        for ep, slot in self.slots():
            stored = self._slot_state(doc, slot)  # keys a dry run "staged" have no file
            report = self._advance(doc, ep, slot, DRY, persist=False)
            report.error = report.error or self._key_problem(stored)
            reports.append(report)
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
            r = m.step(st, obs, policy_for(ep, self.config_id), self.clock.now())
            report = SlotReport(slot, r.state, r.reason,
                                r.action.describe() if r.action else None, r.wake_at)
            if observe and self.edges.prober is not None and ep.certificate is not None:
                report.live = self._live(ep, r.state)
            report.error = report.error or self._key_problem(st)
            if r.state.stopped is not None:
                report.error = report.error or r.reason
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

    # --- the loop for one slot ---------------------------------------------------------------

    def _advance(self, doc: dict[str, Any], ep: EndpointConfig, slot: SlotId,
                 executors: dict[type[m.Action], Executor], *,
                 persist: bool = True) -> SlotReport:
        """Observe, step, execute, apply, persist: until the machine waits. `plan` runs this
        very loop with dry executors and `persist=False`."""
        policy = policy_for(ep, self.config_id)
        st = self._slot_state(doc, slot)
        done: list[str] = []
        would = "" if persist else "would "

        def save(state: m.SlotState) -> None:
            if persist:
                self._save(doc, state)

        for _ in range(MAX_ACTIONS_PER_SLOT):
            try:
                obs = self.observe(ep)
            except ObserveError as exc:
                return SlotReport(slot, st, f"cannot observe: {exc}", None, None, done, str(exc))
            now = self.clock.now()
            result = m.step(st, obs, policy, now)
            st = result.state
            save(st)
            if result.transition:
                log.info("%s: %s (%s)", slot, result.transition, result.reason)
            if result.action is None:
                if result.wake_at is not None and result.wake_at <= now:
                    continue  # the phase moved on without an action: look again at once
                log.info("%s: %s", slot, result.reason)
                blind = st.phase == m.Phase.NEW and not st.live_checked and st.last_error
                return SlotReport(slot, st, result.reason, None, result.wake_at, done,
                                  result.reason if blind or st.stopped else None)
            action = result.action
            log.info("%s: %s%s", slot, would, action.describe())
            try:
                event = executors[type(action)](self, ep, st, action)
            except Unknowable as stop:
                done.append(f"would {action.describe()} {stop}")
                return SlotReport(slot, st, f"then: {result.reason}", None, None, done)
            except ProviderError as exc:
                if exc.permanent and persist:
                    # Retrying cannot heal this: stop the slot (status says why) rather than
                    # try again on every run.
                    st = m.apply(st, m.Stopped(self.clock.now(), str(exc)), policy,
                                 self.clock.now())
                    save(st)
                    log.error("%s: stopped: %s", slot, exc)
                return SlotReport(
                    slot, st, f"{would}{action.describe()} failed: {exc}", None, None, done,
                    str(exc))
            except (ObserveError, StateError) as exc:
                # Nothing was recorded for the action: the next run starts it again.
                return SlotReport(
                    slot, st, f"{action.describe()} failed: {exc}", None, None, done, str(exc)
                )
            st = m.apply(st, event, policy, self.clock.now())
            save(st)
            done.append(would + action.describe())
            if not persist and isinstance(event, m.Published):
                return SlotReport(slot, st, "then: every server must serve the records, "
                                  f"continuously, for {m.required_wait(st, policy)[1]}",
                                  None, None, done)
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
