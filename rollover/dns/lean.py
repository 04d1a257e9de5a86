"""Parse only the sections of a reply that its reader looks at.

dnspython parses every record of every section: ~0.7 ms for a BIND TLSA answer that carries the
zone's NS RRset, glue and their RRSIGs, when an observation round reads thousands of replies and
looks only at their answer section (or, for `_tcp.<host>`, only at the rcode).

The wire is walked record by record (every length checked), the sections not needed are cut off
and the OPT record is kept (extended rcode, DO bit). Cutting the tail is safe: a name may only
point back to an earlier offset (dnspython refuses forward pointers). A reply whose answer section
alone does not settle the question (no answer RRset, a wildcard expansion whose NSEC proof is in
the authority section) is parsed whole, as is anything unusual (TSIG, two OPT records).
"""

from __future__ import annotations

from enum import StrEnum

import dns.message
import dns.rcode
import dns.rdatatype

from rollover.dns.dnssec import answer_rrset

HEADER = 12
OPT = int(dns.rdatatype.OPT)
TSIG = int(dns.rdatatype.TSIG)
RRSIG = dns.rdatatype.RRSIG


class Need(StrEnum):
    ALL = "all"  # every section (discovery, negative answers)
    ANSWER = "answer"  # the answer section: a positive answer is judged on it alone
    RCODE = "rcode"  # the header and rcode only (is `_tcp.<host>` NXDOMAIN?)


def parse(wire: bytes, need: Need = Need.ALL) -> dns.message.Message:
    """The reply as dnspython reads it, without the sections `need` leaves out; raises what
    `dns.message.from_wire` raises for a malformed reply."""
    if need is Need.ALL or len(wire) < HEADER:
        return dns.message.from_wire(wire)
    counts = [int.from_bytes(wire[i:i + 2], "big") for i in range(4, HEADER, 2)]
    qd, an, ns, ar = counts
    basic_rcode = wire[3] & 0x0F
    if need is Need.ANSWER and (an == 0 or basic_rcode != dns.rcode.NOERROR):
        return dns.message.from_wire(wire)  # negative: the proof is in the authority section
    try:
        pos = HEADER
        for _ in range(qd):
            pos = _skip_name(wire, pos) + 4
        question_end = pos
        for _ in range(an):
            pos = _skip_rr(wire, pos)[1]
        answer_end = pos
        for _ in range(ns):
            pos = _skip_rr(wire, pos)[1]
        opts: list[bytes] = []
        for _ in range(ar):
            start = pos
            rtype, pos = _skip_rr(wire, pos)
            if rtype == TSIG:
                return dns.message.from_wire(wire)
            if rtype == OPT:
                opts.append(wire[start:pos])
    except IndexError:
        return dns.message.from_wire(wire)  # short or malformed: dnspython says how
    if len(opts) > 1 or pos != len(wire):  # trailing junk: dnspython refuses it
        return dns.message.from_wire(wire)
    kept_an, end = (an, answer_end) if need is Need.ANSWER else (0, question_end)
    header = wire[:4] + b"".join(n.to_bytes(2, "big") for n in (qd, kept_an, 0, len(opts)))
    msg = dns.message.from_wire(header + wire[HEADER:end] + b"".join(opts))
    if need is Need.ANSWER and not _settled(msg):
        return dns.message.from_wire(wire)
    return msg


def _settled(msg: dns.message.Message) -> bool:
    """The answer section answers the question, and not by wildcard expansion (whose proof of
    the closer name's absence is in the authority section)."""
    if len(msg.question) != 1:
        return False
    q = msg.question[0]
    if answer_rrset(msg, q.name, q.rdtype) is None:
        return False
    return not any(rrset.rdtype == RRSIG and any(s.labels < len(rrset.name) - 1 for s in rrset)
                   for rrset in msg.answer)


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > len(wire):
                raise IndexError(pos)
            return pos + 2
        if length & 0xC0:
            raise IndexError(pos)  # an extended label type: let dnspython refuse it
        pos += 1 + length


def _skip_rr(wire: bytes, pos: int) -> tuple[int, int]:
    """(type, offset after the record) of the resource record at `pos`."""
    pos = _skip_name(wire, pos)
    if pos + 10 > len(wire):
        raise IndexError(pos)
    rtype = int.from_bytes(wire[pos:pos + 2], "big")
    end = pos + 10 + int.from_bytes(wire[pos + 8:pos + 10], "big")
    if end > len(wire):
        raise IndexError(pos)
    return rtype, end

