"""Scale, by behaviour (never by timing): one round is one wave for every slot, zone data is asked
once per address per round, state is written once per batch, many owners go in one RFC 2136
message, and a conflict on one owner of a batch leaves the others applied. Against the lab."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import pytest
import yaml

from rollover.cli.main import main
from rollover.clock import SystemClock
from rollover.config.load import load_config
from rollover.core import machine as m
from rollover.dns.query import Question, Reply, query_wave
from rollover.edges.observe import Observer, Want
from rollover.engine.wiring import build_engine
from rollover.errors import ProviderError
from rollover.providers.base import Change
from rollover.providers.rfc2136 import RFC2136Provider

from lab.configs import write_config
from lab.dns import DnsLab

pytestmark = pytest.mark.lab
CLOCK = SystemClock()


def tlsa(byte: str) -> str:
    return "3 1 1 " + byte * 32


def hosts(n: int) -> list[str]:
    tag = secrets.token_hex(3)
    return [f"w{tag}-{i}.example.test" for i in range(n)]


class WaveCounter(Observer):
    """The real observer, recording the questions of every wave it sends."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.waves: list[list[Question]] = []

    def _wave(self, questions: Sequence[Question]) -> list[Reply]:
        self.waves.append(list(questions))
        return super()._wave(questions)


def many_config(tmp_path: Path, lab: DnsLab, names: list[str]) -> Path:
    cfg = write_config(tmp_path, lab, names[0], endpoint={"bootstrap": "no-certificate"})
    doc = yaml.safe_load(cfg.read_text())
    first = doc["endpoints"][0]
    doc["endpoints"] = [{**first, "host": h} for h in names]
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg


def test_one_round_is_one_wave_with_zone_data_once_per_address(dns_lab: DnsLab) -> None:
    names = hosts(15)
    for h in names[:5]:
        dns_lab.update(f"_25._tcp.{h}.", "TLSA", 2, [tlsa("1a")])
    o = WaveCounter([dns_lab.primary.address], timeout=1.0, clock=CLOCK)
    o.nameservers(dns_lab.zone)
    wants = [Want(f"_25._tcp.{h}.", "TLSA", dns_lab.zone) for h in names]
    results = o.observe_many(wants)
    assert len(o.waves) == 1
    asked = Counter((q.qname.to_text(), dns.rdatatype.to_text(q.rdtype)) for q in o.waves[0])
    assert asked[(dns_lab.zone, "SOA")] == 3 and asked[(dns_lab.zone, "DNSKEY")] == 3
    for h in names:
        assert asked[(f"_25._tcp.{h}.", "TLSA")] == 3
    assert [r.owner for r in results if not isinstance(r, Exception)] == [w.owner for w in wants]
    dns_lab.wait_all(f"_25._tcp.{names[0]}.", "TLSA", [tlsa("1a")])
    again = o.observe_many(wants)
    # the _tcp.<host> pitfall is judged once per owner and address: not asked again
    pitfall = [q for q in o.waves[1] if q.qname.to_text().startswith("_tcp.")]
    assert len(pitfall) < len([q for q in o.waves[0] if q.qname.to_text().startswith("_tcp.")])
    first = again[0]
    assert not isinstance(first, Exception) and first.agreed() == frozenset([tlsa("1a")])


def test_zones_found_in_one_wave_per_level(dns_lab: DnsLab) -> None:
    names = hosts(10)
    o = WaveCounter([dns_lab.primary.address], timeout=1.0, clock=CLOCK)
    zones = o.find_zones([f"_25._tcp.{h}." for h in names])
    assert set(zones.values()) == {dns_lab.zone}
    assert len(o.waves) == 1 and len(o.waves[0]) == len(names)
    o.find_zones([f"_25._tcp.{h}." for h in names])
    assert len(o.waves) == 1  # known for the rest of the run


def test_query_wave_truncated_answer_comes_over_tcp(dns_lab: DnsLab) -> None:
    owner = f"_25._tcp.{hosts(1)[0]}."
    records = [tlsa(f"{i:02x}") for i in range(40)]  # ~ 40 x 45 bytes: more than 1232
    dns_lab.update(owner, "TLSA", 2, records)
    dns_lab.wait_all(owner, "TLSA", records)
    qs = [Question(s.address, dns.name.from_text(owner), dns.rdatatype.TLSA)
          for s in dns_lab.servers]
    replies = query_wave(qs, timeout=2.0, monotonic=CLOCK.monotonic)
    assert all(r.tcp and r.rcode == "NOERROR" for r in replies)
    for r in replies:
        assert r.message is not None and len(r.message.answer[0]) == 40


