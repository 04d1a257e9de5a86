"""`rollover check --domain` through real recursive resolvers (BIND, `lab.resolver`): the AD bit
of a validating resolver, a bogus chain, a resolver that does not validate, an unsigned zone,
and RFC 7672 2.2.2's rule that a CNAME-expanded TLSA base needs a DNSSEC-secure CNAME chain.

Names (example.test. is signed with a DS in test.; plain.test. is delegated without a DS):
  res.example.test   MX mxr.res          TLSA at mxr.res (signed): the good case
  cn.example.test    MX alias.cn         alias.cn CNAME mxr.res, in the signed zone
  ins.example.test   MX mx.plain.test.   mx.plain.test CNAME mxr.res.example.test, unsigned
  uns.example.test   MX mail.plain.test. TLSA at mail.plain.test: no AD from a validating resolver
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rollover.cli.main import main
from rollover.dane import tlsa
from rollover.environment import Environment
from rollover.errors import ExitStatus

from lab.dns import DnsLab
from lab.pki import chain_file_bytes, generate_key, self_signed, write_private
from lab.postfix import PostfixLab
from lab.resolver import ResolverLab
from schema_check import validate


@dataclass
class Lab:
    resolvers: ResolverLab
    anchor: Path
    records: list[str]


def _run(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["check", *argv], env=Environment(environ={}))
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def lab(dns_lab: DnsLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    net = dns_lab.net
    tmp = tmp_path_factory.mktemp("resolver")
    pf = PostfixLab(hostname="mxr.res.example.test")
    pf.address = f"{net}.27"
    pf.tls_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for alg in ("ecdsa-p256", "rsa2048"):
        key = generate_key(alg)
        cert = self_signed(key, ["mxr.res.example.test"])
        write_private(pf.chain_files[alg], chain_file_bytes(key, [cert]))
        records.append(tlsa.tlsa_record(cert, 3, 1, 1).to_text())
    records.sort()
    res = ResolverLab(dns_lab)
    u = dns_lab.update
    try:
        pf.start()
        dns_lab.secure_delegation()
        anchor = tmp / "test.anchor"
        anchor.write_text(dns_lab.parent_anchor_text())
        res.start(anchor.read_text())
        u("mxr.res", "A", 2, [f"{net}.27"])
        u("res", "MX", 2, ["10 mxr.res"])
        u("alias.cn", "CNAME", 2, ["mxr.res"])
        u("cn", "MX", 2, ["10 alias.cn"])
        u("ins", "MX", 2, ["10 mx.plain.test."])
        u("uns", "MX", 2, ["10 mail.plain.test."])
        res.update_plain("mx.plain.test.", "CNAME", ["mxr.res.example.test."])
        res.update_plain("mail.plain.test.", "A", [f"{net}.27"])
        res.update_plain("_25._tcp.mail.plain.test.", "TLSA", records)
        u("_25._tcp.mxr.res", "TLSA", 1800, records)  # last: once served, all the rest is
        dns_lab.wait_all("_25._tcp.mxr.res", "TLSA", records)
        yield Lab(res, anchor, records)
    finally:
        for owner, rtype in (("mxr.res", "A"), ("res", "MX"), ("_25._tcp.mxr.res", "TLSA"),
                             ("alias.cn", "CNAME"), ("cn", "MX"), ("ins", "MX"),
                             ("uns", "MX")):
            dns_lab.delete(owner, rtype)
        res.stop()
        pf.close()


def _doc(code_out: tuple[int, str]) -> tuple[int, dict[str, Any]]:
    code, out = code_out
    doc = json.loads(out)
    validate(doc, "check-domain.schema.json")
    return code, doc


def _findings(doc: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((f["code"], f["severity"]) for f in doc["findings"])


def _by_resolver(lab: Lab, domain: str, validating: str, *extra: str) -> tuple[int, str]:
    return _run("--domain", domain, "--resolver", lab.resolvers.validating,
                "--validating-resolver", validating, *extra)


# --------------------------------------------------------------------------- the AD bit


@pytest.mark.lab
def test_signed_tlsa_passes_and_says_validated_by_the_resolver(lab: Lab) -> None:
    v = lab.resolvers.validating
    code, out = _by_resolver(lab, "res.example.test", v)
    assert code == ExitStatus.OK, out
    assert f"DNSSEC: validated by resolver {v} (AD bit)" in out
    assert f"  DNSSEC: valid, validated by resolver {v} (AD bit)" in out
    code, doc = _doc(_by_resolver(lab, "res.example.test", v, "--json"))
    assert code == ExitStatus.OK and doc["findings"] == []
    (mx,) = doc["mx"]
    assert mx["dnssec"]["state"] == "secure" and mx["dnssec"]["secure"] is True
    assert mx["chains"] and all(c["ok"] for c in mx["chains"])


@pytest.mark.lab
def test_bogus_chain_servfail_is_critical(lab: Lab) -> None:
    """A resolver whose trust anchor for test. is not test.'s key: SERVFAIL, bogus."""
    code, doc = _doc(_by_resolver(lab, "res.example.test", lab.resolvers.bogus, "--json"))
    assert code == ExitStatus.ERROR
    assert _findings(doc) == Counter({("dnssec-invalid", "critical"): 1})
    (mx,) = doc["mx"]
    assert mx["dnssec"]["state"] == "bogus"
    assert "SERVFAIL" in mx["dnssec"]["reason"] and "(CD)" in mx["dnssec"]["reason"]
    assert all(c["ok"] for c in mx["chains"])  # the chains match: DNSSEC alone fails it
    code, out = _by_resolver(lab, "res.example.test", lab.resolvers.bogus, "--nagios")
    assert code == ExitStatus.ERROR and out.startswith("DANE CRITICAL - "), out


