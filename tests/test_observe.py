"""Propagation verifier (rollover/edges/observe.py, dnssec_check.py, dnsquery.py).

Lab tests (`-m lab`) talk to the real BIND primary, BIND secondary and Knot secondary. The pure
tests feed the DNSSEC and pitfall checks with synthetic, really signed dns.message objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from rollover.clock import FakeClock, SystemClock
from rollover.dns.dnssec import (
    VALID,
    Verdicts,
    check_negative,
    check_response,
    check_rrset,
    service_parent,
    tcp_pitfall,
    types_in_bitmap,
    zone_keys,
)
from rollover.dns.query import Question, Reply
from rollover.edges.observe import EXTRA, Delegation, Observer
from rollover.errors import ObserveError
from rollover.model import Observation

from lab.proc import wait_for

ZONE = dns.name.from_text("example.test.")
NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
lab = pytest.mark.lab


def tlsa(byte: str) -> str:
    return "3 1 1 " + byte * 32


# -- synthetic signed data ------------------------------------------------------------------------


class Signer:
    """A zone key (CSK by default) that really signs synthetic RRsets."""

    def __init__(self, flags: int = 257) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.dnskey = dns.dnssec.make_dnskey(self.private.public_key(),
                                             dns.dnssec.Algorithm.ECDSAP256SHA256, flags=flags)

    def sign(self, rrset: dns.rrset.RRset, *, inception: float = NOW - 3600,
             expiration: float = NOW + 3600, signer: dns.name.Name = ZONE) -> dns.rrset.RRset:
        rrsig = dns.dnssec.sign(rrset, self.private, signer, self.dnskey,
                                inception=inception, expiration=expiration)
        sigs = dns.rrset.RRset(rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype)
        sigs.update_ttl(rrset.ttl)
        sigs.add(rrsig)
        return sigs


def rrset(owner: str | dns.name.Name, rtype: str, *texts: str, ttl: int = 300) -> dns.rrset.RRset:
    name = owner if isinstance(owner, dns.name.Name) else dns.name.from_text(owner, origin=ZONE)
    return dns.rrset.from_text_list(name, ttl, "IN", rtype, list(texts), origin=ZONE,
                                    relativize=False)


def response(qname: str | dns.name.Name, rtype: str, rcode: int = dns.rcode.NOERROR,
             answer: list[dns.rrset.RRset] = (),  # type: ignore[assignment]
             authority: list[dns.rrset.RRset] = (),  # type: ignore[assignment]
             aa: bool = True) -> dns.message.Message:
    q = dns.message.make_query(qname, rtype, want_dnssec=True)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if aa:
        r.flags |= dns.flags.AA
    r.answer.extend(answer)
    r.authority.extend(authority)
    return r


def signed(signer: Signer, *rrsets: dns.rrset.RRset) -> list[dns.rrset.RRset]:
    out: list[dns.rrset.RRset] = []
    for r in rrsets:
        out += [r, signer.sign(r)]
    return out


SOA = "ns1.example.test. hostmaster.example.test. 7 5 2 3600 2"
TYPES = {
    "example.test.": "SOA NS DNSKEY RRSIG NSEC3PARAM",
    "mail.example.test.": "A RRSIG",
    "_tcp.mail.example.test.": "",  # the empty non-terminal a correct signer covers
    "_25._tcp.mail.example.test.": "TLSA RRSIG",
}


def nsec3_chain(names: dict[str, str]) -> list[dns.rrset.RRset]:
    """NSEC3 (SHA-1, no salt, 0 iterations) records for exactly `names` (name -> type list)."""
    hashed = sorted((dns.dnssec.nsec3_hash(n, None, 0, 1), types) for n, types in names.items())
    out = []
    for i, (h, types) in enumerate(hashed):
        nxt = hashed[(i + 1) % len(hashed)][0]
        out.append(rrset(f"{h.lower()}.example.test.", "NSEC3", f"1 0 0 - {nxt} {types}".strip()))
    return out


# -- pure: DNSSEC checks -------------------------------------------------------------------------


def test_rrsig_valid_expired_not_yet_wrong_key_missing_foreign_signer() -> None:
    key, other = Signer(), Signer()
    keys = dns.rrset.from_rdata(ZONE, 300, key.dnskey)
    data = rrset("_25._tcp.mail", "TLSA", tlsa("ab"))
    assert check_rrset(data, key.sign(data), ZONE, keys, NOW) is None
    assert "expired" in (check_rrset(data, key.sign(data, expiration=NOW - 1), ZONE, keys, NOW)
                         or "")
    assert "not valid before" in (
        check_rrset(data, key.sign(data, inception=NOW + 60), ZONE, keys, NOW) or "")
    assert "does not validate" in (check_rrset(data, other.sign(data), ZONE, keys, NOW) or "")
    assert check_rrset(data, None, ZONE, keys, NOW) == (
        "RRSIG missing for _25._tcp.mail.example.test. TLSA")
    foreign = key.sign(data, signer=dns.name.from_text("evil.test."))
    assert "not by the zone example.test." in (check_rrset(data, foreign, ZONE, keys, NOW) or "")
    # a changed record under an old signature
    changed = rrset("_25._tcp.mail", "TLSA", tlsa("cd"))
    assert "does not validate" in (check_rrset(changed, key.sign(data), ZONE, keys, NOW) or "")


def test_verdicts_are_reused_only_for_the_same_signed_data_keys_and_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import rollover.dns.dnssec as dnssec

    key, other = Signer(), Signer()
    keys = dns.rrset.from_rdata(ZONE, 300, key.dnskey)
    others = dns.rrset.from_rdata(ZONE, 300, other.dnskey)
    data = rrset("_25._tcp.mail", "TLSA", tlsa("ab"))
    sig = key.sign(data)
    validated = []
    real = dnssec._validate
    monkeypatch.setattr(dnssec, "_validate", lambda *a: validated.append(a) or real(*a))
    verdicts = Verdicts()
    same = rrset("_25._TCP.Mail", "TLSA", tlsa("ab"), ttl=60)  # another server's copy
    assert check_rrset(data, sig, ZONE, keys, NOW, verdicts) is None
    assert check_rrset(same, sig, ZONE, keys, NOW, verdicts) is None
    assert len(validated) == 1  # the copy with the same RRSIG was not validated again
    changed = rrset("_25._tcp.mail", "TLSA", tlsa("cd"))  # replayed signature, other data
    assert "does not validate" in (check_rrset(changed, sig, ZONE, keys, NOW, verdicts) or "")
    assert "does not validate" in (check_rrset(data, sig, ZONE, others, NOW, verdicts) or "")
    assert "expired" in (check_rrset(data, sig, ZONE, keys, NOW + 7200, verdicts) or "")
    assert check_rrset(data, sig, ZONE, keys, NOW + 60, verdicts) is None
    assert len(validated) == 4  # expiry is judged before validating


def test_dnskey_must_be_self_signed_by_ksk() -> None:
    ksk, zsk = Signer(257), Signer(256)
    dnskey = dns.rrset.from_rdata_list(ZONE, 300, [ksk.dnskey, zsk.dnskey])
    good = response(ZONE, "DNSKEY", answer=[dnskey, ksk.sign(dnskey)])
    keys, reason = zone_keys(good, ZONE, NOW)
    assert keys == dnskey and reason is None
    by_zsk = response(ZONE, "DNSKEY", answer=[dnskey, zsk.sign(dnskey)])
    assert "does not validate" in (zone_keys(by_zsk, ZONE, NOW)[1] or "")
    unsigned = response(ZONE, "DNSKEY", answer=[dnskey])
    assert zone_keys(unsigned, ZONE, NOW)[1] == "RRSIG missing for example.test. DNSKEY"
    assert zone_keys(response(ZONE, "DNSKEY"), ZONE, NOW) == (None, None)


def test_positive_answer_checked_against_zone_keys() -> None:
    key = Signer()
    keys = dns.rrset.from_rdata(ZONE, 300, key.dnskey)
    owner = dns.name.from_text("_25._tcp.mail.example.test.")
    data = rrset(owner, "TLSA", tlsa("ab"))
    ok = response(owner, "TLSA", answer=signed(key, data))
    assert check_response(ok, owner, dns.rdatatype.TLSA, ZONE, keys, NOW) == VALID
    bare = response(owner, "TLSA", answer=[data])
    assert check_response(bare, owner, dns.rdatatype.TLSA, ZONE, keys, NOW).startswith(
        "RRSIG missing")


def test_nsec3_proves_nxdomain_and_nodata() -> None:
    key = Signer()
    keys = dns.rrset.from_rdata(ZONE, 300, key.dnskey)
    chain = nsec3_chain(TYPES)
    soa = rrset(ZONE, "SOA", SOA)
    tlsa_t = int(dns.rdatatype.TLSA)

    missing = dns.name.from_text("nothere.example.test.")
    nx = response(missing, "TLSA", dns.rcode.NXDOMAIN, authority=signed(key, soa, *chain))
    assert check_negative(nx, missing, tlsa_t, ZONE, keys, NOW) is None
    # the same name claimed to be NODATA: no NSEC3 matches it
    lie = response(missing, "TLSA", authority=signed(key, soa, *chain))
    assert "do not prove" in (check_negative(lie, missing, tlsa_t, ZONE, keys, NOW) or "")

    mail = dns.name.from_text("mail.example.test.")
    nodata = response(mail, "TLSA", authority=signed(key, soa, *chain))
    assert check_negative(nodata, mail, tlsa_t, ZONE, keys, NOW) is None
    ent = dns.name.from_text("_tcp.mail.example.test.")
    assert check_negative(response(ent, "TLSA", authority=signed(key, soa, *chain)),
                          ent, tlsa_t, ZONE, keys, NOW) is None
    owner = dns.name.from_text("_25._tcp.mail.example.test.")  # has TLSA: NODATA is a lie
    claim = response(owner, "TLSA", authority=signed(key, soa, *chain))
    assert "do not prove" in (check_negative(claim, owner, tlsa_t, ZONE, keys, NOW) or "")

    no_proof = response(missing, "TLSA", dns.rcode.NXDOMAIN, authority=signed(key, soa))
    assert "no NSEC/NSEC3 proof" in (check_negative(no_proof, missing, tlsa_t, ZONE, keys, NOW)
                                     or "")
    unsigned = response(missing, "TLSA", dns.rcode.NXDOMAIN, authority=[soa, *chain])
    assert "RRSIG missing" in (check_negative(unsigned, missing, tlsa_t, ZONE, keys, NOW) or "")


def test_nsec_proves_nxdomain_nodata_and_empty_non_terminal() -> None:
    key = Signer()
    keys = dns.rrset.from_rdata(ZONE, 300, key.dnskey)
    soa = rrset(ZONE, "SOA", SOA)
    tlsa_t = int(dns.rdatatype.TLSA)
    # canonical order: example.test. < mail < _25._tcp.mail (a parent sorts before its children)
    apex = rrset(ZONE, "NSEC", "mail.example.test. SOA NS DNSKEY RRSIG NSEC")
    mail = rrset("mail", "NSEC", "_25._tcp.mail.example.test. A RRSIG NSEC")
    svc = rrset("_25._tcp.mail", "NSEC", "example.test. TLSA RRSIG NSEC")
    ent = dns.name.from_text("_tcp.mail.example.test.")
    r = response(ent, "TLSA", authority=signed(key, soa, mail))  # next name lies below _tcp.mail
    assert check_negative(r, ent, tlsa_t, ZONE, keys, NOW) is None
    r = response(ent, "TLSA", authority=signed(key, soa, apex))
    assert "do not prove" in (check_negative(r, ent, tlsa_t, ZONE, keys, NOW) or "")
    nx = dns.name.from_text("zzz.example.test.")
    r = response(nx, "TLSA", dns.rcode.NXDOMAIN, authority=signed(key, soa, svc, apex))
    assert check_negative(r, nx, tlsa_t, ZONE, keys, NOW) is None
    # without the apex NSEC nothing shows that *.example.test. (a wildcard) does not exist
    r = response(nx, "TLSA", dns.rcode.NXDOMAIN, authority=signed(key, soa, svc))
    assert "do not prove" in (check_negative(r, nx, tlsa_t, ZONE, keys, NOW) or "")
    r = response(nx, "TLSA", dns.rcode.NXDOMAIN, authority=signed(key, soa, mail, apex))
    assert "do not prove" in (check_negative(r, nx, tlsa_t, ZONE, keys, NOW) or "")
    m = dns.name.from_text("mail.example.test.")
    r = response(m, "TLSA", authority=signed(key, soa, mail))
    assert check_negative(r, m, tlsa_t, ZONE, keys, NOW) is None
    r = response(m, "A", authority=signed(key, soa, mail))
    assert "do not prove" in (check_negative(r, m, int(dns.rdatatype.A), ZONE, keys, NOW) or "")


def test_type_bitmap_decoding() -> None:
    rd = dns.rdata.from_text("IN", "NSEC", "a.example. A MX RRSIG NSEC TLSA TYPE1234")
    assert types_in_bitmap(rd.windows) == {1, 15, 46, 47, 52, 1234}  # type: ignore[attr-defined]


# -- pure: the _tcp.<host> pitfall -------------------------------------------------------------


def test_service_parent() -> None:
    assert service_parent(dns.name.from_text("_25._tcp.mail.example.test.")) == (
        dns.name.from_text("_tcp.mail.example.test."))
    assert service_parent(dns.name.from_text("mail.example.test.")) is None
    assert service_parent(dns.name.from_text("_acme-challenge.mail.example.test.")) is None


def test_tcp_pitfall_detected_from_synthetic_responses() -> None:
    """A signer that leaves the empty non-terminal `_tcp.mail` out of its NSEC3 chain makes
    `_tcp.mail` a *provable* NXDOMAIN while `_25._tcp.mail` answers NOERROR."""
    key = Signer()
    keys = dns.rrset.from_rdata(ZONE, 300, key.dnskey)
    broken = {n: t for n, t in TYPES.items() if not n.startswith("_tcp.")}
    soa = rrset(ZONE, "SOA", SOA)
    owner = dns.name.from_text("_25._tcp.mail.example.test.")
    parent = dns.name.from_text("_tcp.mail.example.test.")
    owner_r = response(owner, "TLSA", answer=signed(key, rrset(owner, "TLSA", tlsa("ab"))))
    parent_r = response(parent, "TLSA", dns.rcode.NXDOMAIN,
                        authority=signed(key, soa, *nsec3_chain(broken)))
    # the broken NXDOMAIN validates: that is exactly what convinces a minimising resolver
    assert check_response(parent_r, parent, dns.rdatatype.TLSA, ZONE, keys, NOW) == VALID
    assert tcp_pitfall(owner_r, parent_r)
    fixed = response(parent, "TLSA", authority=signed(key, soa, *nsec3_chain(TYPES)))
    assert not tcp_pitfall(owner_r, fixed)
    assert not tcp_pitfall(response(owner, "TLSA", dns.rcode.NXDOMAIN), parent_r)


class ScriptedObserver(Observer):
    """Observer whose network edge answers from a table of synthetic responses."""

    def __init__(self, servers: list[tuple[str, str]],
                 answers: dict[tuple[str, str, str], dns.message.Message]) -> None:
        super().__init__(["192.0.2.1"], timeout=0.1, clock=FakeClock())
        self._servers = servers
        self._answers = answers

    def _nameservers(self, zone: dns.name.Name, extra: object = ()
                     ) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
        return self._servers, ()

    def _wave(self, questions: Sequence[Question]) -> list[Reply]:
        return [self._answer(q) for q in questions]

    def _answer(self, q: Question) -> Reply:
        key = (q.address, str(q.qname), dns.rdatatype.to_text(q.rdtype))
        msg = self._answers.get(key)
        if msg is None:
            return Reply("TIMEOUT", error="no answer within 0.1s (timeout)")
        return Reply(dns.rcode.to_text(msg.rcode()), message=msg)


def test_observe_reports_tcp_pitfall_per_server() -> None:
    owner = "_25._tcp.mail.example.test."
    parent = "_tcp.mail.example.test."
    table: dict[tuple[str, str, str], dns.message.Message] = {}
    for addr, parent_rcode in (("192.0.2.53", dns.rcode.NXDOMAIN),
                               ("192.0.2.54", dns.rcode.NOERROR)):
        table[(addr, owner, "TLSA")] = response(owner, "TLSA",
                                                answer=[rrset(owner, "TLSA", tlsa("ab"))])
        table[(addr, "example.test.", "SOA")] = response(ZONE, "SOA",
                                                         answer=[rrset(ZONE, "SOA", SOA)])
        table[(addr, "example.test.", "DNSKEY")] = response(ZONE, "DNSKEY")
        table[(addr, parent, "TLSA")] = response(parent, "TLSA", parent_rcode)
    servers = [("ns1.example.test.", "192.0.2.53"), ("ns2.example.test.", "192.0.2.54")]
    obs = ScriptedObserver(servers, table).observe(owner, zone="example.test.")
    assert all(a.ok for a in obs.answers) and not obs.signed
    assert len(obs.problems) == 1
    assert "ns1.example.test. (192.0.2.53)" in obs.problems[0]
    assert "ns2.example.test." not in obs.problems[0]
    assert "qname-minimising" in obs.problems[0]
    assert obs.agreed() is None and obs.disagreement() == obs.problems[0]


# -- pure: NS set assembly ---------------------------------------------------------------------


class OfflineObserver(Observer):
    """Discovery with the resolver answers given in advance (no network)."""

    def __init__(self, apex: set[str], parent: set[str] | None,
                 addresses: dict[str, list[str]]) -> None:
        super().__init__(["192.0.2.1"], clock=FakeClock())
        self.apex, self.parent, self.addrs = apex, parent, addresses

    def _apex_ns(self, zone: dns.name.Name) -> set[dns.name.Name]:
        return {dns.name.from_text(n) for n in self.apex}

    def _delegation(self, zone: dns.name.Name) -> Delegation | None:
        if self.parent is None:
            return None
        return dns.name.from_text("test."), {dns.name.from_text(n) for n in self.parent}, {}

    def _addresses(self, host: dns.name.Name) -> list[str]:
        return self.addrs.get(str(host), [])


def test_ns_union_of_apex_and_parent_with_mismatch_problem() -> None:
    o = OfflineObserver({"ns1.example.test."}, {"ns1.example.test.", "ns9.example.test."},
                        {"ns1.example.test.": ["192.0.2.1", "2001:db8::1"],
                         "ns9.example.test.": ["192.0.2.9"]})
    servers, problems = o._nameservers(ZONE, ["192.0.2.99", "192.0.2.1"])
    assert servers == [("ns1.example.test.", "192.0.2.1"), ("ns1.example.test.", "2001:db8::1"),
                       ("ns9.example.test.", "192.0.2.9"), (EXTRA, "192.0.2.99")]
    assert len(problems) == 1 and "parent test. delegates to ns1.example.test., " \
        "ns9.example.test." in problems[0]
    same = OfflineObserver({"ns1.example.test."}, {"ns1.example.test."},
                           {"ns1.example.test.": ["192.0.2.1"]})
    assert same._nameservers(ZONE, []) == ([("ns1.example.test.", "192.0.2.1")], ())


def test_discovery_failures_are_one_line_observe_errors() -> None:
    with pytest.raises(ObserveError, match=r"no nameserver address found for zone example\.test\."):
        OfflineObserver({"ns1.example.test."}, None, {}).nameservers(ZONE)
    with pytest.raises(ObserveError, match="extra nameserver 'ns1' is not an IP address"):
        OfflineObserver({"ns1.example.test."}, None, {}).nameservers(ZONE, ["ns1"])
    with pytest.raises(ObserveError, match="resolver 'localhost' is not an IP address"):
        Observer(["localhost"], clock=FakeClock())
    # only the extra address: fine (a hidden primary may be all there is to ask)
    only = OfflineObserver(set(), None, {})
    assert only.nameservers(ZONE, ["192.0.2.7"]) == [(EXTRA, "192.0.2.7")]


# -- lab -----------------------------------------------------------------------------------------


@pytest.fixture
def observer(dns_lab: object) -> Observer:
    return Observer([dns_lab.primary.address], timeout=1.0, clock=SystemClock())  # type: ignore[attr-defined]


def by_address(obs: Observation) -> dict[str, object]:
    return {a.address: a for a in obs.answers}


@lab
def test_zone_found_by_soa_walk(dns_lab, observer) -> None:  # type: ignore[no-untyped-def]
    assert observer.find_zone("_25._tcp.mail.example.test.") == "example.test."
    assert observer.find_zone("example.test.") == "example.test."
    assert observer.find_zone("a.b.c.ns1.example.test.") == "example.test."


@lab
def test_soa_walk_with_no_usable_resolver_is_observe_error(dns_lab) -> None:  # type: ignore[no-untyped-def]
    o = Observer([dns_lab.parent.address], timeout=1.0, clock=SystemClock())
    with pytest.raises(ObserveError, match=r"no resolver answered SOA .*referral only"):
        o.find_zone("_25._tcp.mail.example.test.")


@lab
def test_three_servers_found_with_names_and_addresses(dns_lab, observer) -> None:  # type: ignore[no-untyped-def]
    want = [(s.name, s.address) for s in dns_lab.servers]
    assert observer.nameservers("example.test.") == want
    # with the parent `test.` reachable, its delegation is read and agrees with the apex
    both = Observer([dns_lab.primary.address, dns_lab.parent.address], timeout=1.0,
                    clock=SystemClock())
    assert both.delegation("example.test.") == sorted(s.name for s in dns_lab.servers)
    assert both.nameservers("example.test.") == want
    assert observer.delegation("example.test.") is None  # the primary alone knows no parent


@lab
def test_agreement_after_update(dns_lab, observer) -> None:  # type: ignore[no-untyped-def]
    owner = "_25._tcp.agree.example.test."
    records = [tlsa("a1"), tlsa("a2")]
    dns_lab.update(owner, "TLSA", 2, records)
    dns_lab.wait_all(owner, "TLSA", records)
    obs = observer.observe(owner)
    assert obs.agreed() == frozenset(records)
    assert obs.zone == "example.test." and obs.signed and obs.problems == ()
    assert {a.ttl for a in obs.answers} == {2}
    assert len({a.serial for a in obs.answers}) == 1
    assert {a.dnssec for a in obs.answers} == {"valid"}
    assert [a.server for a in obs.answers] == [s.name for s in dns_lab.servers]
    assert Observation.from_dict(obs.to_dict()).to_dict() == obs.to_dict()


@lab
def test_frozen_knot_disagrees_and_is_named(dns_lab, observer) -> None:  # type: ignore[no-untyped-def]
    owner = "_25._tcp.frozen.example.test."
    old, new = [tlsa("0a")], [tlsa("0b")]
    dns_lab.update(owner, "TLSA", 2, old)
    dns_lab.wait_all(owner, "TLSA", old)
    knot = dns_lab.knot_secondary
    dns_lab.freeze_knot()
    try:
        dns_lab.update(owner, "TLSA", 2, new)
        wait_for(lambda: all(dns_lab.query(s, owner, "TLSA").records == frozenset(new)
                             for s in (dns_lab.primary, dns_lab.bind_secondary)),
                 10, "the BIND servers to serve the new record")
        obs = observer.observe(owner)
        assert obs.agreed() is None
        answers = by_address(obs)
        assert answers[knot.address].records == frozenset(old)  # type: ignore[attr-defined]
        assert answers[knot.address].ok  # type: ignore[attr-defined]
        assert (answers[knot.address].serial  # type: ignore[attr-defined]
                < answers[dns_lab.primary.address].serial)  # type: ignore[attr-defined]
        for reason in (obs.disagreement(), obs.disagreement(frozenset(new))):
            assert reason is not None
            assert f"ns3.example.test. ({knot.address})" in reason
            assert "ns1" not in reason and "ns2" not in reason
    finally:
        dns_lab.thaw_knot()
    dns_lab.wait_all(owner, "TLSA", new)
    assert observer.observe(owner).agreed() == frozenset(new)


class CountingObserver(Observer):
    """Records the addresses of every wave: proof of parallel work without timing anything."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.waves: list[set[str]] = []

    def _wave(self, questions: Sequence[Question]) -> list[Reply]:
        self.waves.append({q.address for q in questions})
        return super()._wave(questions)


