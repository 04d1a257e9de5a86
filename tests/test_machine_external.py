"""The machine with an external certificate source (certbot, files): the source decides the key.

A same-key renewal goes in without a TLSA change; a new key under current+next has its 3 1 1
published and omnipresent for 2 x TTL before its certificate is installed; under current+issuer
the omnipresent 2 1 1 covers it at once; waiting for the source is not a failure (no backoff).
"""

from __future__ import annotations

from dataclasses import replace

from rollover.core import machine as m
from rollover.core.machine import KeyRole, Phase

from machine_helpers import POLICY, SLOT, at, everywhere, spki

ISSUER = "2 1 1 " + "a1" * 32
CERTBOT = replace(POLICY, external_source="certbot")  # ttl 60: 2 x TTL = 120 s


def cert(key_id: str, serial: str, t: float, issuers: tuple[str, ...] = ()) -> m.CertInfo:
    return m.CertInfo(key_id, serial, at(t + 90 * 86400), at(t), f"certs/{serial}.pem",
                      issuers=issuers)


def run(st: m.SlotState, t: float, policy: m.Policy, served: list[str] | None = None,
        taken: m.Event | None = None) -> tuple[m.SlotState, list[m.Action], m.StepResult]:
    """One `rollover run` at time t: every server serves `served` (default: what is wanted);
    TakeCert is answered with `taken` (or: nothing new), every other action succeeds."""
    actions: list[m.Action] = []
    for _ in range(20):
        records = sorted(st.wanted()) if served is None else served
        r = m.step(st, everywhere(t, records), policy, at(t))
        st = r.state
        if r.action is None:
            if r.wake_at is not None and r.wake_at <= at(t):
                continue
            return st, actions, r
        actions.append(r.action)
        a = r.action
        ev: m.Event
        if isinstance(a, m.TakeCert):
            ev, taken = taken or m.CertAwaited(at(t)), None
        elif isinstance(a, m.InspectLive):
            ev = m.LiveSeen(at(t))
        elif isinstance(a, m.Publish):
            ev = m.Published(at(t))
        elif isinstance(a, m.InstallCert):
            ev = m.Installed(at(t))
        elif isinstance(a, m.ProbeLive):
            ev = m.ProbeOk(at(t))
        elif isinstance(a, m.DropKey):
            ev = m.KeyDropped(at(t), a.key_id)
        else:
            raise AssertionError(a)
        st = m.apply(st, ev, policy, at(t))
    raise AssertionError("no wait within 20 steps")


def bootstrap(policy: m.Policy) -> m.SlotState:
    st = m.SlotState.new(SLOT, at(0))
    st, acts, r = run(st, 0, policy)
    assert [type(a) for a in acts] == [m.TakeCert]  # no key of our own is ever generated
    assert r.reason == "waiting: certbot has not issued a certificate for mail.example.test yet"
    assert r.wake_at is None and st.failures == 0 and st.retry_at is None
    first = m.CertTaken(at(10), "k1", spki(1), cert("k1", "01", 10, (ISSUER,)))
    st, acts, r = run(m.source_changed(st), 10, policy, taken=first)  # the hook ran
    assert isinstance(acts[0], m.TakeCert) and isinstance(acts[-1], m.Publish)
    assert st.phase == Phase.PROPAGATING and st.pending is not None
    assert not any(isinstance(a, m.StageKey) for a in acts)
    st, acts, _ = run(st, 200, policy)
    assert [type(a) for a in acts][:2] == [m.InstallCert, m.ProbeLive]
    if policy.scheme == "current+issuer":  # the chain's 2 1 1 goes out after the install
        st, acts, _ = run(st, 400, policy)
    assert st.phase == Phase.ACTIVE and st.installed and st.installed.key_id == "k1"
    return st


def test_bootstrap_takes_the_sources_key_and_never_stages_a_next_key() -> None:
    st = bootstrap(CERTBOT)
    assert [k.key_id for k in st.keys] == ["k1"] and st.key(KeyRole.NEXT) is None
    assert st.wanted() == {f"3 1 1 {spki(1)}"}


def test_same_key_renewal_installs_without_a_tlsa_change() -> None:
    st = bootstrap(CERTBOT)
    before = st.wanted()
    renewed = m.CertTaken(at(500), "k1", spki(1), cert("k1", "02", 500))
    st, acts, _ = run(m.source_changed(st), 500, CERTBOT, taken=renewed)
    assert [type(a) for a in acts] == [m.TakeCert, m.InstallCert, m.ProbeLive]
    assert st.installed is not None and st.installed.serial == "02"
    assert st.wanted() == before and st.phase == Phase.ACTIVE


