"""The real Engine, machine, schemes and state store over in-memory edges (tests/engine_fakes.py):
both schemes end to end in seconds, under a monitor that checks at every 0.25 s of fake time and
at every install that the served chain matches what every (lagging) nameserver serves.

Also: `plan` and `run` are one loop — run does exactly what plan said, action by action.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from engine_fakes import World, build_world

from rollover.dane import tlsa
from rollover.monitor import report

DIGEST = re.compile(r"[0-9a-f]{64}|<[a-z]+ [a-z0-9-]+ key: known once generated>")


def _run(world: World, **kw: object) -> None:
    reports = world.engine.run(wait=True, max_wait=7 * 86400, **kw)  # type: ignore[arg-type]
    assert not [r.error for r in reports if r.error], [r.reason for r in reports]


def _slot_state(world: World) -> dict:
    doc = world.engine.edges.store.load()
    assert doc is not None
    return next(iter(doc["slots"].values()))


@pytest.mark.parametrize("scheme", ["current+next", "current+issuer"])
def test_bootstrap_and_two_rolls_never_mismatch(tmp_path: Path, scheme: str) -> None:
    world = build_world(tmp_path, scheme=scheme)
    _run(world)
    s = _slot_state(world)
    assert s["phase"] == "active"
    first = next(k for k in s["keys"] if k["role"] == "current")
    _run(world, roll=True)
    s = _slot_state(world)
    second = next(k for k in s["keys"] if k["role"] == "current")
    assert second["key_id"] != first["key_id"]
    if scheme == "current+issuer":
        old_root = tlsa.tlsa_record(world.ca.root.cert, 2, 1, 1).to_text()
        world.ca.change_ca()  # a CA change before the next roll
        assert tlsa.tlsa_record(world.ca.root.cert, 2, 1, 1).to_text() != old_root
    _run(world, roll=True)
    s = _slot_state(world)
    third = next(k for k in s["keys"] if k["role"] == "current")
    served = world.zone.current(world.owner())
    presented = next(iter(world.installer.serving.values()))
    assert tlsa.spki_sha256_hex(presented[0]) == third["spki_sha256"]
    ours = {r["rdata"] for r in s["records"] if r["state"] in ("rumoured", "omnipresent")}
    assert served == ours  # the records are exactly ours: nothing left behind
    if scheme == "current+next":
        assert len(served) == 2 and all(r.startswith("3 1 1 ") for r in served)
    else:
        root = tlsa.tlsa_record(world.ca.root.cert, 2, 1, 1).to_text()
        assert served == {root, f"3 1 1 {third['spki_sha256']}"}
        assert s["installed"]["issuers"] == [root]
    assert world.violations == [], world.violations[:3]
    assert world.samples > 100


def test_current_issuer_installs_a_new_key_under_the_issuer_record(tmp_path: Path) -> None:
    """The how-to's trade-off: under current+issuer a new key goes into service covered by the
    omnipresent 2 1 1, before its own 3 1 1 is published; under current+next only once its own
    3 1 1 is omnipresent."""
    for scheme in ("current+next", "current+issuer"):
        world = build_world(tmp_path / scheme, scheme=scheme)
        seen: list[frozenset[str]] = []
        watch = world.installer.on_install

        def note(w: World = world, s: list[frozenset[str]] = seen, watch=watch) -> None:
            s.append(w.zone.current(w.owner()))
            watch()

        world.installer.on_install = note
        _run(world)
        _run(world, roll=True)
        s = _slot_state(world)
        new = f"3 1 1 {next(k for k in s['keys'] if k['role'] == 'current')['spki_sha256']}"
        at_install = seen[-1]
        if scheme == "current+next":
            assert new in at_install
        else:
            root = tlsa.tlsa_record(world.ca.root.cert, 2, 1, 1).to_text()
            assert new not in at_install and root in at_install
        assert world.violations == []


def _norm(lines: list[str]) -> list[str]:
    return [DIGEST.sub("<digest>", ln.removeprefix("would ")) for ln in lines]


@pytest.mark.parametrize("scheme", ["current+next", "current+issuer"])
def test_run_does_exactly_what_plan_said(tmp_path: Path, scheme: str) -> None:
    world = build_world(tmp_path, scheme=scheme)
    for _ in range(12):  # from a new slot through every phase the plan can see
        before = world.zone.changes, world.engine.edges.store.load()
        planned = world.engine.plan()
        assert (world.zone.changes, world.engine.edges.store.load()) == before  # plan acts not
        done = world.engine.run()
        for p, r in zip(planned, done, strict=True):
            assert p.error is None and r.error is None, (p.error, r.error)
            said = _norm(p.done)
            did = _norm(r.done)
            if (said and "depends on" in said[-1]) or (said and "decides the rest" in said[-1]):
                # plan stops where the outcome decides the rest; run did that action first
                assert did[: len(said)][:-1] == said[:-1]
                assert said[-1].startswith(did[len(said) - 1])
            else:
                assert did == said, (said, did)
        world.clock.sleep(200)
    assert world.violations == []


def test_plan_never_shows_an_invented_digest(tmp_path: Path) -> None:
    world = build_world(tmp_path)
    (report,) = world.engine.plan()
    text = "\n".join(report.done)
    assert "known once generated" in text
    assert not re.search(r"3 1 1 [0-9a-f]{64}", text)


def test_one_config_mixes_both_schemes_with_two_algorithms(tmp_path: Path) -> None:
    hosts = ("mx1.example.test", "mx2.example.test")
    world = build_world(tmp_path, hosts=hosts, algorithms=("ecdsa-p256", "rsa2048"),
                        schemes={"mx1.example.test": "current+next",
                                 "mx2.example.test": "current+issuer"})
    _run(world)
    _run(world, roll=True)
    doc = world.engine.edges.store.load()
    assert doc is not None and len(doc["slots"]) == 4
    assert {s["phase"] for s in doc["slots"].values()} == {"active"}
    root = tlsa.tlsa_record(world.ca.root.cert, 2, 1, 1).to_text()
    mx1, mx2 = (world.zone.current(world.owner(h)) for h in hosts)
    assert len(mx1) == 4 and all(r.startswith("3 1 1 ") for r in mx1)  # 2 algorithms x 2
    assert root in mx2 and len(mx2) == 3  # 2 algorithms' current keys + the root
    assert world.violations == []
    # status names each issuer record: which certificate, at which depth of the served chain
    shown = report.text(world.engine.status(observe=False), world.clock.now())
    assert "(root O = Rollover Test, CN = Fake Root 0 (depth 2))" in shown


@pytest.mark.parametrize("choice", ["intermediate", "pin-middle"])
def test_current_issuer_pins_an_intermediate_of_a_longer_chain(tmp_path: Path,
                                                               choice: str) -> None:
    """root -> A -> B -> leaf. `issuer: intermediate` pins B (the leaf's issuer); an explicit
    pin of A is published from the start and the chain is served up to A."""

    def pin_a(ca: object) -> list[str]:
        return [tlsa.tlsa_record(ca.chain_cas[0].cert, 2, 1, 1).to_text()]  # type: ignore[attr-defined]

    world = build_world(tmp_path, scheme="current+issuer", intermediates=2,
                        issuer=pin_a if choice == "pin-middle" else "intermediate")
    a, b = world.ca.chain_cas
    want = tlsa.tlsa_record((a if choice == "pin-middle" else b).cert, 2, 1, 1).to_text()
    _run(world)
    _run(world, roll=True)
    s = _slot_state(world)
    assert s["installed"]["issuers"] == [want]
    assert want in world.zone.current(world.owner())
    served = next(iter(world.installer.serving.values()))
    assert [c.subject for c in served[1:]] == [b.cert.subject, a.cert.subject]  # up to A
    assert world.violations == []


def test_a_desired_rrset_larger_than_max_records_is_refused_with_a_reason() -> None:
    from rollover.core import machine as m

    from machine_helpers import SLOT, at, spki

    st = m.SlotState.new(SLOT, at(0))
    policy = m.Policy(ttl=60, max_records=2, inspect_live=False)
    for n in (1, 2):
        r = m.step(st, None, policy, at(0))
        assert isinstance(r.action, m.StageKey)
        st = m.apply(r.state, m.KeyStaged(at(0), r.action.key_id, r.action.role, spki(n)),
                     policy, at(0))
    st.records.append(m.RecordInfo("3 1 1 " + "ab" * 32, None, m.RecordState.HIDDEN, at(0),
                                   m.RecordKind.ADOPTED))
    r = m.step(st, None, policy, at(0))
    assert r.action is None and "more than max_records 2" in r.reason


@pytest.mark.parametrize("jump", [3600, 86400])
def test_a_wall_clock_step_between_runs_never_shortens_the_two_ttl_wait(
        tmp_path: Path, jump: int) -> None:
    """cron runs `rollover run`; between two runs NTP steps the wall clock forward. The next run
    must not count the jump as time the servers agreed: the system's monotonic clock (the same
    for every process of one boot) says how much time really passed."""
    world = build_world(tmp_path, ttl=60)
    eng = world.engine

    def cron(seconds: float) -> None:
        world.clock.sleep(seconds)
        assert not [r.error for r in eng.run() if r.error]

    cron(0)  # publishes
    cron(5)  # every server agrees now: the 2 x TTL clock starts
    assert _slot_state(world)["agree_since"] is not None
    world.clock.step_wall(jump)
    cron(1)
    s = _slot_state(world)
    assert s["phase"] == "propagating" and "time says no" in eng.plan()[0].reason
    assert world.installer.serving == {}
    cron(2 * 60)  # now 2 x TTL really passed
    cron(1)
    assert _slot_state(world)["phase"] in ("ready", "issuing", "installing", "verifying",
                                           "active", "retiring")
    assert world.violations == []




def test_the_slots_of_one_owner_change_its_rrset_in_one_update(tmp_path: Path) -> None:
    """Two algorithms share `_25._tcp.HOST`: their records go out together. Two updates would
    leave a moment with one slot's records and not the other's (its key in service unmatched)."""
    world = build_world(tmp_path, algorithms=("ecdsa-p256", "rsa2048"))
    world.engine.run()
    history = world.zone.history[world.owner()]
    assert len(history) == 1 and len(history[0][1]) == 4
    _run(world)
    _run(world, roll=True)
    changes = [rrset for _t, rrset in world.zone.history[world.owner()]]
    # every change kept both algorithms' current keys: no update ever carried one slot alone
    for rrset in changes:
        assert len(rrset) >= 4, rrset
    assert world.violations == []