def test_query_wave_failures_are_replies_not_exceptions(dns_lab: DnsLab) -> None:
    silent = f"{dns_lab.net}.99"  # nothing listens: UDP gets no answer at all, or a refusal
    owner = dns.name.from_text(f"_25._tcp.{hosts(1)[0]}.")
    qs = [Question(silent, owner, dns.rdatatype.TLSA),
          Question(dns_lab.primary.address, owner, dns.rdatatype.TLSA)]
    replies = query_wave(qs, timeout=0.5, in_flight=1, monotonic=CLOCK.monotonic)
    assert replies[0].message is None and replies[0].rcode in ("TIMEOUT", "UNREACHABLE")
    assert replies[1].rcode == "NXDOMAIN" and replies[1].authoritative


def test_run_of_many_endpoints_observes_in_waves_and_saves_per_batch(
        dns_lab: DnsLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = hosts(12)
    cfg = many_config(tmp_path, dns_lab, names)
    engine = build_engine(load_config(cfg), CLOCK)
    observer = WaveCounter([dns_lab.primary.address], timeout=1.0, clock=CLOCK)
    engine.edges.observer = observer
    saves: list[int] = []
    store = engine.edges.store
    real_save = store.save
    monkeypatch.setattr(store, "save", lambda doc: (saves.append(len(doc["slots"])),
                                                     real_save(doc))[1])
    updates: list[int] = []
    provider = engine.edges.providers["lab"]
    assert isinstance(provider, RFC2136Provider)
    real_send = provider._client.send_update
    monkeypatch.setattr(provider._client, "send_update",
                        lambda u, *a: (updates.append(1), real_send(u, *a))[1])
    reports = engine.run()
    assert {r.state.phase for r in reports} == {m.Phase.PROPAGATING}
    assert all(r.error is None for r in reports)
    # round 1 (look, stage keys, publish), round 2 (look after the publish): 2 waves for 12
    # endpoints, however many endpoints there are
    assert len(observer.waves) == 2
    assert len(saves) <= 4 and saves[-1] == len(names)
    assert len(updates) == 1  # twelve owners, one RFC 2136 message
    for h in names:
        assert all(len(x) == 2 for x in (
            dns_lab.query(s, f"_25._tcp.{h}.", "TLSA").records for s in [dns_lab.primary]))


def test_batch_update_conflict_on_one_owner_leaves_the_others_applied(dns_lab: DnsLab) -> None:
    provider = RFC2136Provider("primary", dns_lab.primary.address, 53,
                               tsig_key_name=dns_lab.tsig_name, tsig_secret=dns_lab.tsig_secret,
                               tsig_algorithm=dns_lab.tsig_algorithm)
    owners = [f"_25._tcp.{h}." for h in hosts(6)]
    changes = [Change(dns_lab.zone, o, "TLSA", 300, add=frozenset([tlsa("2b")]))
               for o in owners]
    sent: list[int] = []
    real = provider._client.send_update

    def meddling_send(update: Any, *args: Any) -> None:
        sent.append(1)
        if len(sent) == 1:  # someone else edits one owner between our read and our update
            dns_lab.update(owners[2], "TLSA", 300, [tlsa("ff")])
        real(update, *args)

    provider._client.send_update = meddling_send  # type: ignore[method-assign]
    results = provider.apply_many(changes)
    assert [r is None for r in results] == [True, True, False, True, True, True]
    assert isinstance(results[2], ProviderError) and "prerequisite" in str(results[2])
    assert len(sent) == 1 + len(owners)  # the batch, refused whole; then owner by owner
    for i, o in enumerate(owners):
        want = {tlsa("ff")} if i == 2 else {tlsa("2b")}
        assert dns_lab.query(dns_lab.primary, o, "TLSA").records == want


def test_two_changes_of_one_owner_in_one_batch_both_apply(dns_lab: DnsLab) -> None:
    provider = RFC2136Provider("primary", dns_lab.primary.address, 53,
                               tsig_key_name=dns_lab.tsig_name, tsig_secret=dns_lab.tsig_secret,
                               tsig_algorithm=dns_lab.tsig_algorithm)
    owner = f"_25._tcp.{hosts(1)[0]}."
    results = provider.apply_many([
        Change(dns_lab.zone, owner, "TLSA", 300, add=frozenset([tlsa("3c")])),
        Change(dns_lab.zone, owner, "TLSA", 300, add=frozenset([tlsa("4d")])),
    ])
    assert results == [None, None]
    assert dns_lab.query(dns_lab.primary, owner, "TLSA").records == {tlsa("3c"), tlsa("4d")}


def test_one_warning_line_for_advice_that_concerns_every_endpoint(
        dns_lab: DnsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = many_config(tmp_path, dns_lab, hosts(7))
    assert main(["plan", "--config", str(cfg)]) in (0, 2)
    err = capsys.readouterr().err
    ttl = [ln for ln in err.splitlines() if "TLSA TTL" in ln]
    assert len(ttl) == 1 and "and 6 more" in ttl[0]
