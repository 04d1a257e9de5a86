"""One DNS query to one explicit address: UDP, then TCP when the answer is truncated.

`query_wave` asks many questions at once: one non-blocking UDP socket per server address, a bound
on the queries in flight per address, answers matched by id and question, truncated answers
asked again over TCP.

Never uses the system resolver: every query goes to an address the caller names. Failures do not
raise; they come back as a `Reply` with a pseudo rcode ("TIMEOUT", "UNREACHABLE", "BADREPLY") and
an operator-readable `error`, so a round over many servers can report each one.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import socket
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from rollover.dns import lean
from rollover.dns.lean import Need

EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: avoids fragmentation, TCP takes the rest


@dataclass(frozen=True)
class Reply:
    """The outcome of one query: a message, or why there is none."""

    rcode: str  # "NOERROR", "NXDOMAIN", "REFUSED", ... or "TIMEOUT", "UNREACHABLE", "BADREPLY"
    message: dns.message.Message | None = None
    error: str | None = None  # set when message is None
    tcp: bool = False  # the answer came over TCP (UDP was truncated)

    @property
    def answered(self) -> bool:
        return self.message is not None

    @property
    def authoritative(self) -> bool:
        return self.message is not None and bool(self.message.flags & dns.flags.AA)


def make_query(qname: dns.name.Name | str, rdtype: str | dns.rdatatype.RdataType, *,
               recursion: bool, dnssec: bool) -> dns.message.Message:
    q = dns.message.make_query(qname, rdtype, use_edns=0, want_dnssec=dnssec,
                               payload=EDNS_PAYLOAD)
    if not recursion:
        q.flags &= ~dns.flags.RD
    return q


def query(address: str, qname: dns.name.Name | str, rdtype: str | dns.rdatatype.RdataType, *,
          port: int = 53, timeout: float = 2.0, recursion: bool = False,
          dnssec: bool = True) -> Reply:
    """Ask `address` once (UDP, TCP on truncation). RD off unless `recursion`; DO if `dnssec`."""
    q = make_query(qname, rdtype, recursion=recursion, dnssec=dnssec)
    try:
        response, tcp = dns.query.udp_with_fallback(q, address, timeout=timeout, port=port)
    except dns.exception.Timeout:
        return Reply("TIMEOUT", error=f"no answer within {timeout:g}s (timeout)")
    except ConnectionRefusedError:
        return Reply("UNREACHABLE", error="connection refused")
    except OSError as exc:
        return Reply("UNREACHABLE", error=f"unreachable: {exc.strerror or exc}")
    except dns.exception.DNSException as exc:
        return Reply("BADREPLY", error=f"bad reply: {exc}")
    return Reply(dns.rcode.to_text(response.rcode()), message=response, tcp=tcp)


# --- many queries at once ----------------------------------------------------------------------

DEFAULT_IN_FLIGHT = 32  # queries outstanding at once per server address (see README, "dns")
TCP_WORKERS = 8  # truncated answers are asked again over TCP, this many at a time
RECV_BUFFER = 1 << 20


@dataclass(frozen=True)
class Question:
    """One query of a wave: `rdtype` `qname` asked of `address`."""

    address: str
    qname: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    recursion: bool = False
    dnssec: bool = True
    need: Need = Need.ALL  # the sections of the reply its reader looks at (rollover.dns.lean)


@dataclass
class _Sent:
    index: int
    deadline: float


def query_wire(q: Question, qid: int) -> bytes:
    """`make_query(...).to_wire()` with id `qid`, without building a message (a wave sends
    thousands): the header, the question, an OPT record (payload, DO)."""
    name = q.qname.to_wire()  # uncompressed, case kept, as make_query renders it
    assert name is not None
    flags = dns.flags.RD if q.recursion else 0
    ednsflags = dns.flags.DO if q.dnssec else 0
    return (struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1) + name
            + struct.pack("!HH", int(q.rdtype), dns.rdataclass.IN)
            + struct.pack("!BHHIH", 0, dns.rdatatype.OPT, EDNS_PAYLOAD, ednsflags, 0))


def _answers(q: Question, response: dns.message.Message) -> bool:
    """`Message.is_response` for a query built by `query_wire` (its id already matched)."""
    if not response.flags & dns.flags.QR or dns.opcode.from_flags(response.flags) != 0:
        return False
    if not response.question:
        return response.rcode() in (dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP,
                                    dns.rcode.REFUSED)
    return all(r.name == q.qname and r.rdtype == q.rdtype and r.rdclass == dns.rdataclass.IN
               for r in response.question)


class _Server:
    """One non-blocking UDP socket to one server address; its queue and what is in flight."""

    def __init__(self, address: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        self.target = (address, port)
        self.queue: collections.deque[int] = collections.deque()
        self.flight: dict[int, _Sent] = {}
        self.dead: str | None = None  # why every query to it fails at once (port closed)
        self._ids: list[int] = []
        try:
            self.sock.connect(self.target)  # connected: ICMP port-unreachable comes back to us
        except OSError as exc:
            self.dead = f"unreachable: {exc.strerror or exc}"

    def next_id(self) -> int:
        """A random query id not in flight (drawn 256 at a time: one urandom call, not one
        per query)."""
        while True:
            if not self._ids:
                raw = os.urandom(512)
                self._ids = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 512, 2)]
            qid = self._ids.pop()
            if qid not in self.flight:
                return qid


def query_wave(questions: Sequence[Question], *, port: int = 53, timeout: float = 2.0,
               in_flight: int = DEFAULT_IN_FLIGHT,
               monotonic: Callable[[], float]) -> list[Reply]:
    """Every question asked at once over UDP (at most `in_flight` outstanding per server
    address), truncated answers again over TCP. Replies in the order of `questions`; failures
    are Replies like `query`'s (TIMEOUT, UNREACHABLE, BADREPLY), never exceptions."""
    replies: list[Reply | None] = [None] * len(questions)
    servers: dict[str, _Server] = {}
    truncated: list[int] = []
    for i, q in enumerate(questions):
        srv = servers.get(q.address)
        if srv is None:
            srv = servers[q.address] = _Server(q.address, port)
        srv.queue.append(i)
    selector = selectors.DefaultSelector()
    try:
        for srv in servers.values():
            if srv.dead is None:
                selector.register(srv.sock, selectors.EVENT_READ, srv)
        while True:
            now = monotonic()
            for srv in servers.values():
                _fill(srv, questions, replies, now + timeout, max(1, in_flight))
                _expire(srv, replies, now, timeout)
            busy = [s for s in servers.values() if s.flight or (s.queue and s.dead is None)]
            if not busy:
                break
            deadlines = [s.deadline for srv in busy for s in srv.flight.values()]
            wait = max(0.0, min(deadlines) - monotonic()) if deadlines else 0.0
            for key, _events in selector.select(wait):
                _receive(key.data, questions, replies, truncated)
        for srv in servers.values():
            for i in srv.queue:  # a server found dead with questions still queued
                replies[i] = Reply("UNREACHABLE", error=srv.dead or "unreachable")
    finally:
        selector.close()
        for srv in servers.values():
            srv.sock.close()
    if truncated:
        with ThreadPoolExecutor(max_workers=min(TCP_WORKERS, len(truncated))) as pool:
            done = pool.map(lambda i: _tcp(questions[i], port, timeout), truncated)
            for i, reply in zip(truncated, done, strict=True):
                replies[i] = reply
    out = [r for r in replies if r is not None]
    assert len(out) == len(questions)
    return out