@lab
def test_paused_servers_time_out_in_parallel(dns_lab) -> None:  # type: ignore[no-untyped-def]
    owner = "_25._tcp.paused.example.test."
    dns_lab.update(owner, "TLSA", 2, [tlsa("0c")])
    dns_lab.wait_all(owner, "TLSA", [tlsa("0c")])
    o = CountingObserver([dns_lab.primary.address], timeout=1.0, clock=SystemClock())
    o.nameservers("example.test.")
    stopped = [dns_lab.bind_secondary, dns_lab.knot_secondary]
    for s in stopped:
        dns_lab.pause(s)
    try:
        obs = o.observe(owner)
    finally:
        for s in stopped:
            dns_lab.resume(s)
    answers = by_address(obs)
    assert answers[dns_lab.primary.address].ok  # type: ignore[attr-defined]
    for s in stopped:
        a = answers[s.address]
        assert not a.ok and a.rcode == "TIMEOUT"  # type: ignore[attr-defined]
        assert "timeout" in (a.error or "")  # type: ignore[attr-defined]
    assert obs.agreed() is None
    assert f"ns2.example.test. ({dns_lab.bind_secondary.address}): no answer" in (
        obs.disagreement() or "")
    # the SOA walk, then one wave for the round: both stalled servers waited on at once
    assert len(o.waves) == 2
    assert {s.address for s in stopped} <= o.waves[-1]


