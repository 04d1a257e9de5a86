"""Builders for machine tests: observations of three lab-like servers, a policy, a slot."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from rollover.core import machine as m
from rollover.model import Algorithm, Observation, ServerAnswer, SlotId

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SLOT = SlotId("mail.example.test", 25, Algorithm.ECDSA_P256)
OWNER = SLOT.endpoint.owner
SERVERS = (("ns1.example.test.", "127.0.0.11"), ("ns2.example.test.", "127.0.0.12"),
           ("ns3.example.test.", "127.0.0.13"))
POLICY = m.Policy(ttl=60, key_lifetime=30 * 86400, renew_before=10 * 86400, retire_grace=600)


def spki(n: int) -> str:
    return f"{n:064x}"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def answer(i: int, records: Iterable[str] = (), ttl: int = 60, ok: bool = True,
           rcode: str = "NOERROR", error: str | None = None) -> ServerAnswer:
    name, addr = SERVERS[i]
    recs = frozenset(records)
    code = rcode if ok or rcode != "NOERROR" else "TIMEOUT"
    return ServerAnswer(name, addr, ok, code, recs, ttl if recs else None, 2026112801, None, error)


def obs(t: float, *per_server: Iterable[str] | None, ttl: int = 60, neg: int = 30) -> Observation:
    """per_server: the record set each server serves, or None for a server that timed out."""
    answers = tuple(
        answer(i, recs or (), ttl) if recs is not None else
        answer(i, ok=False, rcode="TIMEOUT", error="timed out after 2.0s")
        for i, recs in enumerate(per_server)
    )
    return Observation(OWNER, "TLSA", at(t), answers, "example.test.", neg, True)


def everywhere(t: float, records: Iterable[str], ttl: int = 60, neg: int = 30) -> Observation:
    recs = list(records)
    return obs(t, recs, recs, recs, ttl=ttl, neg=neg)


def drive_to_propagating(policy: m.Policy = POLICY, t: float = 0,
                         before: Observation | None = None,
                         live: Iterable[str] = ()) -> m.SlotState:
    """NEW -> stage two keys -> publish; returns the PROPAGATING state (submitted at `t`)."""
    st = m.SlotState.new(SLOT, at(t))
    n = 0
    while True:
        r = m.step(st, before, policy, at(t))
        st = r.state
        if isinstance(r.action, m.StageKey):
            n += 1
            st = m.apply(st, m.KeyStaged(at(t), r.action.key_id, r.action.role, spki(n)), policy,
                         at(t))
        elif isinstance(r.action, m.InspectLive):
            st = m.apply(st, m.LiveSeen(at(t), frozenset(live)), policy, at(t))
        elif isinstance(r.action, m.Publish):
            return m.apply(st, m.Published(at(t)), policy, at(t))
        else:
            raise AssertionError(r)


def rdatas(st: m.SlotState) -> list[str]:
    return sorted(st.wanted())
