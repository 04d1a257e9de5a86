"""Property tests: no sequence of observations lets a key into service early.

The oracle here is independent of the machine's bookkeeping: it keeps its own history of every
observation fed in and checks, whenever the machine declares records omnipresent or asks to install
a certificate, that the last 2 x TTL (largest TTL ever served) of that history agree everywhere.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollover.core import machine as m
from rollover.core.machine import Phase
from rollover.model import Algorithm, Observation, SlotId

from machine_helpers import POLICY, at, drive_to_propagating, obs, spki

MODES = ("new", "old", "timeout", "extra", "partial")
OLD = "3 1 1 " + "ee" * 32
EXTRA = "3 1 1 " + "ff" * 32
LIVE = "3 1 1 " + "dd" * 32  # the key a server presented before rollover took over

server_modes = st.tuples(*(st.sampled_from(MODES) for _ in range(3)))
rounds = st.lists(
    st.tuples(st.integers(0, 90), server_modes, st.sampled_from((30, 60, 120))),
    min_size=1, max_size=40,
)


def serve(mode: str, wanted: list[str]) -> list[str] | None:
    return {"new": wanted, "old": [OLD], "timeout": None, "extra": [*wanted, EXTRA],
            "partial": wanted[:1]}[mode]


def agreeing(o: Observation, wanted: frozenset[str]) -> bool:
    if not all(a.ok for a in o.answers):
        return False
    sets = {a.records for a in o.answers}
    return len(sets) == 1 and wanted <= next(iter(sets))


def covered(history: list[tuple[Observation, bool]], wanted: frozenset[str], ttl: int) -> bool:
    """The trailing run of agreeing observations spans at least 2 x ttl."""
    last = history[-1][0]
    start = None
    for o, _ in reversed(history):
        if not agreeing(o, wanted):
            break
        start = o.at
    return start is not None and (last.at - start) >= timedelta(seconds=2 * ttl)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds)
def test_never_omnipresent_without_two_ttls_of_agreement_everywhere(plan: list) -> None:
    state = drive_to_propagating()
    wanted = state.wanted()
    w = sorted(wanted)
    history: list[tuple[Observation, bool]] = []
    t, max_ttl = 0.0, POLICY.ttl
    for dt, modes, ttl in plan:
        t += dt
        o = obs(t, *(serve(md, w) for md in modes), ttl=ttl)
        max_ttl = max(max_ttl, ttl)
        history.append((o, agreeing(o, wanted)))
        r = m.step(state, o, POLICY, at(t))
        state = r.state
        assert state.phase in (Phase.PROPAGATING, Phase.READY) or r.transition == "republish"
        if r.transition == "omnipresent":
            assert covered(history, wanted, max_ttl), (history, r.reason)
            break
        if r.transition == "republish":
            break


EVENTS = st.sampled_from(("ok", "fail"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 200), server_modes, EVENTS), min_size=5, max_size=80),
       st.booleans())
def test_no_install_of_a_key_without_two_ttls_of_its_record_everywhere(plan: list,
                                                                        roll: bool) -> None:
    """Drive the whole machine (including rollovers) with random observations and random
    success/failure of each action; every InstallCert must be backed by the oracle."""
    policy = m.Policy(ttl=60, key_lifetime=3000, renew_before=500, retire_grace=100)
    state = m.SlotState.new(SlotId("mail.example.test", 25, Algorithm.RSA2048), at(0))
    history: list[tuple[Observation, frozenset[str]]] = []
    n = 0
    t = 0.0
    for dt, modes, outcome in plan:
        t += dt
        served_wanted = sorted(state.wanted()) or []
        o = obs(t, *(serve(md, served_wanted) for md in modes), ttl=60)
        history.append((o, state.wanted()))
        if roll and state.phase == Phase.ACTIVE:
            state = m.request_roll(state)
        for _ in range(8):  # a run: act until the machine waits
            r = m.step(state, o, policy, at(t))
            state, a = r.state, r.action
            if a is None:
                break
            if isinstance(a, m.InstallCert):
                key = state.key_by_id(a.key_id)
                assert key is not None
                rec = state.record_for(a.key_id)
                assert rec is not None and rec.state == m.RecordState.OMNIPRESENT
                assert all(key.rdata in ans.records and ans.ok for ans in o.answers)
                # the oracle: some 2 x TTL window of history where every server served it
                times = [h.at for h, _ in history
                         if all(ans.ok and key.rdata in ans.records for ans in h.answers)]
                assert times and (times[-1] - times[0]) >= timedelta(seconds=120)
            ev: m.Event
            if isinstance(a, m.StageKey):
                n += 1
                ev = m.KeyStaged(at(t), a.key_id, a.role, spki(n))
            elif isinstance(a, m.InspectLive):
                ev = m.LiveSeen(at(t), frozenset({LIVE}))
            elif isinstance(a, m.Publish):
                ev = m.Published(at(t))
            elif isinstance(a, m.OrderCert):
                ev = (m.CertIssued(at(t), m.CertInfo(a.key_id, "1", at(t + 2000), at(t), "c"))
                      if outcome == "ok" else m.Failed(at(t), "CA down"))
            elif isinstance(a, m.InstallCert):
                ev = m.Installed(at(t)) if outcome == "ok" else m.Failed(at(t), "reload failed")
            elif isinstance(a, m.ProbeLive):
                ev = m.ProbeOk(at(t)) if outcome == "ok" else m.Failed(at(t), "mismatch")
            elif isinstance(a, m.Rollback):
                ev = m.RolledBack(at(t))
            elif isinstance(a, m.DropKey):
                ev = m.KeyDropped(at(t), a.key_id)
            else:
                raise AssertionError(a)
            state = m.apply(state, ev, policy, at(t))
            # until our first certificate is in service, the key the server presented stays
            if state.installed is None and state.submitted_at is not None:
                assert LIVE in state.wanted()
            # the installed key's record is never withdrawn
            if state.installed is not None and state.phase != Phase.ROLLING_BACK:
                installed_key = state.key_by_id(state.installed.key_id)
                if installed_key is not None:
                    assert installed_key.rdata in state.wanted()
