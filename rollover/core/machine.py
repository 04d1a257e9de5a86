"""The rollover state machine for one slot (endpoint x key algorithm), scheme current+next.

Pure: no I/O, no clock. `step(state, observation, policy, now)` decides the next action (or why
to wait, and until when); the engine executes the action and feeds its outcome back through
`apply(state, event, policy, now)`. The engine persists after every apply, so a crash at any point
resumes from the last persisted state; every action is idempotent for that reason.

Record states follow BIND's dnssec-policy / RFC 7583: hidden -> rumoured (submitted) ->
omnipresent (every authoritative address served it, continuously, for >= 2 x TTL) ->
unretentive (withdrawn, caches may hold it) -> hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from rollover.clock import format_time, parse_time
from rollover.core.schemes import SchemePolicy, scheme_for
from rollover.model import (
    KEY_LIFETIME,
    MIN_WAIT,
    RENEW_BEFORE,
    RETIRE_GRACE,
    Observation,
    SlotId,
    own_rdata,
)


class Phase(StrEnum):
    NEW = "new"  # keys being staged, nothing published yet
    PROPAGATING = "propagating"  # records submitted; waiting for every server for 2 x TTL
    READY = "ready"  # current + next omnipresent; no certificate installed yet
    ISSUING = "issuing"  # ordering a certificate for the target key
    INSTALLING = "installing"  # pre-flight, write files, reload
    VERIFYING = "verifying"  # post-flight probe of every address
    ROLLING_BACK = "rolling-back"  # post-flight failed: restoring the previous certificate
    ACTIVE = "active"  # serving the current key; next key published and omnipresent
    RETIRING = "retiring"  # new key in service; grace period before the old record goes


class RecordState(StrEnum):
    HIDDEN = "hidden"
    RUMOURED = "rumoured"
    OMNIPRESENT = "omnipresent"
    UNRETENTIVE = "unretentive"


class RecordKind(StrEnum):
    OWN = "own"  # 3 1 1 of one of our keys
    ADOPTED = "adopted"  # 3 1 1 of the key in service before we took over
    ISSUER = "issuer"  # 2 1 1 of an issuing CA (current+issuer)


class KeyRole(StrEnum):
    CURRENT = "current"
    NEXT = "next"
    PREVIOUS = "previous"  # replaced; its record stays until retired


class Move(StrEnum):
    """Names of the rows of TRANSITIONS: what `step` starts and what `apply` records."""

    STAGE_CURRENT = "stage-current"
    STAGE_NEXT = "stage-next"
    INSPECT_LIVE = "inspect-live"
    PUBLISH = "publish"
    REPUBLISH = "republish"
    OMNIPRESENT = "omnipresent"
    SETTLED = "settled"
    ORDER_FIRST = "order-first"
    RENEW = "renew"
    ROLL = "roll"
    ARI = "ari"
    DROP_KEY = "drop-key"
    PUBLISH_COVER = "publish-cover"
    INSTALL = "install"
    PROBE = "probe"
    ROLLBACK = "rollback"
    RETIRE = "retire"
    TAKE_CERT = "take-cert"
    # outcomes, recorded by `apply`
    KEY_STAGED = "key-staged"
    LIVE_SEEN = "live-seen"
    LOOK_FAILED = "look-failed"
    PUBLISHED = "published"
    ISSUED = "issued"
    ORDER_FAILED = "order-failed"
    INSTALLED = "installed"
    INSTALL_FAILED = "install-failed"
    VERIFIED = "verified"
    VERIFIED_SAME_KEY = "verified-same-key"
    VERIFIED_FIRST = "verified-first"
    PROBE_FAILED = "probe-failed"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"
    ARI_CHECKED = "ari-checked"
    KEY_DROPPED = "key-dropped"
    STOPPED = "stopped"
    CERT_TAKEN = "cert-taken"
    CERT_AWAITED = "cert-awaited"


@dataclass(frozen=True)
class Transition:
    name: Move
    source: tuple[Phase, ...]
    target: tuple[Phase, ...]
    guard: str  # step rows: when it is taken; outcome rows: what happened
    action: str  # step rows: what is done; outcome rows: what is recorded
    outcome: bool = False  # recorded by `apply` (the result of an action), not by `step`


_P = Phase
_ALL_PUBLISHING = (_P.NEW, _P.PROPAGATING, _P.READY, _P.ACTIVE, _P.RETIRING)

# The one transitions table. `step` and `apply` make no move that is not a row (a property test
# holds them to it); the README's diagram and `rollover transitions` are rendered from it.
TRANSITIONS: tuple[Transition, ...] = (
    Transition(Move.STAGE_CURRENT, (_P.NEW,), (_P.NEW,),
               "no current key yet", "generate the current key (0600, never published before)"),
    Transition(Move.STAGE_NEXT, (_P.NEW, _P.ACTIVE), (_P.NEW, _P.ACTIVE),
               "current+next: no next key yet; current+issuer: a key rollover is due",
               "generate the next key"),
    Transition(Move.INSPECT_LIVE, (_P.NEW,), (_P.NEW,),
               "keys staged, the key in service not looked at yet",
               "look at the key every address presents now, per algorithm"),
    Transition(Move.PUBLISH, (_P.NEW,), (_P.NEW,),
               "keys staged; the key in service seen on every address (or the operator says "
               "none is in service: bootstrap: no-certificate)",
               "publish the scheme's records (+ 3 1 1 of the key in service, so its certificate "
               "keeps matching until ours replaces it)"),
    Transition(Move.REPUBLISH, (_P.PROPAGATING, _P.READY, _P.ACTIVE),
               (_P.PROPAGATING, _P.READY, _P.ACTIVE),
               "every server agrees on an RRset that lacks a record we need",
               "submit our records again (idempotent)"),
    Transition(Move.OMNIPRESENT, (_P.PROPAGATING,), (_P.READY, _P.INSTALLING),
               "every address served the set, continuously, for >= 2 x TTL "
               "(and 2 x negative TTL when the name was new)",
               "mark records omnipresent (back to installing when a certificate waits for them)"),
    Transition(Move.SETTLED, (_P.PROPAGATING,), (_P.ACTIVE,),
               "as omnipresent, with a certificate already in service", "forget withdrawn records"),
    Transition(Move.ORDER_FIRST, (_P.READY, _P.ISSUING), (_P.ISSUING,),
               "records omnipresent, a certificate source is configured, none installed yet",
               "order a certificate for the current key"),
    Transition(Move.RENEW, (_P.ACTIVE, _P.ISSUING), (_P.ISSUING,),
               "renewal time reached (renew_before or the CA's ARI window)",
               "order a certificate for the same key (no TLSA change)"),
    Transition(Move.ROLL, (_P.ACTIVE, _P.ISSUING), (_P.ISSUING,),
               "key_lifetime reached or --roll, and the scheme says the new key's certificate "
               "would be covered", "order a certificate for the new key"),
    Transition(Move.ARI, (_P.ACTIVE,), (_P.ACTIVE,),
               "the CA's ARI Retry-After passed",
               "ask the CA's renewalInfo again (it may move the renewal window earlier)"),
    Transition(Move.DROP_KEY, (_P.ACTIVE,), (_P.ACTIVE,),
               "an old key's record is withdrawn everywhere",
               "delete (or archive) its private key"),
    Transition(Move.PUBLISH_COVER, (_P.INSTALLING, _P.ACTIVE), (_P.INSTALLING, _P.ACTIVE),
               "a record the scheme needs for the certificate (to be) in service is not "
               "published (current+issuer: its issuer's 2 1 1, e.g. after a CA change)",
               "publish it (and withdraw issuer records no chain uses); a new certificate "
               "waits until a covering record is omnipresent"),
    Transition(Move.INSTALL, (_P.INSTALLING,), (_P.INSTALLING,),
               "an omnipresent record served by every server now covers the new certificate",
               "pre-flight (the chain matches every server's RRset), write the files, reload"),
    Transition(Move.PROBE, (_P.VERIFYING,), (_P.VERIFYING,),
               "installed", "post-flight: STARTTLS to every address, per algorithm"),
    Transition(Move.ROLLBACK, (_P.ROLLING_BACK,), (_P.ROLLING_BACK,),
               "post-flight failed", "restore the previous files and reload"),
    Transition(Move.RETIRE, (_P.RETIRING,), (_P.RETIRING,),
               "retire_grace passed since the post-flight",
               "stage what the scheme wants next; withdraw the old key's record (and any "
               "adopted one); publish"),
    Transition(Move.TAKE_CERT, (_P.NEW, _P.ACTIVE, _P.ISSUING), (_P.NEW, _P.ACTIVE, _P.ISSUING),
               "the key is an external source's (certbot, files): no current key yet, a poll "
               "interval passed since the last look, or its hook said a new version waits",
               "read the source's newest certificate and key (never writing into its files)"),
    # --- outcomes ---
    Transition(Move.KEY_STAGED, (_P.NEW, _P.ACTIVE, _P.RETIRING),
               (_P.NEW, _P.ACTIVE, _P.RETIRING),
               "a key was generated", "keep its 3 1 1 (the key stays hidden)", True),
    Transition(Move.LIVE_SEEN, (_P.NEW,), (_P.NEW,),
               "every address was looked at", "adopt the keys presented", True),
    Transition(Move.LOOK_FAILED, (_P.NEW,), (_P.NEW,),
               "an address could not be looked at (timeout, no STARTTLS, ...)",
               "publish nothing; look again after a poll interval; run exits 2", True),
    Transition(Move.PUBLISHED, (*_ALL_PUBLISHING, _P.INSTALLING), (_P.PROPAGATING,),
               "the provider accepted the change", "records rumoured; the 2 x TTL clock waits "
               "for every server", True),
    Transition(Move.ISSUED, (_P.ISSUING,), (_P.INSTALLING,),
               "the certificate source delivered a certificate for the key", "keep it staged",
               True),
    Transition(Move.ORDER_FAILED, (_P.ISSUING,), (_P.ISSUING,),
               "the certificate source failed", "retry later with backoff", True),
    Transition(Move.INSTALLED, (_P.INSTALLING,), (_P.VERIFYING,),
               "pre-flight passed, files written, reloaded", "post-flight next", True),
    Transition(Move.INSTALL_FAILED, (_P.INSTALLING,), (_P.INSTALLING,),
               "pre-flight or reload failed", "the previous certificate stays (the installer "
               "restored it); keep the new one and retry after backoff", True),
    Transition(Move.VERIFIED, (_P.VERIFYING,), (_P.RETIRING,),
               "every address presents the new key's chain and it matches (post-flight)",
               "the new key becomes current; the old record goes after retire_grace", True),
    Transition(Move.VERIFIED_SAME_KEY, (_P.VERIFYING,), (_P.ACTIVE,),
               "post-flight passed after a same-key renewal (or a first install with nothing "
               "adopted)", "none", True),
    Transition(Move.VERIFIED_FIRST, (_P.VERIFYING,), (_P.RETIRING,),
               "post-flight passed after the first install; the key in service before is "
               "still published", "retire its record after retire_grace", True),
    Transition(Move.PROBE_FAILED, (_P.VERIFYING,), (_P.ROLLING_BACK,),
               "an address presents a chain that does not match", "restore the previous files",
               True),
    Transition(Move.ROLLED_BACK, (_P.ROLLING_BACK,), (_P.READY, _P.ACTIVE),
               "the previous certificate is back", "keep the old record; retry later", True),
    Transition(Move.ROLLBACK_FAILED, (_P.ROLLING_BACK,), (_P.ROLLING_BACK,),
               "the rollback failed", "retry it after backoff", True),
    Transition(Move.ARI_CHECKED, (_P.ACTIVE,), (_P.ACTIVE,),
               "the CA answered (or not)", "keep its renewal window and Retry-After", True),
    Transition(Move.KEY_DROPPED, (_P.ACTIVE,), (_P.ACTIVE,),
               "the old private key is gone (or archived)", "forget it", True),
    Transition(Move.STOPPED, tuple(Phase), tuple(Phase),
               "an error retrying cannot heal (bad TSIG key, no authority for the zone, an ACME "
               "account or profile the CA refuses)", "stop the slot where it is; run exits 2 "
               "and status says why until the configuration changes or `run --resume`", True),
    Transition(Move.CERT_TAKEN, (_P.NEW, _P.ACTIVE, _P.ISSUING), (_P.NEW, _P.INSTALLING),
               "the external source holds a certificate rollover has not seen",
               "keep its key (a copy in the state dir) and the certificate staged; a key no "
               "omnipresent record covers waits until its 3 1 1 is omnipresent (publish-cover)",
               True),
    Transition(Move.CERT_AWAITED, (_P.NEW, _P.ACTIVE, _P.ISSUING),
               (_P.NEW, _P.ACTIVE, _P.ISSUING),
               "the external source holds nothing new (certbot has not renewed yet) or is "
               "unusable now", "look again after a poll interval or when its hook says so; no "
               "backoff", True),
)
TRANSITION_BY_NAME = {t.name: t for t in TRANSITIONS}


@dataclass(frozen=True)
class Policy:
    """What the machine needs of the configuration, in seconds."""

    ttl: int
    key_lifetime: int = KEY_LIFETIME
    renew_before: int = RENEW_BEFORE
    retire_grace: int = RETIRE_GRACE
    min_wait: int = MIN_WAIT
    certificates: bool = True  # a certificate source is configured
    scheme: str = "current+next"
    issuer_pins: frozenset[str] = frozenset()  # current+issuer: "2 1 1 ..." the operator pinned
    max_records: int = 8  # per owner; some large senders handle only about 12
    config_id: str = ""  # a digest of the configuration: a stopped slot resumes when it changes
    inspect_live: bool = True  # False: the operator says no certificate is in service yet
    retry_base: int = 300  # first backoff after a failed order/install; doubles, capped at 1 day
    # who decides the key ("certbot", "the tool writing the files"); "": rollover stages its keys
    external_source: str = ""

    @property
    def scheme_policy(self) -> SchemePolicy:
        return scheme_for(self.scheme)

    @property
    def stages_next_key(self) -> bool:
        """A next key is staged ahead of time (current+next with keys of rollover's own)."""
        return self.scheme_policy.wants_next_key and not self.external_source

    @property
    def poll(self) -> timedelta:
        """How often to look again while waiting on servers: half a TTL, within 1 s .. 5 min."""
        return timedelta(seconds=min(300, max(1, self.ttl // 2)))


@dataclass
class KeyInfo:
    key_id: str
    role: KeyRole
    spki_sha256: str  # hex; the data of its 3 1 1 record
    created: datetime
    activated: datetime | None = None  # when it went into service (key_lifetime counts from here)

    @property
    def rdata(self) -> str:
        return own_rdata(self.spki_sha256)


@dataclass(frozen=True)
class ProbeResult:
    """One address of the slot at the engine's last post-flight probe: did the chain it
    presented match the TLSA RRset of every authoritative server? (status metrics)"""

    address: str
    matched: bool
    at: datetime
    error: str | None = None  # why it did not (no answer, no certificate, which server)


@dataclass
class RecordInfo:
    rdata: str
    key_id: str | None  # our key's id (kind OWN), else None
    state: RecordState
    since: datetime
    kind: RecordKind = RecordKind.OWN
    label: str | None = None  # issuer records: which certificate, at which depth of the chain

    @property
    def wanted(self) -> bool:
        return self.state in (RecordState.RUMOURED, RecordState.OMNIPRESENT)


@dataclass
class CertInfo:
    key_id: str
    serial: str
    not_after: datetime
    issued_at: datetime
    chain_file: str  # relative to the state dir
    renew_at: datetime | None = None  # from the CA's ARI window, if any
    ari_retry_after: datetime | None = None
    issuers: tuple[str, ...] = ()  # "2 1 1 ..." of the chain's chosen issuers (current+issuer)
    issuer_names: tuple[str, ...] = ()  # for each: "root SUBJECT (depth N)", for people


@dataclass
class SlotState:
    slot: SlotId
    phase: Phase
    phase_since: datetime
    keys: list[KeyInfo] = field(default_factory=list)
    records: list[RecordInfo] = field(default_factory=list)
    key_serial: int = 0  # makes key ids unique and staging idempotent
    submitted_at: datetime | None = None
    agree_since: datetime | None = None
    ttl_seen: int = 0  # largest TTL any server served for the owner, ever (old caches)
    negative_ttl: int = 0  # largest negative TTL seen
    owner_was_empty: bool | None = None  # before our first publish
    installed: CertInfo | None = None
    pending: CertInfo | None = None
    target_key: str | None = None
    roll_requested: bool = False
    retire_at: datetime | None = None
    live_checked: bool = False  # bootstrap: the key the server presented was looked at
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    observation: Observation | None = None
    stopped: str | None = None  # an error that cannot heal by retrying: the slot waits for you
    stopped_config: str | None = None  # Policy.config_id when it stopped
    source_checked: datetime | None = None  # last look at an external certificate source
    probes: list[ProbeResult] = field(default_factory=list)  # the last post-flight probe
    last_success: datetime | None = None  # the end of the last `run` without error for it

    # --- lookups -----------------------------------------------------------------------------
    def key(self, role: KeyRole) -> KeyInfo | None:
        return next((k for k in self.keys if k.role == role), None)

    def key_by_id(self, key_id: str) -> KeyInfo | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def record_for(self, key_id: str) -> RecordInfo | None:
        return next((r for r in self.records if r.key_id == key_id), None)

    def wanted(self) -> frozenset[str]:
        return frozenset(r.rdata for r in self.records if r.wanted)

    def withdrawn(self) -> frozenset[str]:
        return frozenset(r.rdata for r in self.records if r.state == RecordState.UNRETENTIVE)

    @classmethod
    def new(cls, slot: SlotId, now: datetime) -> SlotState:
        return cls(slot=slot, phase=Phase.NEW, phase_since=now)


# --- actions (what the engine must do) and events (what came of it) ----------------------------


@dataclass(frozen=True)
class Action:
    slot: SlotId

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class StageKey(Action):
    key_id: str
    role: KeyRole

    def describe(self) -> str:
        return f"generate the {self.role.value} {self.slot.algorithm.value} key ({self.key_id})"


@dataclass(frozen=True)
class Publish(Action):
    owner: str
    ttl: int
    add: frozenset[str]
    remove: frozenset[str] = frozenset()

    def describe(self) -> str:
        parts = [f"add TLSA {r}" for r in sorted(self.add)]
        parts += [f"remove TLSA {r}" for r in sorted(self.remove)]
        return f"update {self.owner} (ttl {self.ttl}): " + "; ".join(parts)


@dataclass(frozen=True)
class OrderCert(Action):
    key_id: str

    def describe(self) -> str:
        return f"order a certificate for key {self.key_id}"


@dataclass(frozen=True)
class InstallCert(Action):
    key_id: str
    chain_file: str

    def describe(self) -> str:
        return f"pre-flight, then install the certificate for key {self.key_id} and reload"


@dataclass(frozen=True)
class ProbeLive(Action):
    key_id: str

    def describe(self) -> str:
        return f"probe every address of {self.slot.endpoint} for key {self.key_id}"


@dataclass(frozen=True)
class TakeCert(Action):
    key_id: str  # the id the source's key gets when rollover does not know it yet

    def describe(self) -> str:
        return (f"read the newest certificate and key for {self.slot.endpoint} "
                f"({self.slot.algorithm.value}) from its source")


@dataclass(frozen=True)
class InspectLive(Action):
    def describe(self) -> str:
        return (f"look at the key every address of {self.slot.endpoint} presents now "
                f"({self.slot.algorithm.value})")


@dataclass(frozen=True)
class RefreshAri(Action):
    def describe(self) -> str:
        return "ask the CA when to renew (ARI, RFC 9773)"


@dataclass(frozen=True)
class Rollback(Action):
    def describe(self) -> str:
        return "restore the previous certificate files and reload"


@dataclass(frozen=True)
class DropKey(Action):
    key_id: str

    def describe(self) -> str:
        return f"delete (or archive) the retired private key {self.key_id}"


@dataclass(frozen=True)
class Event:
    at: datetime


@dataclass(frozen=True)
class KeyStaged(Event):
    key_id: str
    role: KeyRole
    spki_sha256: str


@dataclass(frozen=True)
class Published(Event):
    pass


@dataclass(frozen=True)
class LiveSeen(Event):
    """The 3 1 1 rdatas of the keys the live server presented (empty: nothing or no probe)."""

    rdatas: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LiveUnseen(Event):
    """Bootstrap: an address could not be looked at (timeout, no STARTTLS, ...): publishing now
    could leave the certificate in service matched by nothing. `error` names address and why."""

    error: str


@dataclass(frozen=True)
class Stopped(Event):
    """An action failed in a way retrying cannot heal; `error` is the operator's one line."""

    error: str


@dataclass(frozen=True)
class CertIssued(Event):
    cert: CertInfo


@dataclass(frozen=True)
class CertTaken(Event):
    """An external source's certificate rollover had not seen; its key (`key_id`, copied into
    the state dir) may be one the slot knows (a same-key renewal) or a new one."""

    key_id: str
    spki_sha256: str
    cert: CertInfo


@dataclass(frozen=True)
class CertAwaited(Event):
    """The external source holds nothing new; `problem`: it is unusable now (one line)."""

    problem: str | None = None


@dataclass(frozen=True)
class Failed(Event):
    """An order, install or probe failed; `error` is the operator's one line."""

    error: str
    probes: tuple[ProbeResult, ...] = ()  # a failed post-flight probe: what each address did
    not_before: datetime | None = None  # the other side said when to come back (Retry-After)
    stop: bool = False  # retrying cannot help: the slot stops (after its rollback, if any)


@dataclass(frozen=True)
class Installed(Event):
    pass


@dataclass(frozen=True)
class ProbeOk(Event):
    probes: tuple[ProbeResult, ...] = ()


@dataclass(frozen=True)
class RolledBack(Event):
    pass


@dataclass(frozen=True)
class AriChecked(Event):
    """The CA's renewal suggestion: None keeps what we had; retry_after None stops asking."""

    renew_at: datetime | None
    retry_after: datetime | None


@dataclass(frozen=True)
class KeyDropped(Event):
    key_id: str


@dataclass(frozen=True)
class StepResult:
    state: SlotState
    action: Action | None
    wake_at: datetime | None  # earliest time worth looking again (None: nothing scheduled)
    reason: str  # why this action, or what we are waiting for
    transition: Move | None = None  # the row of TRANSITIONS of the move being made


# --- the machine --------------------------------------------------------------------------------


def step(
    state: SlotState, observation: Observation | None, policy: Policy, now: datetime
) -> StepResult:
    """Decide what to do next for one slot. Never mutates `state`; returns a new one."""
    st = _copy(state)
    if observation is not None:
        _absorb(st, observation)
    # a stopped slot still finishes a rollback: that only restores what was safe before
    if st.stopped is not None and st.phase != Phase.ROLLING_BACK:
        if policy.config_id and policy.config_id != st.stopped_config:
            st.stopped = st.stopped_config = None  # the configuration changed: try again
            st.retry_at, st.failures = None, 0  # with a fresh count of attempts
        else:
            return _wait(st, f"stopped: {st.stopped}; fix it, then change the configuration or "
                             "run `rollover run --resume`", None)
    handler = _HANDLERS[st.phase]
    return handler(st, policy, now)


def apply(state: SlotState, event: Event, policy: Policy, now: datetime) -> SlotState:
    """Record the outcome of an action. Never mutates `state`."""
    return apply_move(state, event, policy, now)[0]


_FAILED_IN = {Phase.ISSUING: Move.ORDER_FAILED, Phase.INSTALLING: Move.INSTALL_FAILED,
              Phase.VERIFYING: Move.PROBE_FAILED, Phase.ROLLING_BACK: Move.ROLLBACK_FAILED}


def apply_move(state: SlotState, event: Event, policy: Policy,
               now: datetime) -> tuple[SlotState, Move]:
    """`apply`, and the outcome row of TRANSITIONS it took."""
    st = _copy(state)
    at = event.at
    move: Move
    if isinstance(event, KeyStaged):
        move = Move.KEY_STAGED
        if st.key_by_id(event.key_id) is None:
            st.keys.append(KeyInfo(event.key_id, event.role, event.spki_sha256, at))
        st.key_serial += 1
    elif isinstance(event, LiveSeen):
        move = Move.LIVE_SEEN
        ours = {k.rdata for k in st.keys}
        for rdata in sorted(event.rdatas - ours):
            if all(r.rdata != rdata for r in st.records):
                st.records.append(RecordInfo(rdata, None, RecordState.HIDDEN, at,
                                             RecordKind.ADOPTED))
        st.live_checked = True
        st.retry_at, st.last_error = None, None
    elif isinstance(event, LiveUnseen):
        move = Move.LOOK_FAILED
        # Never publish blind: stay in NEW and look again after a poll interval.
        st.last_error = event.error
        st.retry_at = at + policy.poll
    elif isinstance(event, Published):
        move = Move.PUBLISHED
        if st.phase == Phase.NEW:
            st.retry_at, st.last_error = None, None  # a blind look that was overruled
        for rec in st.records:
            if rec.state == RecordState.HIDDEN:
                rec.state, rec.since = RecordState.RUMOURED, at
        st.submitted_at = at
        st.agree_since = None
        _enter(st, Phase.PROPAGATING, at)
    elif isinstance(event, CertIssued):
        move = Move.ISSUED
        st.pending = event.cert
        st.failures, st.retry_at, st.last_error = 0, None, None
        _enter(st, Phase.INSTALLING, at)
    elif isinstance(event, Failed):
        if event.probes:
            st.probes = list(event.probes)
        if st.phase not in _FAILED_IN:  # pragma: no cover - a programming error
            raise TypeError(f"a failure in phase {st.phase} has no row in TRANSITIONS")
        move = _FAILED_IN[st.phase]
        _fail(st, event.error, policy, at, event.not_before)
        if event.stop:
            st.stopped, st.stopped_config = event.error, policy.config_id
    elif isinstance(event, Installed):
        move = Move.INSTALLED
        _enter(st, Phase.VERIFYING, at)
    elif isinstance(event, ProbeOk):
        if event.probes:
            st.probes = list(event.probes)
        move = _verified(st, policy, at)
    elif isinstance(event, RolledBack):
        move = Move.ROLLED_BACK
        st.pending = None
        st.target_key = None
        _enter(st, Phase.ACTIVE if st.installed else Phase.READY, at)
    elif isinstance(event, AriChecked):
        move = Move.ARI_CHECKED
        if st.installed is not None:
            if event.renew_at is not None:
                st.installed.renew_at = event.renew_at
            st.installed.ari_retry_after = event.retry_after
    elif isinstance(event, Stopped):
        move = Move.STOPPED
        st.stopped, st.stopped_config = event.error, policy.config_id
    elif isinstance(event, KeyDropped):
        move = Move.KEY_DROPPED
        st.keys = [k for k in st.keys if k.key_id != event.key_id]
    elif isinstance(event, CertTaken):
        move = Move.CERT_TAKEN
        _take(st, event, at)
    elif isinstance(event, CertAwaited):
        move = Move.CERT_AWAITED
        st.source_checked = at
        if event.problem is not None:
            st.last_error = event.problem
    else:  # pragma: no cover - a programming error, not an operator's
        raise TypeError(f"unknown event {event!r}")
    return st, move


def _verified(st: SlotState, policy: Policy, at: datetime) -> Move:
    assert st.pending is not None
    new_key = st.pending.key_id
    st.installed, st.pending, st.target_key = st.pending, None, None
    st.failures, st.retry_at, st.last_error = 0, None, None
    current = st.key(KeyRole.CURRENT)
    if current is not None and current.key_id != new_key:
        # A key rollover: next becomes current; the old key's record stays until retired.
        current.role = KeyRole.PREVIOUS
        nxt = st.key_by_id(new_key)
        assert nxt is not None
        nxt.role = KeyRole.CURRENT
        nxt.activated = at
        st.roll_requested = False
        st.retire_at = at + timedelta(seconds=policy.retire_grace)
        _enter(st, Phase.RETIRING, at)
        return Move.VERIFIED
    if current is not None and current.activated is None:
        current.activated = at
    if any(r.kind == RecordKind.ADOPTED and r.wanted for r in st.records):
        # The key the server presented before we took over is still published: it goes
        # the way of any old key, after the grace period.
        st.retire_at = at + timedelta(seconds=policy.retire_grace)
        _enter(st, Phase.RETIRING, at)
        return Move.VERIFIED_FIRST
    _enter(st, Phase.ACTIVE, at)
    return Move.VERIFIED_SAME_KEY


def _take(st: SlotState, event: CertTaken, at: datetime) -> None:
    """An external source's certificate: adopt its key (the source, not rollover, made it) and
    stage the certificate; installing it is guarded like any other (rule 1)."""
    st.source_checked, st.last_error = at, None
    if st.key_by_id(event.key_id) is None:
        role = KeyRole.NEXT if st.key(KeyRole.CURRENT) else KeyRole.CURRENT
        for k in st.keys:
            if k.role == KeyRole.NEXT:  # a next key never used (staged before): it goes
                k.role = KeyRole.PREVIOUS
        st.keys.append(KeyInfo(event.key_id, role, event.spki_sha256, at))
        st.key_serial += 1
    st.pending = event.cert
    if st.phase == Phase.NEW:
        return  # published with the records of NEW, installed once they are omnipresent
    st.target_key = event.key_id
    st.failures, st.retry_at = 0, None
    _enter(st, Phase.INSTALLING, at)


def _fail(st: SlotState, error: str, policy: Policy, at: datetime,
          not_before: datetime | None = None) -> None:
    st.failures += 1
    delay = min(86400, policy.retry_base * 2 ** (st.failures - 1))
    st.retry_at = at + timedelta(seconds=delay)
    if not_before is not None and not_before > st.retry_at:
        st.retry_at = not_before  # a CA's Retry-After longer than our backoff wins
    st.last_error = error
    if st.phase == Phase.VERIFYING:
        _enter(st, Phase.ROLLING_BACK, at)  # rule 3: the previous certificate goes back
    # ISSUING stays (order again after backoff). INSTALLING stays: pre-flight refused or the
    # installer failed and restored the previous files itself; the issued certificate is kept
    # and the install retried after backoff. ROLLING_BACK stays (the rollback is retried).


# --- observation bookkeeping -------------------------------------------------------------------


def observation_verdict(st: SlotState, obs: Observation) -> str | None:
    """None when `obs` shows every address agreeing on a set that has all wanted records and
    none of the withdrawn ones; otherwise the reason, naming servers and addresses."""
    wanted, withdrawn = st.wanted(), st.withdrawn()
    problem = obs.disagreement(wanted)
    if problem:
        return problem
    for answer in obs.answers:
        stale = withdrawn & answer.records
        if stale:
            return f"{answer.label} still serves the withdrawn record(s)"
    return None


def _absorb(st: SlotState, obs: Observation) -> None:
    prev = st.observation
    if (prev is not None and st.agree_since is not None and prev.run and prev.run == obs.run
            and prev.mono is not None and obs.mono is not None):
        # A wall-clock step forward between two looks of one run (NTP) is time nobody watched
        # the servers for: the 2 x TTL clock does not get it for free.
        jump = (obs.at - prev.at).total_seconds() - (obs.mono - prev.mono)
        if jump > 1.0:
            st.agree_since += timedelta(seconds=jump)
    if prev is not None and st.agree_since is not None and (
            {a.address for a in obs.answers} - {a.address for a in prev.answers}):
        # A nameserver address we did not watch before (an NS added to the zone mid-wait):
        # nobody saw what it served during the interval, so the 2 x TTL clock starts again.
        st.agree_since = None
    st.observation = obs
    if obs.max_ttl() is not None:
        st.ttl_seen = max(st.ttl_seen, obs.max_ttl() or 0)
    if obs.negative_ttl is not None:
        st.negative_ttl = max(st.negative_ttl, obs.negative_ttl)
    if st.submitted_at is None:
        # Before our first publish: was the owner name empty anywhere? Then resolvers may hold
        # a negative answer for it. Unknown (no server answered) counts as empty; once empty,
        # always empty.
        ok = [a for a in obs.answers if a.ok]
        empty = not ok or any(not a.records for a in ok)
        st.owner_was_empty = bool(st.owner_was_empty) or empty
        return
    if obs.at < st.submitted_at:
        return  # taken before our change: says nothing about it
    if observation_verdict(st, obs) is None:
        if st.agree_since is None:
            st.agree_since = obs.at
    else:
        st.agree_since = None  # rule 5: any disagreement restarts the 2 x TTL clock


def required_wait(st: SlotState, policy: Policy) -> tuple[int, str]:
    """Seconds of continuous agreement needed, and how that number was made."""
    ttl = max(st.ttl_seen, policy.ttl)
    wait, why = 2 * ttl, f"2 x TTL {ttl}s"
    if st.owner_was_empty and 2 * st.negative_ttl > wait:
        wait, why = 2 * st.negative_ttl, f"2 x negative TTL {st.negative_ttl}s (name was new)"
    if policy.min_wait > wait:
        wait, why = policy.min_wait, f"min_wait {policy.min_wait}s"
    return wait, why


def omnipresent_at(st: SlotState, policy: Policy) -> datetime | None:
    if st.agree_since is None:
        return None
    return st.agree_since + timedelta(seconds=required_wait(st, policy)[0])


# --- phase handlers ----------------------------------------------------------------------------


def _wait(st: SlotState, reason: str, wake_at: datetime | None) -> StepResult:
    return StepResult(st, None, wake_at, reason)


def _do(st: SlotState, action: Action, reason: str, transition: Move) -> StepResult:
    return StepResult(st, action, None, reason, transition)


def _new_key_id(st: SlotState, role: KeyRole) -> str:
    host = st.slot.host.replace(".", "_")
    return f"{host}-{st.slot.port}-{st.slot.algorithm.value}-{st.key_serial + 1:04d}"


def _source_fresh(st: SlotState, policy: Policy, now: datetime) -> bool:
    """The external source was looked at less than a poll interval ago."""
    return st.source_checked is not None and now < st.source_checked + policy.poll


def _awaiting(st: SlotState, policy: Policy, what: str) -> str:
    problem = f" ({st.last_error})" if st.last_error else ""
    return f"waiting: {policy.external_source} has not {what} {st.slot.host} yet{problem}"


def _on_new(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    roles = [(KeyRole.CURRENT, Move.STAGE_CURRENT)]
    if policy.stages_next_key:
        roles.append((KeyRole.NEXT, Move.STAGE_NEXT))
    if policy.external_source and st.key(KeyRole.CURRENT) is None:
        # The source's key is the current key: nothing is published before it exists.
        if _source_fresh(st, policy, now):
            return _wait(st, _awaiting(st, policy, "issued a certificate for"), None)
        return _do(st, TakeCert(st.slot, _new_key_id(st, KeyRole.CURRENT)),
                   f"{policy.external_source} decides the key: take it with its certificate",
                   Move.TAKE_CERT)
    for role, name in roles:
        if st.key(role) is None:
            action = StageKey(st.slot, _new_key_id(st, role), role)
            return _do(st, action, f"no {role.value} key yet", name)
    if not st.live_checked and policy.inspect_live:
        if st.retry_at is not None and now < st.retry_at:
            return _wait(st, f"waiting: {st.last_error}; every key in service must be seen "
                             "and covered first, so nothing is published (say `bootstrap: "
                             "no-certificate` if none is in service)", st.retry_at)
        return _do(st, InspectLive(st.slot), "keys staged; the certificate in service must "
                   "keep matching once TLSA records appear", Move.INSPECT_LIVE)
    for role, _ in roles:
        key = st.key(role)
        assert key is not None
        _want(st, key.rdata, now, key.key_id)
    for pin in sorted(policy.issuer_pins):
        _want(st, pin, now)
    adopted = sum(1 for r in st.records if r.kind == RecordKind.ADOPTED)
    extra = f" (+ {adopted} for the key in service now)" if adopted else ""
    return _publish(st, policy, f"{' and '.join(r.value for r, _ in roles)} key staged{extra}; "
                    "their records are hidden", Move.PUBLISH)


def _want(st: SlotState, rdata: str, now: datetime, key_id: str | None = None,
          cert: CertInfo | None = None) -> None:
    """Make sure `rdata` is among the records we publish (hidden until submitted)."""
    rec = next((r for r in st.records if r.rdata == rdata), None)
    label = dict(zip(cert.issuers, cert.issuer_names, strict=False)).get(rdata) if cert else None
    if rec is not None and rec.state != RecordState.UNRETENTIVE:
        rec.label = rec.label or label
        return
    if rec is not None:
        st.records.remove(rec)
    kind = RecordKind.ISSUER if rdata.startswith("2 ") else RecordKind.OWN
    if key_id is None and kind == RecordKind.OWN:
        key = next((k for k in st.keys if k.rdata == rdata), None)
        key_id = key.key_id if key else None
    st.records.append(RecordInfo(rdata, key_id, RecordState.HIDDEN, now, kind, label))


def _publish(st: SlotState, policy: Policy, reason: str, transition: Move) -> StepResult:
    live = (RecordState.HIDDEN, RecordState.RUMOURED, RecordState.OMNIPRESENT)
    add = frozenset(r.rdata for r in st.records if r.state in live)
    if len(add) > policy.max_records:
        return _wait(st, f"policy says no: {len(add)} records wanted for "
                         f"{st.slot.endpoint.owner}, more than max_records {policy.max_records} "
                         "(some senders stop reading after about 12)", None)
    remove = st.withdrawn()
    action = Publish(st.slot, st.slot.endpoint.owner, policy.ttl, add, remove)
    return _do(st, action, reason, transition)


def _republish(st: SlotState, policy: Policy, lost: frozenset[str]) -> StepResult:
    # A record every server lacks is no longer omnipresent: it starts over from hidden.
    for rec in st.records:
        if rec.rdata in lost:
            rec.state = RecordState.HIDDEN
    return _publish(st, policy, f"dns says no: every server agrees {len(lost)} of our records "
                    "are missing (deleted by someone?); submitting them again", Move.REPUBLISH)


def _lacking_everywhere(st: SlotState, obs: Observation | None) -> frozenset[str]:
    """Wanted records that every server agrees are absent (lost or deleted by someone)."""
    if obs is None:
        return frozenset()
    agreed = obs.agreed()
    if agreed is None:
        return frozenset()
    return st.wanted() - agreed


def _on_propagating(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    obs = st.observation
    if obs is None or st.submitted_at is None or obs.at < st.submitted_at:
        return _wait(st, "waiting: no observation since the records were submitted",
                     now + policy.poll)
    lost = _lacking_everywhere(st, obs)
    grace = timedelta(seconds=max(60, 2 * policy.ttl))
    if lost and obs.at >= st.submitted_at + grace:
        return _republish(st, policy, lost)
    problem = observation_verdict(st, obs)
    if problem is not None:
        # Secondaries usually catch up within a second: look again soon after a submission,
        # then back off to the policy's poll interval. The 2 x TTL clock starts at the first
        # agreeing look, so looking late only makes us wait longer, never shorter.
        since = max(0.0, (now - st.submitted_at).total_seconds())
        again = min(policy.poll, timedelta(seconds=max(0.2, since / 4)))
        return _wait(st, f"waiting: {problem}", now + again)
    ready_at = omnipresent_at(st, policy)
    assert ready_at is not None  # _absorb set agree_since on this agreeing observation
    why = required_wait(st, policy)[1]
    if obs.at < ready_at:
        left = (ready_at - obs.at).total_seconds()
        return _wait(st, f"time says no: {human_duration(left)} left of {why} "
                         f"(all {len(obs.answers)} addresses agree since "
                         f"{format_time(st.agree_since or obs.at)})",
                     max(ready_at, now))
    for rec in st.records:
        if rec.state == RecordState.RUMOURED:
            rec.state, rec.since = RecordState.OMNIPRESENT, obs.at
    st.records = [r for r in st.records if r.state != RecordState.UNRETENTIVE]
    if st.pending is not None:  # a certificate waited for its covering records
        _enter(st, Phase.INSTALLING, now)
        return StepResult(st, None, now, f"records omnipresent after {why}", Move.OMNIPRESENT)
    if st.installed is None:
        _enter(st, Phase.READY, now)
        return StepResult(st, None, now, f"records omnipresent after {why}", Move.OMNIPRESENT)
    _enter(st, Phase.ACTIVE, now)
    return StepResult(st, None, now, f"records settled after {why}", Move.SETTLED)


def _on_ready(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    lost = _lacking_everywhere(st, st.observation)
    if lost:
        return _republish(st, policy, lost)
    if not policy.certificates:
        return _wait(st, "ready: current + next are omnipresent; no certificate source is "
                         "configured for this endpoint, so nothing more to do", None)
    current = st.key(KeyRole.CURRENT)
    assert current is not None
    st.target_key = current.key_id
    _enter(st, Phase.ISSUING, now)
    return _on_issuing(st, policy, now, entering=True)


def _covered(st: SlotState, policy: Policy, key_id: str,
             cert: CertInfo | None) -> frozenset[str]:
    """The omnipresent records that cover a certificate of `key_id` under the scheme."""
    cover = policy.scheme_policy.covering(st, key_id, cert, policy.issuer_pins)
    return frozenset(r.rdata for r in st.records
                     if r.state == RecordState.OMNIPRESENT and r.rdata in cover)


def _target_guard(st: SlotState, policy: Policy, key_id: str,
                  cert: CertInfo | None = None) -> str | None:
    """Safety rule 1: only a certificate that an omnipresent record covers may be brought into
    service (current+next: its key's own 3 1 1; current+issuer: that or its issuer's 2 1 1)."""
    if _covered(st, policy, key_id, cert):
        return None
    rec = st.record_for(key_id)
    state = rec.state.value if rec else "not published"
    if policy.scheme == "current+next":
        return f"policy says no: the record for key {key_id} is {state}, not omnipresent"
    return (f"policy says no: neither key {key_id}'s 3 1 1 ({state}) nor an issuer's 2 1 1 of "
            "its chain is omnipresent")


def _on_issuing(st: SlotState, policy: Policy, now: datetime,
                entering: bool = False) -> StepResult:
    assert st.target_key is not None
    refusal = _target_guard(st, policy, st.target_key)
    if refusal:
        if entering:  # not started after all: stay where we were
            st.target_key = None
            _enter(st, Phase.ACTIVE if st.installed else Phase.READY, now)
        return _wait(st, refusal, now + policy.poll)
    why = Move.ORDER_FIRST if st.installed is None else (
        Move.RENEW if st.installed.key_id == st.target_key else Move.ROLL)
    if policy.external_source and not (st.retry_at is not None and now < st.retry_at):
        # certbot decides when (and with which key): wait for it, no backoff
        if _source_fresh(st, policy, now):
            what = "issued a certificate for" if st.installed is None else "renewed"
            return StepResult(st, None, None, _awaiting(st, policy, what),
                              why if entering else None)
        return _do(st, TakeCert(st.slot, _new_key_id(st, KeyRole.NEXT)),
                   f"renewal due: look whether {policy.external_source} renewed "
                   f"{st.slot.host}", why if entering else Move.TAKE_CERT)
    if st.retry_at is not None and now < st.retry_at:
        left = (st.retry_at - now).total_seconds()
        # entering: the move is made, the order itself waits for the backoff
        return StepResult(st, None, st.retry_at, f"backoff: last attempt failed "
                          f"({st.last_error}); retry in {human_duration(left)}",
                          why if entering else None)
    down = [a for a in st.observation.answers if not a.ok] if st.observation else []
    if down:
        # the order's DNS-01 record could not be seen there, and the certificate could not go
        # into service anyway (rule 2 asks every server): spend no CA validation on it now
        a = down[0]
        return StepResult(st, None, now + policy.poll,
                          f"dns says no: {a.label} does not answer ({a.error or a.rcode}); "
                          "the order waits until every nameserver answers",
                          why if entering else None)
    return _do(st, OrderCert(st.slot, st.target_key), f"need a certificate for key "
               f"{st.target_key}", why)


def _on_installing(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    cert = st.pending
    assert cert is not None
    usable = _covered(st, policy, cert.key_id, cert)
    if not usable:
        needed = policy.scheme_policy.needed(st, cert.key_id, cert, policy.issuer_pins)
        missing = needed - st.wanted()
        if missing:
            for rdata in sorted(missing):
                _want(st, rdata, now, cert=cert)
            if policy.external_source:
                why = (f"{policy.external_source} made a new key ({cert.key_id}); its record "
                       "goes out first and the old certificate stays in service until it is "
                       "omnipresent")
            else:
                why = ("no record we publish covers the new certificate (chain issued by "
                       f"{len(cert.issuers)} issuer(s) not published); the old certificate "
                       "stays in service")
            return _publish(st, policy, why, Move.PUBLISH_COVER)
        refusal = _target_guard(st, policy, cert.key_id, cert)
        assert refusal is not None
        return _wait(st, refusal, now + policy.poll)
    obs = st.observation
    if obs is None:
        return _wait(st, "waiting: no observation of the nameservers yet", now + policy.poll)
    problems = [obs.disagreement(frozenset({r})) for r in sorted(usable)]
    if all(problems):
        return _wait(st, f"dns says no: {problems[0]}", now + policy.poll)
    if st.retry_at is not None and now < st.retry_at:
        return _wait(st, f"backoff: {st.last_error}", st.retry_at)
    return _do(st, InstallCert(st.slot, cert.key_id, cert.chain_file),
               f"a record covering key {cert.key_id}'s certificate is served by all "
               f"{len(obs.answers)} addresses", Move.INSTALL)


def _on_verifying(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    assert st.pending is not None
    return _do(st, ProbeLive(st.slot, st.pending.key_id), "installed; post-flight next",
               Move.PROBE)


def _on_rolling_back(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    return _do(st, Rollback(st.slot), f"post-flight failed: {st.last_error}", Move.ROLLBACK)


def _due(st: SlotState, policy: Policy) -> tuple[datetime | None, datetime | None]:
    """(renewal time of the installed certificate, key rollover time of the current key)."""
    renew = roll = None
    if st.installed is not None:
        renew = st.installed.not_after - timedelta(seconds=policy.renew_before)
        if st.installed.renew_at is not None:
            renew = min(renew, st.installed.renew_at)
    current = st.key(KeyRole.CURRENT)
    if current is not None and not policy.external_source:  # else the source picks the key
        roll = (current.activated or current.created) + timedelta(seconds=policy.key_lifetime)
    return renew, roll


def _stale_issuers(st: SlotState, policy: Policy) -> list[RecordInfo]:
    """Issuer records no chain in service uses and no pin names (after a CA change)."""
    keep = set(policy.issuer_pins) | set(st.installed.issuers if st.installed else ())
    return [r for r in st.records
            if r.kind == RecordKind.ISSUER and r.wanted and r.rdata not in keep]


def _on_active(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    lost = _lacking_everywhere(st, st.observation)
    if lost:
        return _republish(st, policy, lost)
    for key in st.keys:
        rec = st.record_for(key.key_id)
        if key.role == KeyRole.PREVIOUS and (rec is None or not rec.wanted):
            return _do(st, DropKey(st.slot, key.key_id),
                       "the old key's record is withdrawn everywhere", Move.DROP_KEY)
    scheme = policy.scheme_policy
    if st.installed is not None:
        needed = scheme.needed(st, st.installed.key_id, st.installed, policy.issuer_pins)
        missing, stale = needed - st.wanted(), _stale_issuers(st, policy)
        if missing or stale:
            for rdata in sorted(missing):
                _want(st, rdata, now, cert=st.installed)
            for rec in stale:
                rec.state, rec.since = RecordState.UNRETENTIVE, now
            return _publish(st, policy, f"the certificate in service needs {len(missing)} "
                            f"record(s) published; {len(stale)} issuer record(s) unused",
                            Move.PUBLISH_COVER)
    ari = st.installed.ari_retry_after if st.installed else None
    if ari is not None and now >= ari:
        return _do(st, RefreshAri(st.slot), "the CA's ARI Retry-After passed", Move.ARI)
    renew, roll = _due(st, policy)
    if policy.external_source and not _source_fresh(st, policy, now) and not (
            renew is not None and now >= renew):
        return _do(st, TakeCert(st.slot, _new_key_id(st, KeyRole.NEXT)),
                   f"look whether {policy.external_source} has a new certificate",
                   Move.TAKE_CERT)
    if (st.roll_requested and not policy.external_source) or (roll is not None and now >= roll):
        nxt = st.key(KeyRole.NEXT)
        if nxt is None and not scheme.wants_next_key:
            # current+issuer: the new key is made when it is needed; the issuer covers it
            return _do(st, StageKey(st.slot, _new_key_id(st, KeyRole.NEXT), KeyRole.NEXT),
                       "key rollover due: stage the new key", Move.STAGE_NEXT)
        if nxt is not None:
            refusal = _target_guard(st, policy, nxt.key_id)
            if refusal is None:
                st.target_key = nxt.key_id
                _enter(st, Phase.ISSUING, now)
                return _on_issuing(st, policy, now, entering=True)
            return _wait(st, f"roll due but {refusal}", now + policy.poll)
    if renew is not None and now >= renew:
        assert st.installed is not None
        st.target_key = st.installed.key_id
        _enter(st, Phase.ISSUING, now)
        return _on_issuing(st, policy, now, entering=True)
    times = [t for t in (renew, roll, ari) if t is not None]
    wake = min(times) if times else None
    parts = []
    if st.installed is not None:
        parts.append(f"certificate valid until {format_time(st.installed.not_after)}")
    if renew is not None:
        parts.append(f"renewal at {format_time(renew)}")
    if roll is not None:
        parts.append(f"key rollover at {format_time(roll)}")
    if policy.external_source:
        parts.append(f"{policy.external_source} decides the key"
                     + (" (--roll: renew it with a new key there)" if st.roll_requested else ""))
    return _wait(st, "waiting: " + "; ".join(parts), wake)


def _on_retiring(st: SlotState, policy: Policy, now: datetime) -> StepResult:
    # retire_at None: the retirement was decided and its publish did not go through (a crash,
    # a provider error): decide it again, idempotently
    if st.retire_at is not None and now < st.retire_at:
        left = (st.retire_at - now).total_seconds()
        return _wait(st, f"time says no: retire_grace, {human_duration(left)} left before the "
                         "old record is withdrawn", st.retire_at)
    scheme = policy.scheme_policy
    if policy.stages_next_key and st.key(KeyRole.NEXT) is None:
        return _do(st, StageKey(st.slot, _new_key_id(st, KeyRole.NEXT), KeyRole.NEXT),
                   "the next key was brought into service; stage a new next key", Move.RETIRE)
    nxt = st.key(KeyRole.NEXT)
    if nxt is not None:
        _want(st, nxt.rdata, now, nxt.key_id)
    if st.installed is not None:
        for rdata in sorted(scheme.needed(st, st.installed.key_id, st.installed,
                                          policy.issuer_pins)):
            _want(st, rdata, now, cert=st.installed)
    previous = {k.key_id for k in st.keys if k.role == KeyRole.PREVIOUS}
    stale = {id(r) for r in _stale_issuers(st, policy)}
    for rec in st.records:
        if rec.wanted and (rec.kind == RecordKind.ADOPTED or rec.key_id in previous
                           or id(rec) in stale):
            rec.state, rec.since = RecordState.UNRETENTIVE, now
    st.retire_at = None
    return _publish(st, policy, "post-flight passed and retire_grace is over", Move.RETIRE)


_HANDLERS = {
    Phase.NEW: _on_new,
    Phase.PROPAGATING: _on_propagating,
    Phase.READY: _on_ready,
    Phase.ISSUING: _on_issuing,
    Phase.INSTALLING: _on_installing,
    Phase.VERIFYING: _on_verifying,
    Phase.ROLLING_BACK: _on_rolling_back,
    Phase.ACTIVE: _on_active,
    Phase.RETIRING: _on_retiring,
}


# --- helpers -----------------------------------------------------------------------------------


def _enter(st: SlotState, phase: Phase, at: datetime) -> None:
    if st.phase != phase:
        st.phase, st.phase_since = phase, at


def _copy(st: SlotState) -> SlotState:
    return slot_from_dict(slot_to_dict(st))


def human_duration(seconds: float) -> str:
    """"90s", "41 min", "2 h 5 min", "3 days": for reasons and reports."""
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


# --- serialisation (the state file) ------------------------------------------------------------


def _t(dt: datetime | None) -> str | None:
    return None if dt is None else format_time(dt)


def _pt(text: str | None) -> datetime | None:
    return None if text is None else parse_time(text)


def _cert_to(c: CertInfo | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"key_id": c.key_id, "serial": c.serial, "not_after": _t(c.not_after),
            "issued_at": _t(c.issued_at), "chain_file": c.chain_file,
            "renew_at": _t(c.renew_at), "ari_retry_after": _t(c.ari_retry_after),
            "issuers": list(c.issuers), "issuer_names": list(c.issuer_names)}


def _cert_from(d: dict[str, Any] | None) -> CertInfo | None:
    if d is None:
        return None
    return CertInfo(d["key_id"], d["serial"], parse_time(d["not_after"]),
                    parse_time(d["issued_at"]), d["chain_file"], _pt(d.get("renew_at")),
                    _pt(d.get("ari_retry_after")), tuple(d.get("issuers", ())),
                    tuple(d.get("issuer_names", ())))


def slot_to_dict(st: SlotState) -> dict[str, Any]:
    return {
        "slot": st.slot.key,
        "phase": st.phase.value,
        "phase_since": _t(st.phase_since),
        "keys": [{"key_id": k.key_id, "role": k.role.value, "spki_sha256": k.spki_sha256,
                  "created": _t(k.created), "activated": _t(k.activated)} for k in st.keys],
        "records": [{"rdata": r.rdata, "key_id": r.key_id, "state": r.state.value,
                     "since": _t(r.since), "kind": r.kind.value, "label": r.label}
                    for r in st.records],
        "key_serial": st.key_serial,
        "submitted_at": _t(st.submitted_at),
        "agree_since": _t(st.agree_since),
        "ttl_seen": st.ttl_seen,
        "negative_ttl": st.negative_ttl,
        "owner_was_empty": st.owner_was_empty,
        "installed": _cert_to(st.installed),
        "pending": _cert_to(st.pending),
        "target_key": st.target_key,
        "roll_requested": st.roll_requested,
        "retire_at": _t(st.retire_at),
        "live_checked": st.live_checked,
        "failures": st.failures,
        "retry_at": _t(st.retry_at),
        "last_error": st.last_error,
        "observation": st.observation.to_dict() if st.observation else None,
        "stopped": st.stopped,
        "stopped_config": st.stopped_config,
        "source_checked": _t(st.source_checked),
        "probes": [{"address": p.address, "matched": p.matched, "at": _t(p.at),
                    "error": p.error} for p in st.probes],
        "last_success": _t(st.last_success),
    }


def slot_from_dict(d: dict[str, Any]) -> SlotState:
    return SlotState(
        slot=SlotId.parse(d["slot"]),
        phase=Phase(d["phase"]),
        phase_since=parse_time(d["phase_since"]),
        keys=[KeyInfo(k["key_id"], KeyRole(k["role"]), k["spki_sha256"], parse_time(k["created"]),
                      _pt(k.get("activated"))) for k in d.get("keys", ())],
        records=[RecordInfo(r["rdata"], r.get("key_id"), RecordState(r["state"]),
                            parse_time(r["since"]), _kind(r), r.get("label"))
                 for r in d.get("records", ())],
        key_serial=d.get("key_serial", 0),
        submitted_at=_pt(d.get("submitted_at")),
        agree_since=_pt(d.get("agree_since")),
        ttl_seen=d.get("ttl_seen", 0),
        negative_ttl=d.get("negative_ttl", 0),
        owner_was_empty=d.get("owner_was_empty"),
        installed=_cert_from(d.get("installed")),
        pending=_cert_from(d.get("pending")),
        target_key=d.get("target_key"),
        roll_requested=d.get("roll_requested", False),
        retire_at=_pt(d.get("retire_at")),
        live_checked=d.get("live_checked", False),
        failures=d.get("failures", 0),
        retry_at=_pt(d.get("retry_at")),
        last_error=d.get("last_error"),
        observation=Observation.from_dict(d["observation"]) if d.get("observation") else None,
        stopped=d.get("stopped"),
        stopped_config=d.get("stopped_config"),
        source_checked=_pt(d.get("source_checked")),
        probes=[ProbeResult(p["address"], p["matched"], parse_time(p["at"]), p.get("error"))
                for p in d.get("probes", ())],
        last_success=_pt(d.get("last_success")),
    )


def _kind(r: dict[str, Any]) -> RecordKind:
    if "kind" in r:
        return RecordKind(r["kind"])
    return RecordKind.OWN if r.get("key_id") else RecordKind.ADOPTED  # before kinds existed


def request_roll(state: SlotState) -> SlotState:
    return replace(_copy(state), roll_requested=True)


def resume(state: SlotState) -> SlotState:
    """The operator says the cause of a stop is fixed: try again now."""
    return replace(_copy(state), stopped=None, stopped_config=None, retry_at=None, failures=0)
def source_changed(state: SlotState) -> SlotState:
    """The external source's hook said a new version waits: look at it on the next step."""
    return replace(_copy(state), source_checked=None)


def transitions_table() -> str:
    """The transitions table as aligned text (README, `rollover transitions`)."""
    import textwrap

    lines = []
    for t in TRANSITIONS:
        src = ",".join(p.value for p in t.source)
        dst = ",".join(p.value for p in t.target)
        lines.append(f"{t.name.value:<18} {src} -> {dst}")
        text = f"{'outcome: ' if t.outcome else 'when '}{t.guard}; {t.action}"
        lines += textwrap.wrap(text, 96, initial_indent="    ", subsequent_indent="      ")
    return "\n".join(lines)