@lab
def test_extra_addresses_that_are_not_authoritative(dns_lab, observer) -> None:  # type: ignore[no-untyped-def]
    owner = "_25._tcp.extra.example.test."
    dns_lab.update(owner, "TLSA", 2, [tlsa("0d")])
    dns_lab.wait_all(owner, "TLSA", [tlsa("0d")])
    unused = f"{dns_lab.net}.99"
    obs = observer.observe(owner, extra=[dns_lab.parent.address, unused,
                                         dns_lab.primary.address])
    answers = by_address(obs)
    assert len(obs.answers) == 5  # the primary given as extra is not asked twice
    referral = answers[dns_lab.parent.address]
    assert referral.server == EXTRA and not referral.ok  # type: ignore[attr-defined]
    assert "not authoritative" in referral.error  # type: ignore[attr-defined]
    silent = answers[unused]
    # nothing listens there: the wave's connected UDP socket hears the ICMP refusal at once
    assert not silent.ok and silent.rcode in ("TIMEOUT", "UNREACHABLE")  # type: ignore[attr-defined]
    assert obs.agreed() is None
    assert observer.observe(owner).agreed() == frozenset([tlsa("0d")])


@lab
def test_nxdomain_owner_negative_ttl_and_denial_checked(dns_lab, observer) -> None:  # type: ignore[no-untyped-def]
    obs = observer.observe("_25._tcp.nosuchhost.example.test.")
    assert obs.agreed() == frozenset()
    assert obs.negative_ttl == 2  # min(SOA TTL 2, SOA minimum 2) in the lab zone
    for a in obs.answers:
        assert a.ok and a.rcode == "NXDOMAIN" and a.ttl is None and a.dnssec == "valid"
    nodata = observer.observe("mail.example.test.")  # exists, has no TLSA
    assert {(a.rcode, a.dnssec) for a in nodata.answers} == {("NOERROR", "valid")}
    assert nodata.agreed() == frozenset()


