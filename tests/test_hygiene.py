"""The how-to's hygiene tips as findings (rollover.monitor.hygiene), on real certificates and
records: each fires on the case it is about, stays quiet on the good case, and is reported once."""

from __future__ import annotations

from datetime import timedelta

from rollover.dane import match as dane
from rollover.dane import tlsa
from rollover.model import TLSARecord
from rollover.monitor import hygiene
from rollover.monitor.hygiene import Finding, Severity

import certgen

HOST = "mail.example.test"
OWNER = "_25._tcp.mail.example.test."


def rec(obj: object, u: int = 3, s: int = 1, m: int = 1) -> TLSARecord:
    return tlsa.tlsa_record(obj, u, s, m)  # type: ignore[arg-type]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def test_pkix_usages_full_certificate_pins_and_too_many_records() -> None:
    chain = certgen.make_chain(2)
    leaf = chain.leaf.cert
    good = [rec(leaf), rec(certgen.new_key())]
    assert hygiene.record_findings(OWNER, good, [chain.served()]) == []
    got = hygiene.record_findings(OWNER, [*good, rec(leaf, 1), rec(leaf, 0, 0, 1),
                                          rec(leaf, 3, 0, 1)], [chain.served()])
    by = {f.code: f for f in got}
    assert by["tlsa-usage-pkix"].severity == Severity.WARNING
    assert "2 record(s) with usage 0/1" in by["tlsa-usage-pkix"].message
    assert by["tlsa-full-certificate"].severity == Severity.INFO
    assert "3 1 1" in by["tlsa-full-certificate"].advice
    many = [rec(certgen.new_key()) for _ in range(13)]
    assert codes(hygiene.record_findings(OWNER, many, [])) == ["tlsa-too-many"]
    assert hygiene.record_findings(OWNER, many[:12], []) == []


def test_issuer_record_must_name_a_certificate_the_server_sends() -> None:
    chain = certgen.make_chain(2)
    root_pin, inter_pin = rec(chain.root.cert, 2), rec(chain.intermediates[0].cert, 2)
    served = chain.served()  # leaf + intermediate, no root
    got = hygiene.record_findings(OWNER, [rec(chain.leaf.cert), root_pin, inter_pin], [served])
    assert codes(got) == ["tlsa-issuer-not-served"]
    assert got[0].subject == f"{OWNER} {dane.short(root_pin)}"
    # once the root is sent, the same record is fine
    assert hygiene.record_findings(OWNER, [root_pin], [chain.served(root=True)]) == []


def test_mixed_digests_that_fail_one_kind_of_client() -> None:
    chain = certgen.make_chain(1)
    other = certgen.new_key()
    # SHA2-512 clients use only the 3 1 2 (of another key): the served key fails for them
    records = [rec(chain.leaf.cert), rec(other, 3, 1, 2)]
    verdict = dane.match_chain(chain.served(), records, HOST, certgen.now())
    assert not verdict.matched
    found = hygiene.digest_agility(OWNER, "192.0.2.1:25 ecdsa-p256", verdict)
    assert found is not None and found.severity == Severity.CRITICAL
    assert "sha2-256 clients but not for sha2-512" in found.message
    both = [rec(chain.leaf.cert), rec(chain.leaf.cert, 3, 1, 2)]
    ok = dane.match_chain(chain.served(), both, HOST, certgen.now())
    assert ok.matched and hygiene.digest_agility(OWNER, "x", ok) is None


def test_same_key_and_wildcard_across_mx_hosts() -> None:
    key = certgen.new_key()
    a = certgen.make_leaf(None, ("mx1.example.test",), key).cert
    b = certgen.make_leaf(None, ("mx2.example.test",), key).cert
    c = certgen.make_leaf(None, ("mx3.example.test",)).cert
    got = hygiene.shared_keys({"mx1.example.test": [a], "mx2.example.test": [b],
                               "mx3.example.test": [c]})
    assert codes(got) == ["key-shared"] and got[0].subject == "mx1.example.test, mx2.example.test"
    w1 = certgen.make_leaf(None, ("*.example.test",), certgen.new_key()).cert
    w2 = certgen.make_leaf(None, ("*.example.test",), certgen.new_key()).cert
    got = hygiene.shared_keys({"mx1.example.test": [w1], "mx2.example.test": [w2]})
    assert codes(got) == ["wildcard-shared"]
    assert hygiene.shared_keys({"mx1.example.test": [w1]}) == []


def test_expiry_thresholds() -> None:
    now = certgen.now()
    leaf = certgen.make_leaf(None, not_after=now + timedelta(days=10)).cert
    assert hygiene.expiry("s", leaf, now, 7, 3) is None
    warn = hygiene.expiry("s", leaf, now, 21, 7)
    assert warn is not None and warn.severity == Severity.WARNING
    crit = hygiene.expiry("s", leaf, now, 30, 14)
    assert crit is not None and crit.severity == Severity.CRITICAL
    gone = hygiene.expiry("s", certgen.make_leaf(None, expired=True).cert, now, 21, 7)
    assert gone is not None and "expired" in gone.message and "RFC 7672" in gone.advice


def test_ttl_refresh_and_serial_drift() -> None:
    assert hygiene.tlsa_ttl(OWNER, [1800, 3600]) is None
    low = hygiene.tlsa_ttl(OWNER, [300, 300, 3600])
    assert low is not None and "300 s" in low.message and "1800" in low.advice
    assert hygiene.refresh_vs_ttl("example.test.", 3600, 3600) is None
    assert hygiene.refresh_vs_ttl("example.test.", 86400, 3600) is not None
    assert hygiene.serial_drift("z.", {"a": 5, "b": 5, "c": None}) is None
    drift = hygiene.serial_drift("z.", {"a": 5, "b": 4})
    assert drift is not None and "b serial 4" in drift.message


def test_collect_keeps_each_finding_once_worst_first() -> None:
    f = [Finding("x", Severity.WARNING, "s", "m"), Finding("x", Severity.CRITICAL, "s", "m2"),
         Finding("y", Severity.INFO, "s", "m"), Finding("x", Severity.WARNING, "t", "m")]
    got = hygiene.collect(f)
    assert [(g.code, g.subject, g.severity) for g in got] == [
        ("x", "s", Severity.CRITICAL), ("x", "t", Severity.WARNING), ("y", "s", Severity.INFO)]
    assert hygiene.worst(got) == Severity.CRITICAL and hygiene.worst([]) is None
