"""rollover.dane.match: RFC 7671/7672 matching, with `openssl s_client -dane_tlsa_*` as the referee.

Each served chain is put behind a real `openssl s_server` on the lab net (ROLLOVER_LAB_NET);
for each case, match_chain's verdict must agree with whether s_client verifies. s_client runs
with -dane_ee_no_namechecks, which makes it an RFC 7672 client (DANE-EE ignores names).
OpenSSL prefers SHA2-512 over SHA2-256 (digest agility, RFC 7671 section 9), so it is compared
with the verdict's SHA2-512 view; `matched` also needs the SHA2-256 view, which differs only
when a 3 1 2 matches and a 3 1 1 does not.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from rollover.clock import SystemClock
from rollover.dane import match as dane
from rollover.dane import tlsa
from rollover.dane.match import Preference, match_chain
from rollover.model import TLSARecord

import certgen
from lab.proc import Daemon, lab_net, tcp_open, wait_for

HOST = "mail.example.test"
NOW = SystemClock().now()


def rec(obj: x509.Certificate | certgen.Issued, usage: int = 3, selector: int = 1,
        mtype: int = 1) -> str:
    cert = obj.cert if isinstance(obj, certgen.Issued) else obj
    return tlsa.tlsa_record(cert, usage, selector, mtype).to_text()


def wrong(usage: int = 3, selector: int = 1, mtype: int = 1) -> str:
    size = {0: 91, 1: 32, 2: 64}[mtype]
    return f"{usage} {selector} {mtype} " + ("ab" * size)


@dataclass
class World:
    base: certgen.Chain  # p256 leaf <- intermediate <- root
    deep: certgen.Chain  # rsa2048 leaf <- i1 <- i2 <- root
    expired: certgen.Chain  # expired leaf
    wild: certgen.Issued  # *.example.test under base's intermediate
    cn_only: certgen.Issued  # no SAN, CN mail.example.test under base's intermediate
    not_ca: certgen.Issued  # a CA:FALSE "intermediate" under base's root
    under_not_ca: certgen.Issued  # leaf issued by not_ca
    old_inter: certgen.Issued  # an expired intermediate under base's root
    under_old: certgen.Issued  # a valid leaf under old_inter
    served: dict[str, list[x509.Certificate]]


@pytest.fixture(scope="module")
def world() -> World:
    base = certgen.make_chain(2, key="p256")
    deep = certgen.make_chain(3, key="rsa2048")
    expired = certgen.make_chain(2, key="p384", expired=True)
    inter = base.intermediates[0]
    wild = certgen.make_leaf(inter, ["*.example.test"], certgen.new_key("p256"))
    cn_only = certgen.make_leaf(inter, [], certgen.new_key("p256"), cn=HOST)
    nk = certgen.new_key("p256")
    not_ca_cert = certgen.make_cert(certgen.name("Not A CA"), nk.public_key(),
                                    base.root.cert.subject, base.root.key, ca=False)
    not_ca = certgen.Issued(not_ca_cert, nk)
    under_not_ca = certgen.make_leaf(not_ca, [HOST], certgen.new_key("p256"))
    old_inter = certgen.make_ca("Old Intermediate", base.root, certgen.new_key("p256"),
                                not_before=NOW - timedelta(days=400),
                                not_after=NOW - timedelta(days=1))
    under_old = certgen.make_leaf(old_inter, [HOST], certgen.new_key("p256"))
    root, i = base.root.cert, inter.cert
    served = {
        "ee": base.served(),  # leaf, intermediate (root not sent)
        "full": base.served(root=True),
        "shuffled": [base.leaf.cert, root, i],
        "deep": deep.served(root=True),
        "expired": expired.served(root=True),
        "wild": [wild.cert, i, root],
        "cn": [cn_only.cert, i, root],
        "notca": [under_not_ca.cert, not_ca.cert, root],
        "oldinter": [under_old.cert, old_inter.cert, root],
    }
    return World(base, deep, expired, wild, cn_only, not_ca, under_not_ca, old_inter, under_old,
                 served)


# --------------------------------------------------------------------------- s_server per chain


class Servers:
    """One `openssl s_server` per served chain, started on first use, all stopped at the end."""

    def __init__(self, world: World, workdir: Path) -> None:
        self.world = world
        self.workdir = workdir
        self.address = f"{lab_net()}.30"
        self.running: dict[str, tuple[Daemon, int]] = {}

    def get(self, name: str, key: certgen.PrivateKey) -> int:
        if name in self.running:
            return self.running[name][1]
        chain = self.world.served[name]
        d = self.workdir / name
        d.mkdir()
        certgen.write_pem(d / "leaf.pem", chain[0])
        certgen.write_key(d / "leaf.key", key)
        argv = ["openssl", "s_server", "-quiet", "-www", "-cert", str(d / "leaf.pem"),
                "-key", str(d / "leaf.key")]
        if len(chain) > 1:
            certgen.write_pem(d / "chain.pem", *chain[1:])
            argv += ["-cert_chain", str(d / "chain.pem")]
        port = self._free_port()
        daemon = Daemon(f"s_server {name}", [*argv, "-accept", f"{self.address}:{port}"],
                        d / "s_server.log")
        daemon.start()
        self.running[name] = (daemon, port)

        def ready() -> bool:
            daemon.check_alive()
            return tcp_open(self.address, port)

        wait_for(ready, 10, f"openssl s_server for {name} on {self.address}:{port}")
        return port

    def _free_port(self) -> int:
        with socket.socket() as s:
            s.bind((self.address, 0))
            return int(s.getsockname()[1])

    def stop_all(self) -> None:
        for daemon, _ in self.running.values():
            daemon.stop()
        self.running.clear()


@pytest.fixture(scope="module")
def servers(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    if shutil.which("openssl") is None:  # pragma: no cover - Debian always has it
        pytest.fail("openssl CLI not found")
    s = Servers(world, tmp_path_factory.mktemp("s_server"))
    try:
        yield s
    finally:
        s.stop_all()


def s_client(address: str, port: int, host: str, records: list[str]) -> tuple[bool, str]:
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", "-brief",
            "-dane_tlsa_domain", host, "-dane_ee_no_namechecks", "-verify_return_error"]
    for r in records:
        argv += ["-dane_tlsa_rrdata", r]
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=30)
    out = res.stdout + res.stderr
    if res.returncode == 0:
        assert "Verification: OK" in out, out
        return True, out
    # make sure the handshake happened and failed on verification, not on the connection
    assert "verify error" in out or "certificate verify failed" in out, out
    return False, out


# --------------------------------------------------------------------------- the matrix

Records = Callable[[World], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    served: str
    records: Records
    expected: bool  # verdict.matched
    host: str = HOST
    openssl: bool | None = None  # what s_client (a SHA2-512 client) says, when it differs

    @property
    def openssl_expected(self) -> bool:
        return self.expected if self.openssl is None else self.openssl


def _key(w: World, served: str) -> certgen.PrivateKey:
    keys = {
        "ee": w.base.leaf.key, "full": w.base.leaf.key, "shuffled": w.base.leaf.key,
        "deep": w.deep.leaf.key, "expired": w.expired.leaf.key, "wild": w.wild.key,
        "cn": w.cn_only.key, "notca": w.under_not_ca.key, "oldinter": w.under_old.key,
    }
    return keys[served]


CASES = [
    # DANE-EE
    Case("311-match", "ee", lambda w: [rec(w.base.leaf)], True),
    Case("311-nomatch", "ee", lambda w: [wrong()], False),
    Case("311-other-key", "ee", lambda w: [rec(w.deep.leaf)], False),
    Case("301-match", "ee", lambda w: [rec(w.base.leaf, 3, 0, 1)], True),
    Case("302-match", "ee", lambda w: [rec(w.base.leaf, 3, 0, 2)], True),
    Case("312-match", "ee", lambda w: [rec(w.base.leaf, 3, 1, 2)], True),
    Case("310-match", "ee", lambda w: [rec(w.base.leaf, 3, 1, 0)], True),
    Case("311-rsa-deep", "deep", lambda w: [rec(w.deep.leaf)], True),
    Case("311-wrong-host-ignored", "full", lambda w: [rec(w.base.leaf)], True,
         host="other.example.test"),
    Case("311-expired-leaf-ok", "expired", lambda w: [rec(w.expired.leaf)], True),
    Case("311-under-expired-intermediate-ok", "oldinter", lambda w: [rec(w.under_old)], True),
    # DANE-TA
    Case("211-root-served", "full", lambda w: [rec(w.base.root, 2)], True),
    Case("211-root-not-served", "ee", lambda w: [rec(w.base.root, 2)], False),
    Case("211-intermediate", "ee", lambda w: [rec(w.base.intermediates[0], 2)], True),
    Case("201-root-served", "full", lambda w: [rec(w.base.root, 2, 0, 1)], True),
    Case("212-intermediate", "full", lambda w: [rec(w.base.intermediates[0], 2, 1, 2)], True),
    Case("211-root-shuffled-chain", "shuffled", lambda w: [rec(w.base.root, 2)], True),
    Case("211-deep-middle", "deep", lambda w: [rec(w.deep.intermediates[1], 2)], True),
    Case("211-deep-root", "deep", lambda w: [rec(w.deep.root, 2)], True),
    Case("211-wrong-host", "full", lambda w: [rec(w.base.root, 2)], False,
         host="other.example.test"),
    Case("211-expired-leaf", "expired", lambda w: [rec(w.expired.root, 2)], False),
    Case("211-expired-intermediate", "oldinter", lambda w: [rec(w.base.root, 2)], False),
    # the trust anchor's own dates do not count (RFC 5280 path validation; OpenSSL agrees)
    Case("211-expired-intermediate-as-ta", "oldinter", lambda w: [rec(w.old_inter, 2)], True),
    Case("201-expired-intermediate-as-ta", "oldinter", lambda w: [rec(w.old_inter, 2, 0, 1)],
         True),
    Case("211-matches-leaf-only", "full", lambda w: [rec(w.base.leaf, 2)], False),
    Case("211-other-root", "full", lambda w: [rec(w.deep.root, 2)], False),
    Case("211-issuer-not-ca", "notca", lambda w: [rec(w.base.root, 2)], False),
    Case("211-ta-not-ca", "notca", lambda w: [rec(w.not_ca, 2)], False),
    Case("210-root-key-not-served", "ee", lambda w: [rec(w.base.root, 2, 1, 0)], True),
    Case("200-root-cert-not-served", "ee", lambda w: [rec(w.base.root, 2, 0, 0)], True),
    Case("211-wildcard", "wild", lambda w: [rec(w.base.root, 2)], True),
    Case("211-wildcard-two-labels", "wild", lambda w: [rec(w.base.root, 2)], False,
         host="a.mail.example.test"),
    Case("211-wildcard-bare-domain", "wild", lambda w: [rec(w.base.root, 2)], False,
         host="example.test"),
    Case("211-cn-only", "cn", lambda w: [rec(w.base.root, 2)], True),
    Case("211-cn-only-wrong-host", "cn", lambda w: [rec(w.base.root, 2)], False,
         host="other.example.test"),
    Case("211-host-case", "full", lambda w: [rec(w.base.root, 2)], True,
         host="MAIL.Example.TEST"),
    # PKIX usages are unusable for SMTP
    Case("111-leaf", "ee", lambda w: [rec(w.base.leaf, 1)], False),
    Case("011-root", "full", lambda w: [rec(w.base.root, 0)], False),
    Case("111-plus-311", "ee", lambda w: [rec(w.base.leaf, 1), rec(w.base.leaf)], True),
    # digest agility (RFC 7671 section 9)
    Case("311-good-312-bad", "ee", lambda w: [rec(w.base.leaf), wrong(3, 1, 2)], False),
    Case("312-good-311-bad", "ee", lambda w: [rec(w.base.leaf, 3, 1, 2), wrong()], False,
         openssl=True),
    # Full(0) is not a digest: it counts next to 3 1 1 for every client (as in OpenSSL)
    Case("310-good-311-bad", "ee", lambda w: [rec(w.base.leaf, 3, 1, 0), wrong()], True),
    Case("311-good-310-bad", "ee", lambda w: [rec(w.base.leaf), wrong(3, 1, 0)], True),
    Case("311-bad-211-good", "ee", lambda w: [wrong(), rec(w.base.intermediates[0], 2)], True),
    Case("311-and-312-good", "ee", lambda w: [rec(w.base.leaf), rec(w.base.leaf, 3, 1, 2)],
         True),
    Case("301-good-311-bad", "ee", lambda w: [rec(w.base.leaf, 3, 0, 1), wrong()], True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdict_agrees_with_openssl(case: Case, world: World, servers: Servers) -> None:
    chain = world.served[case.served]
    records = case.records(world)
    verdict = match_chain(chain, [TLSARecord.from_text(r) for r in records], case.host, NOW)
    port = servers.get(case.served, _key(world, case.served))
    ok, out = s_client(servers.address, port, case.host, records)
    assert ok == case.openssl_expected, f"openssl: {out}"
    assert (verdict.by_preference[Preference.SHA2_512] is not None) == ok, verdict.reason
    assert verdict.matched == case.expected, verdict.reason
    assert "\n" not in verdict.reason and verdict.reason
    if verdict.matched:
        m = verdict.match
        assert m is not None
        assert m.describe() in verdict.reason
        # the depth OpenSSL reports for the match agrees with ours
        depth_word = "EE certificate at depth 0" if m.record.usage == 3 else f"depth {m.depth}"
        if not m.key_only:
            assert depth_word in out, out


# --------------------------------------------------------------------------- pure details


def test_verdict_reports_where_and_why(world: World) -> None:
    chain = world.served["full"]
    root_211 = TLSARecord.from_text(rec(world.base.root, 2))
    v = match_chain(chain, [root_211, TLSARecord.from_text(rec(world.base.leaf, 1))], HOST, NOW)
    assert v.matched and v.match is not None and v.match.depth == 2
    assert "DANE-TA" in v.reason and "depth 2" in v.reason and "Rollover Test Root" in v.reason
    assert [i.record.usage for i in v.ignored] == [1]
    assert "unusable for SMTP" in v.ignored[0].reason
    assert v.path == tuple(tlsa.name_text(c.subject) for c in chain)
    d = v.to_dict()
    assert d["matched"] is True and d["by_preference"]["sha2-512"]["depth"] == 2

    v = match_chain(world.served["ee"], [root_211], HOST, NOW)
    assert not v.matched and "RFC 7672 section 3.1.2" in v.reason

    v = match_chain(world.served["expired"], [TLSARecord.from_text(rec(world.expired.root, 2))],
                    HOST, NOW)
    assert not v.matched and "leaf expired" in v.reason

    v = match_chain(chain, [root_211], "other.example.test", NOW)
    assert "host name other.example.test is not in the leaf" in v.reason


def test_agility_reason_names_the_preference(world: World) -> None:
    good_312 = TLSARecord.from_text(rec(world.base.leaf, 3, 1, 2))
    bad_311 = TLSARecord.from_text(wrong())
    v = match_chain(world.served["ee"], [good_312, bad_311], HOST, NOW)
    assert not v.matched
    assert v.by_preference[Preference.SHA2_512] is not None
    assert v.by_preference[Preference.SHA2_256] is None
    assert "SHA2-256 finds no match" in v.reason and "RFC 7671 section 9" in v.reason


def test_no_usable_records(world: World) -> None:
    chain = world.served["ee"]
    recs = [TLSARecord(1, 1, 1, b"\x01" * 32), TLSARecord(4, 1, 1, b"\x01" * 32),
            TLSARecord(3, 2, 1, b"\x01" * 32), TLSARecord(3, 1, 7, b"\x01"),
            TLSARecord(3, 1, 1, b"\x01" * 5)]
    v = match_chain(chain, recs, HOST, NOW)
    assert not v.matched and v.reason.startswith("no usable TLSA records")
    assert len(v.ignored) == 5
    assert not match_chain(chain, [], HOST, NOW).matched
    assert match_chain([], [TLSARecord.from_text(rec(world.base.leaf))], HOST, NOW).reason == (
        "the server sent no certificate")


def test_time_is_the_callers(world: World) -> None:
    """`now` decides validity for DANE-TA: before not_before and after not_after both fail."""
    chain = world.served["full"]
    ta = [TLSARecord.from_text(rec(world.base.root, 2))]
    leaf = world.base.leaf.cert
    assert match_chain(chain, ta, HOST, NOW).matched
    early = leaf.not_valid_before_utc - timedelta(seconds=1)
    assert not match_chain(chain, ta, HOST, early).matched
    late = match_chain(chain, ta, HOST, leaf.not_valid_after_utc + timedelta(seconds=1))
    assert not late.matched and "expired" in late.reason
    # DANE-EE does not care
    ee = [TLSARecord.from_text(rec(world.base.leaf))]
    assert match_chain(chain, ee, HOST, leaf.not_valid_after_utc + timedelta(days=999)).matched


def test_path_length_limit() -> None:
    root = certgen.make_root("PL Root", certgen.new_key("p256"))
    i1 = certgen.make_ca("PL I1", root, certgen.new_key("p256"), path_length=0)
    i2 = certgen.make_ca("PL I2", i1, certgen.new_key("p256"))
    leaf = certgen.make_leaf(i2, [HOST], certgen.new_key("p256"))
    chain = [leaf.cert, i2.cert, i1.cert, root.cert]
    v = match_chain(chain, [TLSARecord.from_text(rec(root, 2))], HOST, NOW)
    assert not v.matched and "path length" in v.reason
    assert match_chain(chain, [TLSARecord.from_text(rec(i2, 2))], HOST, NOW).matched


@pytest.mark.parametrize(("pattern", "host", "ok"), [
    ("mail.example.test", "mail.example.test", True),
    ("MAIL.example.test.", "mail.EXAMPLE.test", True),
    ("mail.example.test", "mail.example.test.", True),  # an absolute MX name
    ("*.example.test", "mail.example.test", True),
    ("*.example.test", "a.mail.example.test", False),
    ("*.example.test", "example.test", False),
    ("*.test", "example.test", False),
    ("m*.example.test", "mail.example.test", False),
    ("mail.*.test", "mail.example.test", False),
    ("other.example.test", "mail.example.test", False),
])
def test_host_name_rules(pattern: str, host: str, ok: bool) -> None:
    cert = certgen.make_leaf(None, [pattern], certgen.key("p256")).cert
    assert dane.host_matches(cert, host) is ok


def test_cn_only_when_no_san() -> None:
    with_san = certgen.make_leaf(None, ["other.example.test"], certgen.key("p256"), cn=HOST)
    assert not dane.host_matches(with_san.cert, HOST)
    no_san = certgen.make_leaf(None, [], certgen.key("p256"), cn=HOST)
    assert dane.host_matches(no_san.cert, HOST)


def test_match_key_and_cert(world: World) -> None:
    leaf = world.base.leaf
    for mtype in (0, 1, 2):
        r = TLSARecord.from_text(rec(leaf, 3, 1, mtype))
        assert dane.match_key(r, leaf.key.public_key())
        assert dane.match_cert(r, leaf.cert)
        assert not dane.match_key(r, world.deep.leaf.key.public_key())
    r0 = TLSARecord.from_text(rec(leaf, 3, 0, 1))
    assert dane.match_cert(r0, leaf.cert)
    assert not dane.match_key(r0, leaf.key.public_key())  # selector 0 needs the certificate