@lab
def test_tlsa_under_new_host_has_no_tcp_pitfall(dns_lab, observer) -> None:  # type: ignore[no-untyped-def]
    owner = "_25._tcp.x.example.test."
    dns_lab.update(owner, "TLSA", 2, [tlsa("0e")])
    dns_lab.wait_all(owner, "TLSA", [tlsa("0e")])
    obs = observer.observe(owner)
    assert obs.problems == () and obs.agreed() == frozenset([tlsa("0e")])
    ent = observer.observe("_tcp.x.example.test.")  # empty non-terminal: NOERROR/NODATA, proven
    assert {(a.rcode, a.dnssec) for a in ent.answers} == {("NOERROR", "valid")}


@lab
def test_signatures_judged_at_the_clocks_time(dns_lab) -> None:  # type: ignore[no-untyped-def]
    future = FakeClock(SystemClock().now() + timedelta(days=400))
    o = Observer([dns_lab.primary.address], timeout=1.0, clock=future)
    obs = o.observe("mail.example.test.", "A")
    assert obs.at == future.now()
    assert all(not a.ok and "expired" in (a.dnssec or "") for a in obs.answers)
    past = FakeClock(SystemClock().now() - timedelta(days=400))
    obs = Observer([dns_lab.primary.address], timeout=1.0, clock=past).observe(
        "mail.example.test.", "A")
    assert all(not a.ok and "not valid before" in (a.dnssec or "") for a in obs.answers)


def test_a_long_run_finds_an_ns_added_to_the_zone() -> None:
    clock = FakeClock()
    o = OfflineObserver({"ns1.example.test."}, None,
                        {"ns1.example.test.": ["192.0.2.1"], "ns2.example.test.": ["192.0.2.2"]})
    o.clock = clock
    assert o.nameservers(ZONE) == [("ns1.example.test.", "192.0.2.1")]
    o.apex = {"ns1.example.test.", "ns2.example.test."}  # an NS added mid-wait
    clock.advance(30)
    assert len(o.nameservers(ZONE)) == 1  # within one round's reach: discovery is not repeated
    clock.advance(31)
    assert o.nameservers(ZONE) == [("ns1.example.test.", "192.0.2.1"),
                                   ("ns2.example.test.", "192.0.2.2")]