def test_new_key_under_current_next_waits_two_ttls_of_its_own_record() -> None:
    st = bootstrap(CERTBOT)
    new = m.CertTaken(at(500), "k2", spki(2), cert("k2", "03", 500))
    st, acts, r = run(m.source_changed(st), 500, CERTBOT, taken=new)
    assert [type(a) for a in acts] == [m.TakeCert, m.Publish]
    publish = acts[1]
    assert isinstance(publish, m.Publish)
    assert publish.add == {f"3 1 1 {spki(1)}", f"3 1 1 {spki(2)}"} and not publish.remove
    assert "certbot made a new key (k2)" in r.reason or st.phase == Phase.PROPAGATING
    # one second short of 2 x TTL: the old certificate stays
    st, acts, r = run(st, 619, CERTBOT)
    assert acts == [] and st.installed and st.installed.key_id == "k1"
    assert r.reason.startswith("time says no: 1s left of 2 x TTL 60s")
    st, acts, _ = run(st, 621, CERTBOT)
    assert [type(a) for a in acts][:2] == [m.InstallCert, m.ProbeLive]
    assert st.key(KeyRole.CURRENT).key_id == "k2"  # type: ignore[union-attr]
    assert st.phase == Phase.RETIRING and st.key(KeyRole.NEXT) is None
    st, acts, _ = run(st, 621 + 700, CERTBOT)  # retire_grace 600 s: the old record goes
    assert st.wanted() == {f"3 1 1 {spki(2)}"}
    st, acts, _ = run(st, 621 + 900, CERTBOT)  # withdrawn everywhere: our copy of k1 goes
    assert any(isinstance(a, m.DropKey) and a.key_id == "k1" for a in acts)
    assert [k.key_id for k in st.keys] == ["k2"]


def test_new_key_under_current_issuer_goes_in_under_the_issuer_record() -> None:
    policy = replace(CERTBOT, scheme="current+issuer")
    st = bootstrap(policy)
    assert st.wanted() == {f"3 1 1 {spki(1)}", ISSUER}
    new = m.CertTaken(at(500), "k2", spki(2), cert("k2", "03", 500, (ISSUER,)))
    st, acts, _ = run(m.source_changed(st), 500, policy, taken=new)
    assert [type(a) for a in acts][:3] == [m.TakeCert, m.InstallCert, m.ProbeLive]
    assert st.installed and st.installed.key_id == "k2"


def test_renewal_due_waits_for_certbot_without_backoff() -> None:
    st = bootstrap(CERTBOT)
    due = 90 * 86400 - POLICY.renew_before + 100
    st, acts, r = run(st, due, CERTBOT)
    assert [type(a) for a in acts] == [m.TakeCert]
    assert st.phase == Phase.ISSUING
    assert r.reason == "waiting: certbot has not renewed mail.example.test yet"
    for later in (due + 3600, due + 7200, due + 86400):  # hours go by: still no backoff
        st, acts, r = run(st, later, CERTBOT)
        assert [type(a) for a in acts] == [m.TakeCert]
        assert st.failures == 0 and st.retry_at is None
    st, acts, r = run(st, due + 86400 + 1, CERTBOT)
    assert acts == []  # looked less than a poll interval ago
    problem = m.CertAwaited(at(due + 90000), "live/mx is being updated")
    st, _, r = run(st, due + 90000, CERTBOT, taken=problem)
    assert r.reason.endswith("yet (live/mx is being updated)")
    renewed = m.CertTaken(at(due + 99999), "k1", spki(1), cert("k1", "05", due + 99999))
    st, acts, _ = run(st, due + 99999, CERTBOT, taken=renewed)
    assert st.phase == Phase.ACTIVE and st.installed and st.installed.serial == "05"
    assert st.last_error is None


def test_roll_request_does_not_invent_a_key() -> None:
    st = m.request_roll(bootstrap(CERTBOT))
    st, acts, r = run(st, 1000, CERTBOT)
    assert all(isinstance(a, m.TakeCert) for a in acts)
    assert "certbot decides the key (--roll: renew it with a new key there)" in r.reason
