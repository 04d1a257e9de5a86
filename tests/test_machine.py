"""The transitions table, one guard at a time: every move and every refusal with its reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from rollover.core import machine as m
from rollover.core.machine import KeyRole, Phase, RecordState

from machine_helpers import (
    POLICY,
    SLOT,
    at,
    drive_to_propagating,
    everywhere,
    obs,
    rdatas,
    spki,
)

TTL = POLICY.ttl


def settle(st: m.SlotState, t: float, policy: m.Policy = POLICY) -> tuple[m.SlotState, float]:
    """Feed agreeing observations until the records are omnipresent; returns (state, time)."""
    wanted = st.wanted()
    served = wanted
    r = m.step(st, everywhere(t, served), policy, at(t))
    t2 = t + 2 * max(TTL, policy.ttl) + 1
    r = m.step(r.state, everywhere(t2, served), policy, at(t2))
    assert r.transition in ("omnipresent", "settled"), r.reason
    return r.state, t2


def cert(key_id: str, t: float, days: int = 90) -> m.CertInfo:
    return m.CertInfo(key_id, f"serial-{key_id}", at(t) + timedelta(days=days), at(t),
                      f"certs/{key_id}.pem")


def install(st: m.SlotState, t: float, policy: m.Policy = POLICY) -> m.SlotState:
    """From READY/ACTIVE-with-target: order -> issued -> install -> probe ok."""
    r = m.step(st, everywhere(t, st.wanted()), policy, at(t))
    assert isinstance(r.action, m.OrderCert), r.reason
    st = m.apply(r.state, m.CertIssued(at(t), cert(r.action.key_id, t)), policy, at(t))
    r = m.step(st, everywhere(t, st.wanted()), policy, at(t))
    assert isinstance(r.action, m.InstallCert), r.reason
    st = m.apply(r.state, m.Installed(at(t)), policy, at(t))
    r = m.step(st, None, policy, at(t))
    assert isinstance(r.action, m.ProbeLive)
    return m.apply(r.state, m.ProbeOk(at(t)), policy, at(t))


def active(t: float = 0) -> tuple[m.SlotState, float]:
    st = drive_to_propagating(t=t)
    st, t = settle(st, t + 1)
    st = m.step(st, None, POLICY, at(t)).state if st.phase != Phase.READY else st
    return install(st, t), t


# --- the table itself --------------------------------------------------------------------------


def test_every_transition_names_real_phases_and_is_unique() -> None:
    names = [t.name for t in m.TRANSITIONS]
    assert len(names) == len(set(names))
    for t in m.TRANSITIONS:
        assert t.guard and t.action
        assert all(isinstance(p, Phase) for p in t.source)
    assert set(m._HANDLERS) == set(Phase)


def test_transitions_table_renders_every_row() -> None:
    text = m.transitions_table()
    for t in m.TRANSITIONS:
        assert t.name in text


def test_full_cycle_uses_transitions_from_the_table() -> None:
    seen: set[str] = set()
    st = m.SlotState.new(SLOT, at(0))
    t, n = 0.0, 0
    rolled = False
    for _ in range(200):
        r = m.step(st, everywhere(t, st.wanted() or ()), POLICY, at(t))
        if r.transition:
            assert r.transition in m.TRANSITION_BY_NAME, r.transition
            seen.add(r.transition)
        st, a = r.state, r.action
        if isinstance(a, m.StageKey):
            n += 1
            st = m.apply(st, m.KeyStaged(at(t), a.key_id, a.role, spki(n)), POLICY, at(t))
        elif isinstance(a, m.InspectLive):
            st = m.apply(st, m.LiveSeen(at(t)), POLICY, at(t))
        elif isinstance(a, m.Publish):
            st = m.apply(st, m.Published(at(t)), POLICY, at(t))
        elif isinstance(a, m.OrderCert):
            st = m.apply(st, m.CertIssued(at(t), cert(a.key_id, t)), POLICY, at(t))
        elif isinstance(a, m.InstallCert):
            st = m.apply(st, m.Installed(at(t)), POLICY, at(t))
        elif isinstance(a, m.ProbeLive):
            st = m.apply(st, m.ProbeOk(at(t)), POLICY, at(t))
        elif isinstance(a, m.DropKey):
            st = m.apply(st, m.KeyDropped(at(t), a.key_id), POLICY, at(t))
            break
        elif a is None:
            if st.phase == Phase.ACTIVE and not rolled:
                st = m.request_roll(st)
                rolled = True
            t = max(t + 1, (r.wake_at - at(0)).total_seconds() if r.wake_at else t + 1)
    # "issued" is a move made by an event, not by a step decision
    assert {"stage-current", "stage-next", "inspect-live", "publish", "omnipresent",
            "order-first", "issued"} - seen == {"issued"}
    assert {"install", "probe", "roll", "retire", "settled", "drop-key"} <= seen
    assert st.phase == Phase.ACTIVE
    assert [k.role for k in st.keys] == [KeyRole.CURRENT, KeyRole.NEXT]
    assert len(st.wanted()) == 2 and st.installed is not None
    assert st.installed.key_id == st.key(KeyRole.CURRENT).key_id  # type: ignore[union-attr]


# --- bootstrap and propagation -----------------------------------------------------------------


def test_bootstrap_stages_current_then_next_then_publishes_both() -> None:
    st = m.SlotState.new(SLOT, at(0))
    r = m.step(st, None, POLICY, at(0))
    assert isinstance(r.action, m.StageKey) and r.action.role == KeyRole.CURRENT
    st = m.apply(r.state, m.KeyStaged(at(0), r.action.key_id, KeyRole.CURRENT, spki(1)), POLICY,
                 at(0))
    r = m.step(st, None, POLICY, at(0))
    assert isinstance(r.action, m.StageKey) and r.action.role == KeyRole.NEXT
    assert r.action.key_id != st.keys[0].key_id
    st = m.apply(r.state, m.KeyStaged(at(0), r.action.key_id, KeyRole.NEXT, spki(2)), POLICY, at(0))
    r = m.step(st, None, POLICY, at(0))
    assert isinstance(r.action, m.InspectLive)
    st = m.apply(r.state, m.LiveSeen(at(0)), POLICY, at(0))
    r = m.step(st, None, POLICY, at(0))
    assert isinstance(r.action, m.Publish)
    assert r.action.add == {f"3 1 1 {spki(1)}", f"3 1 1 {spki(2)}"}
    assert r.action.owner == "_25._tcp.mail.example.test." and r.action.ttl == TTL
    st = m.apply(r.state, m.Published(at(1)), POLICY, at(1))
    assert st.phase == Phase.PROPAGATING
    assert {r.state for r in st.records} == {RecordState.RUMOURED}


def test_restaging_after_crash_reuses_the_same_key_id() -> None:
    st = m.SlotState.new(SLOT, at(0))
    first = m.step(st, None, POLICY, at(0)).action
    again = m.step(st, None, POLICY, at(5)).action
    assert first == again  # the engine finds the key file of a crashed attempt by this id


def test_lagging_secondary_blocks_and_is_named() -> None:
    st = drive_to_propagating()
    new = rdatas(st)
    r = m.step(st, obs(1, new, new, ["3 1 1 " + "ab" * 32]), POLICY, at(1))
    assert r.action is None and r.state.phase == Phase.PROPAGATING
    assert "ns3.example.test. (127.0.0.13)" in r.reason
    assert r.wake_at is not None and r.wake_at > at(1)


def test_timeout_blocks_and_is_named() -> None:
    st = drive_to_propagating()
    new = rdatas(st)
    r = m.step(st, obs(1, new, None, new), POLICY, at(1))
    assert r.action is None and "ns2.example.test. (127.0.0.12)" in r.reason
    assert "timed out" in r.reason


def test_time_says_no_until_two_ttls_of_agreement() -> None:
    st = drive_to_propagating()
    new = rdatas(st)
    r = m.step(st, everywhere(10, new), POLICY, at(10))
    assert r.reason.startswith("time says no") and "2 x TTL 60s" in r.reason
    assert r.wake_at == at(10 + 2 * TTL)
    r = m.step(r.state, everywhere(10 + 2 * TTL - 1, new), POLICY, at(10 + 2 * TTL - 1))
    assert r.state.phase == Phase.PROPAGATING and "1s left" in r.reason
    r = m.step(r.state, everywhere(10 + 2 * TTL, new), POLICY, at(10 + 2 * TTL))
    assert r.state.phase == Phase.READY and r.transition == "omnipresent"
    assert {x.state for x in r.state.records} == {RecordState.OMNIPRESENT}


def test_disagreement_restarts_the_clock() -> None:
    st = drive_to_propagating()
    new = rdatas(st)
    st = m.step(st, everywhere(10, new), POLICY, at(10)).state
    st = m.step(st, obs(100, new, new, []), POLICY, at(100)).state  # ns3 flaps
    assert st.agree_since is None
    r = m.step(st, everywhere(130, new), POLICY, at(130))
    assert r.state.agree_since == at(130)
    r = m.step(r.state, everywhere(10 + 2 * TTL + 5, new), POLICY, at(10 + 2 * TTL + 5))
    assert r.state.phase == Phase.PROPAGATING  # 2 x TTL counted from 130, not from 10


def test_a_nameserver_added_mid_wait_restarts_the_clock() -> None:
    st = drive_to_propagating()
    new = rdatas(st)
    st = m.step(st, obs(10, new, new), POLICY, at(10)).state  # ns1, ns2: the zone's NS set
    assert st.agree_since == at(10)
    r = m.step(st, everywhere(100, new), POLICY, at(100))  # ns3 appears, already agreeing
    assert r.state.agree_since == at(100)  # what ns3 served before 100 nobody saw
    r = m.step(r.state, everywhere(10 + 2 * TTL, new), POLICY, at(10 + 2 * TTL))
    assert r.state.phase == Phase.PROPAGATING
    r = m.step(r.state, everywhere(100 + 2 * TTL, new), POLICY, at(100 + 2 * TTL))
    assert r.state.phase == Phase.READY


def test_served_ttl_larger_than_configured_is_what_counts() -> None:
    st = drive_to_propagating()
    new = rdatas(st)
    st = m.step(st, everywhere(0, new, ttl=300), POLICY, at(0)).state
    r = m.step(st, everywhere(2 * TTL + 1, new, ttl=300), POLICY, at(2 * TTL + 1))
    assert r.state.phase == Phase.PROPAGATING and "2 x TTL 300s" in r.reason
    r = m.step(r.state, everywhere(600, new, ttl=300), POLICY, at(600))
    assert r.state.phase == Phase.READY


def test_old_rrset_ttl_seen_before_the_change_still_counts() -> None:
    old = ["3 1 1 " + "cd" * 32]
    st = drive_to_propagating(before=everywhere(-5, old, ttl=3600))
    new = rdatas(st)
    st = m.step(st, everywhere(0, new + old, ttl=60), POLICY, at(0)).state
    r = m.step(st, everywhere(200, new + old, ttl=60), POLICY, at(200))
    assert r.state.phase == Phase.PROPAGATING and "3600" in r.reason


def test_new_owner_waits_two_negative_ttls() -> None:
    st = drive_to_propagating(before=obs(-1, [], [], [], neg=500))
    assert st.owner_was_empty is True
    new = rdatas(st)
    st = m.step(st, everywhere(0, new, neg=500), POLICY, at(0)).state
    r = m.step(st, everywhere(2 * TTL + 1, new, neg=500), POLICY, at(2 * TTL + 1))
    assert r.state.phase == Phase.PROPAGATING and "negative TTL 500s" in r.reason
    r = m.step(r.state, everywhere(1000, new, neg=500), POLICY, at(1000))
    assert r.state.phase == Phase.READY


def test_existing_owner_does_not_wait_for_negative_ttl() -> None:
    old = ["3 1 1 " + "cd" * 32]
    st = drive_to_propagating(before=everywhere(-1, old, neg=500))
    assert st.owner_was_empty is False
    new = rdatas(st)
    st = m.step(st, everywhere(0, new + old, neg=500), POLICY, at(0)).state
    r = m.step(st, everywhere(2 * TTL, new + old, neg=500), POLICY, at(2 * TTL))
    assert r.state.phase == Phase.READY


def test_observation_older_than_the_submission_is_ignored() -> None:
    st = drive_to_propagating(t=100)
    new = rdatas(st)
    r = m.step(st, everywhere(50, new), POLICY, at(300))
    assert r.state.agree_since is None and r.state.phase == Phase.PROPAGATING


def test_min_wait_is_honoured() -> None:
    policy = m.Policy(ttl=60, min_wait=1000)
    st = drive_to_propagating(policy)
    new = rdatas(st)
    st = m.step(st, everywhere(0, new), policy, at(0)).state
    r = m.step(st, everywhere(500, new), policy, at(500))
    assert r.state.phase == Phase.PROPAGATING and "min_wait 1000s" in r.reason


def test_records_lost_everywhere_are_resubmitted() -> None:
    st = drive_to_propagating()
    r = m.step(st, everywhere(2 * TTL + 60, []), POLICY, at(2 * TTL + 60))
    assert isinstance(r.action, m.Publish) and r.transition == "republish"


# --- certificates ------------------------------------------------------------------------------


def test_ready_without_certificate_source_waits_with_reason() -> None:
    policy = m.Policy(ttl=60, certificates=False)
    st = drive_to_propagating(policy)
    st, t = settle(st, 1, policy)
    r = m.step(st, everywhere(t, st.wanted()), policy, at(t + 1))
    assert r.action is None and r.wake_at is None and "no certificate source" in r.reason


def test_ready_orders_for_the_current_key() -> None:
    st, t = settle(drive_to_propagating(), 1)
    r = m.step(st, everywhere(t, st.wanted()), POLICY, at(t))
    assert isinstance(r.action, m.OrderCert)
    assert r.action.key_id == r.state.key(KeyRole.CURRENT).key_id  # type: ignore[union-attr]
    assert r.transition == "order-first"


def test_issuing_refuses_a_key_whose_record_is_not_omnipresent() -> None:
    st = drive_to_propagating()
    st.phase = Phase.ISSUING
    st.target_key = st.key(KeyRole.CURRENT).key_id  # type: ignore[union-attr]
    r = m.step(st, None, POLICY, at(1))
    assert r.action is None and r.reason.startswith("policy says no")
    assert "rumoured, not omnipresent" in r.reason


def test_install_waits_while_a_server_lacks_the_record() -> None:
    st, t = settle(drive_to_propagating(), 1)
    r = m.step(st, everywhere(t, st.wanted()), POLICY, at(t))
    assert isinstance(r.action, m.OrderCert)
    st = m.apply(r.state, m.CertIssued(at(t), cert(r.action.key_id, t)), POLICY, at(t))
    have = rdatas(st)
    r = m.step(st, obs(t + 1, have, have, have[1:]), POLICY, at(t + 1))
    assert r.action is None and r.reason.startswith("dns says no")
    assert "127.0.0.13" in r.reason
    r = m.step(r.state, obs(t + 2, have, None, have), POLICY, at(t + 2))
    assert r.action is None and "127.0.0.12" in r.reason
    r = m.step(r.state, everywhere(t + 3, have), POLICY, at(t + 3))
    assert isinstance(r.action, m.InstallCert)


def test_first_install_then_probe_gives_active() -> None:
    st, _ = active()
    assert st.phase == Phase.ACTIVE and st.installed is not None
    assert st.installed.key_id == st.key(KeyRole.CURRENT).key_id  # type: ignore[union-attr]
    assert st.key(KeyRole.CURRENT).activated is not None  # type: ignore[union-attr]


def test_order_failure_backs_off_and_doubles() -> None:
    st, t = settle(drive_to_propagating(), 1)
    r = m.step(st, None, POLICY, at(t))
    st = m.apply(r.state, m.Failed(at(t), "rateLimited: too many orders"), POLICY, at(t))
    assert st.phase == Phase.ISSUING and st.retry_at == at(t + 300)
    r = m.step(st, None, POLICY, at(t + 100))
    assert r.action is None and r.reason.startswith("backoff") and "rateLimited" in r.reason
    assert r.wake_at == at(t + 300)
    r = m.step(st, None, POLICY, at(t + 300))
    assert isinstance(r.action, m.OrderCert)
    st = m.apply(r.state, m.Failed(at(t + 300), "again"), POLICY, at(t + 300))
    assert st.retry_at == at(t + 300 + 600)


def test_install_failure_keeps_the_old_state_and_retries_later() -> None:
    st, t = settle(drive_to_propagating(), 1)
    r = m.step(st, None, POLICY, at(t))
    st = m.apply(r.state, m.CertIssued(at(t), cert(r.action.key_id, t)), POLICY, at(t))  # type: ignore[union-attr]
    st = m.apply(st, m.Failed(at(t), "reload failed"), POLICY, at(t))
    assert st.phase == Phase.INSTALLING and st.last_error == "reload failed"
    assert st.pending is not None and st.installed is None  # the issued cert is kept
    assert st.wanted() == frozenset(r.rdata for r in st.records)  # records untouched
    r = m.step(st, everywhere(t + 10, st.wanted()), POLICY, at(t + 10))
    assert r.action is None and r.reason.startswith("backoff") and r.wake_at == at(t + 300)
    r = m.step(st, everywhere(t + 300, st.wanted()), POLICY, at(t + 300))
    assert isinstance(r.action, m.InstallCert)  # the same certificate, no new order


def test_probe_failure_rolls_back_and_keeps_records() -> None:
    st, t = active()
    st = m.request_roll(st)
    before = st.wanted()
    r = m.step(st, everywhere(t, before), POLICY, at(t))
    assert isinstance(r.action, m.OrderCert)
    st = m.apply(r.state, m.CertIssued(at(t), cert(r.action.key_id, t)), POLICY, at(t))
    r = m.step(st, everywhere(t, before), POLICY, at(t))
    st = m.apply(r.state, m.Installed(at(t)), POLICY, at(t))
    st = m.apply(st, m.Failed(at(t), "127.0.0.25 presents the old key"), POLICY, at(t))
    assert st.phase == Phase.ROLLING_BACK
    r = m.step(st, None, POLICY, at(t))
    assert isinstance(r.action, m.Rollback)
    st = m.apply(r.state, m.RolledBack(at(t)), POLICY, at(t))
    assert st.phase == Phase.ACTIVE and st.wanted() == before
    assert st.key(KeyRole.NEXT) is not None and st.retry_at is not None


def test_no_order_while_a_nameserver_does_not_answer() -> None:
    st, t = active()
    st = m.request_roll(st)
    recs = list(st.wanted())
    r = m.step(st, obs(t, recs, None, recs), POLICY, at(t))  # ns2 times out
    assert r.action is None and r.reason.startswith("dns says no: ns2.example.test.")
    assert r.wake_at is not None
    r = m.step(r.state, everywhere(t + 60, recs), POLICY, at(t + 60))
    assert isinstance(r.action, m.OrderCert)  # back: the order goes out


def test_a_probe_failure_that_cannot_heal_rolls_back_first_then_stops() -> None:
    st, t = active()
    st = m.request_roll(st)
    before = st.wanted()
    r = m.step(st, everywhere(t, before), POLICY, at(t))
    st = m.apply(r.state, m.CertIssued(at(t), cert(r.action.key_id, t)), POLICY, at(t))  # type: ignore[union-attr]
    r = m.step(st, everywhere(t, before), POLICY, at(t))
    st = m.apply(r.state, m.Installed(at(t)), POLICY, at(t))
    st = m.apply(st, m.Failed(at(t), "192.0.2.26 kept a key never installed", stop=True),
                 POLICY, at(t))
    assert st.phase == Phase.ROLLING_BACK and st.stopped is not None
    r = m.step(st, None, POLICY, at(t))
    assert isinstance(r.action, m.Rollback)  # stopped, yet the previous certificate goes back
    st = m.apply(r.state, m.RolledBack(at(t)), POLICY, at(t))
    assert st.phase == Phase.ACTIVE and st.wanted() == before
    r = m.step(st, everywhere(t + 86400, before), POLICY, at(t + 86400))
    assert r.action is None and r.reason.startswith("stopped: 192.0.2.26")
    r = m.step(m.resume(st), everywhere(t + 86400, before), POLICY, at(t + 86400))
    assert r.action is not None and m.resume(st).failures == 0


# --- renewal, rollover, retirement -------------------------------------------------------------


def test_renewal_reuses_the_key_and_changes_no_record() -> None:
    st, _ = active()
    policy = replace(POLICY, key_lifetime=365 * 86400)  # renewal comes before key rollover
    assert st.installed is not None
    key = st.installed.key_id
    renew_at = st.installed.not_after - timedelta(seconds=policy.renew_before)
    due = (renew_at - at(0)).total_seconds()
    r = m.step(st, everywhere(due - 10, st.wanted()), policy, at(due - 10))
    assert r.action is None and "renewal at" in r.reason and r.wake_at == renew_at
    r = m.step(st, everywhere(due, st.wanted()), policy, at(due))
    assert isinstance(r.action, m.OrderCert) and r.action.key_id == key
    assert r.transition == "renew"


def test_ari_window_brings_renewal_forward() -> None:
    st, t = active()
    st.installed.renew_at = at(t + 1000)  # type: ignore[union-attr]
    r = m.step(st, everywhere(t + 1000, st.wanted()), POLICY, at(t + 1000))
    assert isinstance(r.action, m.OrderCert) and r.transition == "renew"


def test_roll_is_refused_while_next_record_not_omnipresent() -> None:
    st, t = active()
    nxt = st.record_for(st.key(KeyRole.NEXT).key_id)  # type: ignore[union-attr]
    nxt.state = RecordState.RUMOURED  # type: ignore[union-attr]
    st = m.request_roll(st)
    r = m.step(st, everywhere(t, st.wanted()), POLICY, at(t))
    assert r.action is None and "policy says no" in r.reason


def test_key_lifetime_triggers_roll_to_next_key() -> None:
    st, t = active()
    nxt = st.key(KeyRole.NEXT).key_id  # type: ignore[union-attr]
    t_roll = t + POLICY.key_lifetime
    r = m.step(st, everywhere(t_roll - 1, st.wanted()), POLICY, at(t_roll - 1))
    assert r.action is None
    r = m.step(st, everywhere(t_roll, st.wanted()), POLICY, at(t_roll))
    assert isinstance(r.action, m.OrderCert) and r.action.key_id == nxt and r.transition == "roll"


def test_retire_waits_for_grace_then_swaps_records() -> None:
    st, t = active()
    old_current = st.key(KeyRole.CURRENT)
    old_next = st.key(KeyRole.NEXT)
    st = install(m.request_roll(st), t)
    assert st.phase == Phase.RETIRING
    assert st.key(KeyRole.CURRENT).key_id == old_next.key_id  # type: ignore[union-attr]
    assert st.key(KeyRole.PREVIOUS).key_id == old_current.key_id  # type: ignore[union-attr]
    r = m.step(st, everywhere(t + 10, st.wanted()), POLICY, at(t + 10))
    assert r.action is None and r.reason.startswith("time says no: retire_grace")
    r = m.step(st, everywhere(t + 600, st.wanted()), POLICY, at(t + 600))
    assert isinstance(r.action, m.StageKey) and r.action.role == KeyRole.NEXT
    st = m.apply(r.state, m.KeyStaged(at(t + 600), r.action.key_id, KeyRole.NEXT, spki(9)), POLICY,
                 at(t + 600))
    r = m.step(st, None, POLICY, at(t + 600))
    assert isinstance(r.action, m.Publish)
    assert r.action.add == {f"3 1 1 {spki(9)}", old_next.rdata}  # type: ignore[union-attr]
    assert r.action.remove == {old_current.rdata}  # type: ignore[union-attr]
    # the provider failed (the engine saved the stepped state, not an outcome): the next run
    # decides the same retirement again instead of crashing on the spent retire_at
    again = m.step(r.state, None, POLICY, at(t + 900))
    assert isinstance(again.action, m.Publish) and again.action == r.action
    st = m.apply(r.state, m.Published(at(t + 601)), POLICY, at(t + 601))
    both = sorted(st.wanted())
    # while the old record is still served somewhere, nothing settles
    r = m.step(st, everywhere(t + 700, [*both, old_current.rdata]), POLICY, at(t + 700))  # type: ignore[union-attr]
    assert "still serves the withdrawn" in r.reason
    st, t2 = settle(r.state, t + 800)
    assert st.phase == Phase.ACTIVE
    r = m.step(st, everywhere(t2, both), POLICY, at(t2))
    assert isinstance(r.action, m.DropKey) and r.action.key_id == old_current.key_id  # type: ignore[union-attr]
    st = m.apply(r.state, m.KeyDropped(at(t2), r.action.key_id), POLICY, at(t2))
    assert st.key(KeyRole.PREVIOUS) is None


def test_state_round_trips_through_json() -> None:
    import json

    st, _ = active()
    st.observation = everywhere(5, st.wanted())
    text = json.dumps(m.slot_to_dict(st))
    assert m.slot_from_dict(json.loads(text)) == st


@pytest.mark.parametrize("phase", list(Phase))
def test_every_phase_has_a_handler_that_explains_itself(phase: Phase) -> None:
    assert phase in m._HANDLERS


# --- taking over a server that already presents a certificate --------------------------------


def test_the_key_in_service_is_published_with_ours_and_retired_after_our_install() -> None:
    """Publishing only our two records would make the certificate in service mismatch the
    moment TLSA appears: its 3 1 1 goes out too, and is retired like any old key."""
    live = "3 1 1 " + "aa" * 32
    st = drive_to_propagating(live=[live])
    assert live in st.wanted() and len(st.wanted()) == 3
    st, t = settle(st, 1)
    st = install(st, t)
    assert st.phase == Phase.RETIRING  # not straight to active: the adopted record must go
    r = m.step(st, everywhere(t + 1, st.wanted()), POLICY, at(t + 1))
    assert r.action is None and "retire_grace" in r.reason
    t2 = t + POLICY.retire_grace
    r = m.step(st, everywhere(t2, st.wanted()), POLICY, at(t2))
    assert isinstance(r.action, m.Publish) and r.action.remove == {live}
    assert len(r.action.add) == 2 and live not in r.action.add
    st = m.apply(r.state, m.Published(at(t2)), POLICY, at(t2))
    st, _ = settle(st, t2 + 1)
    assert st.phase == Phase.ACTIVE and live not in {x.rdata for x in st.records}
    assert [k.role for k in st.keys] == [KeyRole.CURRENT, KeyRole.NEXT]


def test_our_own_key_presented_is_not_adopted_twice() -> None:
    st = m.SlotState.new(SLOT, at(0))
    for n, role in ((1, KeyRole.CURRENT), (2, KeyRole.NEXT)):
        r = m.step(st, None, POLICY, at(0))
        st = m.apply(r.state, m.KeyStaged(at(0), r.action.key_id, role, spki(n)),  # type: ignore[union-attr]
                     POLICY, at(0))
    st = m.apply(st, m.LiveSeen(at(0), frozenset({f"3 1 1 {spki(1)}"})), POLICY, at(0))
    r = m.step(st, None, POLICY, at(0))
    assert isinstance(r.action, m.Publish) and len(r.action.add) == 2


# --- ARI (RFC 9773) ----------------------------------------------------------------------------


def test_ari_retry_after_asks_again_and_a_moved_window_renews_earlier() -> None:
    st, t = active()
    assert st.installed is not None
    st.installed.ari_retry_after = at(t + 3600)
    r = m.step(st, everywhere(t + 10, st.wanted()), POLICY, at(t + 10))
    assert r.action is None and r.wake_at == at(t + 3600)  # the earliest thing to do
    r = m.step(st, everywhere(t + 3600, st.wanted()), POLICY, at(t + 3600))
    assert isinstance(r.action, m.RefreshAri) and r.transition == "ari"
    # the CA moved the window (e.g. a mass revocation): renew at once
    st = m.apply(r.state, m.AriChecked(at(t + 3600), at(t + 3601), at(t + 7200)), POLICY,
                 at(t + 3600))
    assert st.installed is not None and st.installed.ari_retry_after == at(t + 7200)
    r = m.step(st, everywhere(t + 3601, st.wanted()), POLICY, at(t + 3601))
    assert isinstance(r.action, m.OrderCert) and r.transition == "renew"


def test_ari_without_an_answer_keeps_the_old_plan_and_stops_asking() -> None:
    st, t = active()
    assert st.installed is not None
    st.installed.ari_retry_after = at(t + 5)
    before = st.installed.renew_at
    st = m.apply(st, m.AriChecked(at(t + 5), None, None), POLICY, at(t + 5))
    assert st.installed is not None
    assert st.installed.renew_at == before and st.installed.ari_retry_after is None
    r = m.step(st, everywhere(t + 6, st.wanted()), POLICY, at(t + 6))
    assert r.action is None and r.wake_at is not None and r.wake_at > at(t + 86400)


def test_a_failed_look_at_the_server_never_publishes_blind() -> None:
    """Bootstrap: when the key in service cannot be seen, nothing is published; the look is
    retried after a poll interval and the reason names the address."""
    st = m.SlotState.new(SLOT, at(0))
    n = 0
    while True:
        r = m.step(st, None, POLICY, at(0))
        st = r.state
        if isinstance(r.action, m.StageKey):
            n += 1
            st = m.apply(st, m.KeyStaged(at(0), r.action.key_id, r.action.role, spki(n)),
                         POLICY, at(0))
            continue
        break
    assert isinstance(r.action, m.InspectLive)
    st = m.apply(st, m.LiveUnseen(at(0), "192.0.2.25:25: timed out"), POLICY, at(0))
    r = m.step(st, None, POLICY, at(1))
    assert r.action is None and "192.0.2.25:25: timed out" in r.reason
    assert "nothing is published" in r.reason and st.phase == Phase.NEW
    assert r.wake_at == at(0) + POLICY.poll
    r = m.step(r.state, None, POLICY, at(0) + POLICY.poll)
    assert isinstance(r.action, m.InspectLive)  # looks again, still does not publish
    st = m.apply(r.state, m.LiveSeen(at(40), frozenset({"3 1 1 " + "ab" * 32})), POLICY, at(40))
    r = m.step(st, None, POLICY, at(40))
    assert isinstance(r.action, m.Publish) and "3 1 1 " + "ab" * 32 in r.action.add
    # the operator's word (bootstrap: no-certificate) overrules a blocked look at once
    blocked = m.apply(st, m.LiveUnseen(at(40), "x"), POLICY, at(40))
    blocked.live_checked = False
    r = m.step(blocked, None, m.Policy(ttl=60, inspect_live=False), at(41))
    assert isinstance(r.action, m.Publish)


def test_an_error_retrying_cannot_heal_stops_the_slot_until_config_or_resume() -> None:
    st, t = active()
    st = m.apply(st, m.Stopped(at(t), "BADSIG: the secret is wrong"),
                 m.Policy(ttl=60, config_id="aaaa"), at(t))
    for policy in (m.Policy(ttl=60, config_id="aaaa"), m.Policy(ttl=60)):
        r = m.step(st, everywhere(t + 1, st.wanted()), policy, at(t + 86400 * 365))
        assert r.action is None and r.wake_at is None
        assert r.reason.startswith("stopped: BADSIG") and "--resume" in r.reason
    r = m.step(st, everywhere(t + 1, st.wanted()), m.Policy(ttl=60, config_id="bbbb"), at(t + 1))
    assert r.state.stopped is None  # the configuration changed: it tries again
    assert m.resume(st).stopped is None