def _fill(srv: _Server, questions: Sequence[Question], replies: list[Reply | None],
          deadline: float, bound: int) -> None:
    while srv.queue and srv.dead is None and len(srv.flight) < bound:
        i = srv.queue.popleft()
        qid = srv.next_id()
        try:
            srv.sock.send(query_wire(questions[i], qid))
        except ConnectionRefusedError:
            _kill(srv, replies, "connection refused")
            replies[i] = Reply("UNREACHABLE", error="connection refused")
            return
        except BlockingIOError:
            srv.queue.appendleft(i)  # the socket buffer is full: try again on the next pass
            return
        except OSError as exc:
            replies[i] = Reply("UNREACHABLE", error=f"unreachable: {exc.strerror or exc}")
            continue
        srv.flight[qid] = _Sent(i, deadline)


def _expire(srv: _Server, replies: list[Reply | None], now: float, timeout: float) -> None:
    for qid in [qid for qid, s in srv.flight.items() if s.deadline <= now]:
        sent = srv.flight.pop(qid)
        replies[sent.index] = Reply("TIMEOUT", error=f"no answer within {timeout:g}s (timeout)")


def _kill(srv: _Server, replies: list[Reply | None], why: str) -> None:
    srv.dead = why
    for sent in srv.flight.values():
        replies[sent.index] = Reply("UNREACHABLE", error=why)
    srv.flight.clear()


def _receive(srv: _Server, questions: Sequence[Question], replies: list[Reply | None],
             truncated: list[int]) -> None:
    while True:
        try:
            wire = srv.sock.recv(65535)
        except BlockingIOError:
            return
        except ConnectionRefusedError:
            _kill(srv, replies, "connection refused")
            return
        except OSError as exc:
            _kill(srv, replies, f"unreachable: {exc.strerror or exc}")
            return
        if len(wire) < 2:
            continue
        qid = int.from_bytes(wire[:2], "big")
        sent = srv.flight.get(qid)
        if sent is None:
            continue  # late, duplicate or not ours
        q = questions[sent.index]
        try:
            response = lean.parse(wire, q.need)
        except dns.exception.DNSException as exc:
            del srv.flight[qid]
            replies[sent.index] = Reply("BADREPLY", error=f"bad reply: {exc}")
            continue
        if not _answers(q, response):
            continue  # same id, another question: not the answer to ours
        del srv.flight[qid]
        if response.flags & dns.flags.TC:
            truncated.append(sent.index)
            continue
        replies[sent.index] = Reply(dns.rcode.to_text(response.rcode()), message=response)


def _tcp(q: Question, port: int, timeout: float) -> Reply:
    msg = make_query(q.qname, q.rdtype, recursion=q.recursion, dnssec=q.dnssec)
    try:
        response = dns.query.tcp(msg, q.address, timeout=timeout, port=port)
    except dns.exception.Timeout:
        return Reply("TIMEOUT", error=f"no answer within {timeout:g}s over TCP (timeout)")
    except ConnectionRefusedError:
        return Reply("UNREACHABLE", error="connection refused (TCP, after a truncated answer)")
    except OSError as exc:
        return Reply("UNREACHABLE", error=f"unreachable: {exc.strerror or exc}")
    except (dns.exception.DNSException, EOFError) as exc:
        return Reply("BADREPLY", error=f"bad reply: {exc}")
    return Reply(dns.rcode.to_text(response.rcode()), message=response, tcp=True)
