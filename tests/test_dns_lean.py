"""rollover.dns.lean: a reply read without the sections its reader does not look at, or whole
when the answer section alone does not settle it; rollover.dns.query.query_wire."""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import pytest

from rollover.dns.lean import Need, parse
from rollover.dns.query import Question, make_query, query_wire

OWNER = "_25._tcp.mail.example.test."
ZONE = "example.test."
TLSA = "3 1 1 " + "ab" * 32
SIG = ("TLSA 13 5 3 20300101000000 20200101000000 14308 example.test. "
       "pMjO2UoqgxNhKRrgJ9c4wKBo2NMX5yeUJxQOklwFPpRbIu0JDSmqIg8Juul05qQWhuWo3+nF76e2MZA1a7LosA==")


def reply(owner: str = OWNER, *, answer: bool = True, labels: int = 5,
          rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    """A BIND-like reply: the answer, the zone's NS in authority, glue in additional."""
    q = make_query(owner, "TLSA", recursion=False, dnssec=True)
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    r.use_edns(0, dns.flags.DO, 1232)
    r.set_rcode(rcode)
    if answer:
        r.answer.append(dns.rrset.from_text(owner, 3, "IN", "TLSA", TLSA))
        r.answer.append(dns.rrset.from_text(owner, 3, "IN", "RRSIG",
                                            SIG.replace(" 5 3 ", f" {labels} 3 ")))
    r.authority.append(dns.rrset.from_text(ZONE, 2, "IN", "NS", "ns1.example.test.",
                                           "ns2.example.test."))
    r.additional.append(dns.rrset.from_text("ns1.example.test.", 2, "IN", "A", "192.0.2.1"))
    return r


def test_positive_answer_is_read_without_authority_and_additional() -> None:
    full = reply()
    lean = parse(full.to_wire(), Need.ANSWER)
    assert lean.answer == full.answer and lean.question == full.question
    assert lean.authority == [] and lean.additional == []
    assert lean.flags == full.flags and lean.rcode() == dns.rcode.NOERROR
    assert lean.ednsflags & dns.flags.DO and lean.payload == full.payload
    assert lean.id == full.id


def test_negative_wildcard_and_cname_only_answers_are_read_whole() -> None:
    for full in (reply(answer=False, rcode=dns.rcode.NXDOMAIN), reply(answer=False),
                 reply(labels=4)):  # 4 < 5 labels: a wildcard expansion, proof in authority
        lean = parse(full.to_wire(), Need.ANSWER)
        assert lean.authority == full.authority and lean.additional == full.additional
    other = reply()
    other.answer[0] = dns.rrset.from_text(OWNER, 3, "IN", "CNAME", "elsewhere.example.")
    assert parse(other.to_wire(), Need.ANSWER).authority == other.authority


def test_rcode_only_keeps_the_extended_rcode() -> None:
    full = reply(answer=False, rcode=dns.rcode.NXDOMAIN)
    lean = parse(full.to_wire(), Need.RCODE)
    assert lean.rcode() == dns.rcode.NXDOMAIN and lean.answer == [] and lean.authority == []
    badvers = reply(answer=False, rcode=dns.rcode.BADVERS)  # 16: needs the OPT record's bits
    assert parse(badvers.to_wire(), Need.RCODE).rcode() == dns.rcode.BADVERS


def test_malformed_replies_fail_as_dnspython_says() -> None:
    wire = reply().to_wire()
    for bad in (wire[:5], wire[:40], wire[:-3], wire + b"\x00"):
        with pytest.raises(dns.exception.DNSException) as whole:
            dns.message.from_wire(bad)
        for need in (Need.ANSWER, Need.RCODE):
            with pytest.raises(type(whole.value)):
                parse(bad, need)


def test_a_signed_reply_is_read_whole() -> None:
    keyring = dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    full = reply()
    full.use_tsig(keyring, "k.")
    with pytest.raises(dns.message.UnknownTSIGKey):
        parse(full.to_wire(), Need.ANSWER)  # as from_wire without a keyring


@pytest.mark.parametrize("recursion", [False, True])
@pytest.mark.parametrize("dnssec", [False, True])
def test_query_wire_is_make_query_to_wire(recursion: bool, dnssec: bool) -> None:
    q = Question("192.0.2.1", dns.name.from_text("_25._tcp.Mail.example."), dns.rdatatype.TLSA,
                 recursion=recursion, dnssec=dnssec)
    msg = make_query(q.qname, q.rdtype, recursion=recursion, dnssec=dnssec)
    msg.id = 0x1234
    assert query_wire(q, 0x1234) == msg.to_wire()
