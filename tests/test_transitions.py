"""The machine is held to its table: every move `step` starts and every outcome `apply` records is a
row of TRANSITIONS (same name, a source and a target phase of that row), and every row is reached
by some sequence of random observations, outcomes and roll requests from a new slot.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollover.core import machine as m
from rollover.core.machine import Move, Phase
from rollover.model import Algorithm, SlotId

from machine_helpers import at, obs, spki

ROWS = {t.name: t for t in m.TRANSITIONS}
LIVE = "3 1 1 " + "dd" * 32
ISSUER_A = "2 1 1 " + "a1" * 32
ISSUER_B = "2 1 1 " + "b2" * 32
README = Path(__file__).resolve().parent.parent / "README.md"


def _policy(scheme: str, external: bool = False) -> m.Policy:
    return m.Policy(ttl=60, key_lifetime=3000, renew_before=500, retire_grace=100,
                    retry_base=50, scheme=scheme, external_source="certbot" if external else "")


def _serve(mode: str, wanted: list[str]) -> list[str] | None:
    return {"all": wanted, "none": [], "timeout": None, "partial": wanted[:1],
            "extra": [*wanted, "3 1 1 " + "ff" * 32]}[mode]


def walk(rng: random.Random, scheme: str, steps: int = 120,
         external: bool = False) -> list[tuple[Phase, Phase, Move]]:
    """One random life of a slot; returns every (from, to, move) the machine reported.
    `external`: the keys are certbot's (it renews when it likes, with the old or a new key)."""
    policy = _policy(scheme, external)
    state = m.SlotState.new(SlotId("mail.example.test", 25, Algorithm.RSA2048), at(0))
    moves: list[tuple[Phase, Phase, Move]] = []
    t, n = 0.0, 0
    for _ in range(steps):
        t += rng.choice((0, 1, 5, 30, 61, 121, 400, 1000))
        modes = [rng.choice(("all", "all", "all", "none", "timeout", "partial", "extra"))
                 for _ in range(3)]
        if rng.random() < 0.03:
            modes = ["none"] * 3  # someone deleted our records everywhere
        served = sorted(state.wanted())
        o = obs(t, *(_serve(md, served) for md in modes), ttl=60)
        if state.phase == Phase.ACTIVE and rng.random() < 0.3:
            state = m.request_roll(state)
        if state.stopped is not None and rng.random() < 0.5:
            state = m.resume(state)  # the operator fixed it: `run --resume`
        if external and rng.random() < 0.2:
            state = m.source_changed(state)  # certbot's deploy hook ran
        for _ in range(10):  # one run: act until the machine waits
            before = state.phase
            r = m.step(state, o, policy, at(t))
            state = r.state
            if r.action is None:
                if r.transition is not None:
                    moves.append((before, state.phase, r.transition))
                else:
                    assert state.phase == before, (before, state.phase, r.reason)
                if r.wake_at is None or r.wake_at > at(t):
                    break
                continue
            assert r.transition is not None, r
            moves.append((before, state.phase, r.transition))
            if isinstance(r.action, m.InstallCert):  # rule 1, whoever made the key
                assert state.pending is not None
                covering = policy.scheme_policy.covering(state, state.pending.key_id,
                                                         state.pending, policy.issuer_pins)
                assert any(rec.state == m.RecordState.OMNIPRESENT and rec.rdata in covering
                           for rec in state.records), (r.reason, state.records)
            ok = rng.random() < 0.8
            a = r.action
            ev: m.Event
            if isinstance(a, m.StageKey):
                n += 1
                ev = m.KeyStaged(at(t), a.key_id, a.role, spki(n))
            elif isinstance(a, m.InspectLive):
                ev = (m.LiveSeen(at(t), frozenset({LIVE}) if rng.random() < 0.5 else frozenset())
                      if ok else m.LiveUnseen(at(t), "192.0.2.25:25: timed out"))
            elif isinstance(a, m.Publish):
                ev = m.Published(at(t)) if rng.random() < 0.97 else m.Stopped(at(t), "BADSIG")
            elif isinstance(a, m.OrderCert):
                issuer = ISSUER_A if rng.random() < 0.7 else ISSUER_B  # a CA change
                ari = at(t + 50) if rng.random() < 0.3 else None
                ev = (m.CertIssued(at(t), m.CertInfo(a.key_id, str(n), at(t + 2000), at(t), "c",
                                                     None, ari, (issuer,)))
                      if ok else m.Failed(at(t), "CA down") if rng.random() < 0.8
                      else m.Stopped(at(t), "account needs EAB"))
            elif isinstance(a, m.InstallCert):
                ev = m.Installed(at(t)) if ok else m.Failed(at(t), "reload failed")
            elif isinstance(a, m.ProbeLive):
                ev = m.ProbeOk(at(t)) if ok else m.Failed(at(t), "mismatch")
            elif isinstance(a, m.Rollback):
                ev = m.RolledBack(at(t)) if ok else m.Failed(at(t), "rollback failed")
            elif isinstance(a, m.RefreshAri):
                ev = m.AriChecked(at(t), at(t + 10) if ok else None, None)
            elif isinstance(a, m.DropKey):
                ev = m.KeyDropped(at(t), a.key_id)
            elif isinstance(a, m.TakeCert):
                current = state.key(m.KeyRole.CURRENT)
                roll = rng.random()
                if roll < 0.3 or not ok:  # nothing new yet, or the lineage is in flux
                    ev = m.CertAwaited(at(t), None if ok else "live/ is being updated")
                else:
                    reuse = current is not None and roll < 0.6  # --reuse-key
                    key_id = current.key_id if reuse and current else a.key_id
                    if not reuse:
                        n += 1
                    key_spki = current.spki_sha256 if reuse and current else spki(n)
                    issuer = ISSUER_A if rng.random() < 0.8 else ISSUER_B
                    ev = m.CertTaken(at(t), key_id, key_spki, m.CertInfo(
                        key_id, f"s{n}-{t}", at(t + 2000), at(t), "c", None, None, (issuer,)))
            else:
                raise AssertionError(a)
            before = state.phase
            state, move = m.apply_move(state, ev, policy, at(t))
            moves.append((before, state.phase, move))
    return moves


def _check(moves: list[tuple[Phase, Phase, Move]]) -> None:
    for src, dst, name in moves:
        row = ROWS[name]
        assert src in row.source and dst in row.target, (src, dst, name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.sampled_from(("current+next", "current+issuer")), st.booleans())
def test_every_move_is_a_row_of_the_table(seed: int, scheme: str, external: bool) -> None:
    _check(walk(random.Random(seed), scheme, external=external))


def test_every_row_is_reached_by_some_sequence() -> None:
    reached: set[Move] = set()
    for seed in range(300):
        for scheme in ("current+next", "current+issuer"):
            for external in (False, True):
                moves = walk(random.Random(seed), scheme, external=external)
                _check(moves)
                reached |= {name for _, _, name in moves}
    assert set(ROWS) - reached == set()


def test_readme_diagram_is_the_table() -> None:
    text = README.read_text()
    found = re.search(r"<!-- transitions -->\n```\n(.*?)\n```\n<!-- /transitions -->", text,
                      re.S)
    assert found, "README lacks the rendered transitions table"
    assert found.group(1) == m.transitions_table(), (
        "README's transitions differ from the table: paste the output of "
        "`rollover transitions` between the markers")


def test_the_log_names_are_the_table_names() -> None:
    assert all(isinstance(t.name, Move) for t in m.TRANSITIONS)
    assert len(ROWS) == len(m.TRANSITIONS) == len(Move)