@pytest.mark.lab
def test_resolver_that_does_not_validate_is_not_trusted(lab: Lab) -> None:
    plain = lab.resolvers.plain
    code, doc = _doc(_by_resolver(lab, "res.example.test", plain, "--json"))
    assert code == ExitStatus.ERROR, doc["findings"]
    assert _findings(doc) == Counter({("dnssec-unverified", "critical"): 1})
    (f,) = doc["findings"]
    assert f"{plain} does not validate" in f["message"]
    # it was asked about every ancestor up to the root, and set AD on none
    assert "res.example.test., example.test., test., . (DNSKEY)" in f["message"]
    assert doc["mx"][0]["dnssec"]["state"] == "indeterminate"


@pytest.mark.lab
def test_tlsa_in_unsigned_zone_has_no_ad_and_is_insecure(lab: Lab) -> None:
    code, doc = _doc(_by_resolver(lab, "uns.example.test", lab.resolvers.validating, "--json"))
    assert code == ExitStatus.ERROR
    (mx,) = doc["mx"]
    assert mx["tlsa_base"] == "mail.plain.test" and all(c["ok"] for c in mx["chains"])
    assert mx["dnssec"]["state"] == "insecure"
    assert "AD on test. DNSKEY" in mx["dnssec"]["reason"]
    got = _findings(doc)
    assert got[("dnssec-invalid", "critical")] == 1
    assert "dnssec-unverified" not in {c for c, _s in got}


# --------------------------------------------------------------------------- CNAME chains


def _both_ways(lab: Lab, domain: str) -> list[tuple[int, dict[str, Any]]]:
    by_resolver = _doc(_by_resolver(lab, domain, lab.resolvers.validating, "--json"))
    by_anchor = _doc(_run("--domain", domain, "--resolver", lab.resolvers.validating,
                          "--trust-anchor", str(lab.anchor), "--json"))
    return [by_resolver, by_anchor]


@pytest.mark.lab
def test_secure_cname_chain_uses_the_expanded_base(lab: Lab) -> None:
    for code, doc in _both_ways(lab, "cn.example.test"):
        (mx,) = doc["mx"]
        assert code == ExitStatus.OK, json.dumps([doc["dnssec_method"], doc["findings"]])
        assert mx["cname_chain"] == ["mxr.res.example.test"]
        assert mx["cname_secure"] is True
        assert list(mx["cname_dnssec"]) == ["alias.cn.example.test."]
        assert mx["cname_dnssec"]["alias.cn.example.test."]["state"] == "secure"
        assert mx["tlsa_base"] == "mxr.res.example.test"
        assert "CNAME-expanded" in mx["tlsa_base_reason"]


@pytest.mark.lab
def test_insecure_cname_chain_allows_only_the_original_name(lab: Lab) -> None:
    """mx.plain.test CNAME mxr.res.example.test: the target's TLSA records validate, but a
    sender cannot trust the unsigned CNAME, so only _25._tcp.mx.plain.test counts (none)."""
    for code, doc in _both_ways(lab, "ins.example.test"):
        (mx,) = doc["mx"]
        assert code == ExitStatus.ERROR
        assert mx["cname_chain"] == ["mxr.res.example.test"]
        assert mx["cname_secure"] is False
        assert mx["cname_dnssec"]["mx.plain.test."]["state"] == "insecure", json.dumps(
            mx["cname_dnssec"])
        assert mx["tlsa_base"] == "mx.plain.test"
        assert mx["owner"] == "_25._tcp.mx.plain.test."
        assert "not DNSSEC-secure" in mx["tlsa_base_reason"]
        got = _findings(doc)
        assert got[("cname-insecure", "warning")] == 1
        assert got[("tlsa-missing", "critical")] == 1
        (f,) = [f for f in doc["findings"] if f["code"] == "cname-insecure"]
        assert f["subject"] == "mx.plain.test"
        assert "_25._tcp.mx.plain.test" in f["advice"]
