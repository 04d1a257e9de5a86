"""Real recursive resolvers for the lab: one BIND `named` with four views, each on its own
loopback address, plus an unsigned zone for insecure delegations.

    {net}.53  validating: trust anchor = the lab's `test.` key (standing in for the root)
    {net}.54  not validating (`dnssec-validation no`): never sets AD
    {net}.56  validating with a wrong trust anchor for `test.`: every answer below is bogus
    {net}.55  authoritative, unsigned `plain.test.` (delegated from `test.` without a DS)

The resolver views reach the lab's authoritative servers through a static-stub `.` zone that
points at the parent `test.` server ({net}.10): recursion then follows its referrals to ns1..ns3,
pit.test and plain.test. Nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import dns.rdata
import dns.rdataclass

from lab.dns import DnsLab, _check, _require_free, _which
from lab.proc import Daemon, LabError, LoopbackAddresses, wait_for

PLAIN = "plain.test."


def _anchor_clause(anchor_text: str) -> str:
    """`trust-anchors` lines from DNSKEY zone-file lines (SEP keys only)."""
    lines = []
    for line in anchor_text.splitlines():
        parts = line.split()
        if len(parts) < 7 or parts[2] != "DNSKEY":
            continue
        flags, proto, alg, key = parts[3], parts[4], parts[5], "".join(parts[6:])
        if int(flags) & 1:
            lines.append(f'    {parts[0]} static-key {flags} {proto} {alg} "{key}";')
    if not lines:
        raise LabError("no SEP DNSKEY in the trust anchor text")
    return "trust-anchors {\n" + "\n".join(lines) + "\n};"


def _wrong_anchor(anchor_text: str) -> str:
    """The same key with one base64 character changed: a key the zone does not have."""
    out = []
    for line in anchor_text.splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[2] == "DNSKEY":
            key = "".join(parts[6:])
            flip = "A" if key[10] != "A" else "B"
            parts = [*parts[:6], key[:10] + flip + key[11:]]
        out.append(" ".join(parts))
    return "\n".join(out) + "\n"


class ResolverLab:
    """Start/stop the resolver views; the DNS lab (parent, ns1..ns3) must be running."""

    def __init__(self, dns_lab: DnsLab) -> None:
        net = dns_lab.net
        self.dns_lab = dns_lab
        self.validating = f"{net}.53"
        self.plain = f"{net}.54"
        self.auth = f"{net}.55"
        self.bogus = f"{net}.56"
        self._addresses = LoopbackAddresses()
        self._daemon: Daemon | None = None
        self._workdir: Path | None = None

    def _conf(self, wd: Path, anchor_text: str) -> str:
        parent = self.dns_lab.parent.address
        good = _anchor_clause(anchor_text)
        wrong = _anchor_clause(_wrong_anchor(anchor_text))
        # "." so nothing goes to the real root; "test." too: without it the resolver loops on
        # the address of ns.test., which only ns.test. serves
        stub = " ".join(f'zone "{z}" {{ type static-stub; server-addresses {{ {parent}; }}; }};'
                        for z in (".", "test."))
        common = ("recursion yes; allow-recursion { 127.0.0.0/8; }; "
                  "qname-minimization off; max-cache-ttl 1; max-ncache-ttl 1;")
        views = []
        for name, address, validation, anchors in (
                ("validating", self.validating, "yes", good),
                ("plain", self.plain, "no", ""),
                ("bogus", self.bogus, "yes", wrong)):
            views.append(f"""view "{name}" {{
    match-destinations {{ {address}; }};
    {common}
    dnssec-validation {validation};
    {anchors}
    {stub}
}};""")
        views.append(f"""view "auth" {{
    match-destinations {{ {self.auth}; }};
    recursion no;
    zone "{PLAIN}" {{ type primary; file "{wd}/plain.test.db"; allow-update {{ 127.0.0.0/8; }}; }};
}};""")
        listen = "; ".join((self.validating, self.plain, self.auth, self.bogus))
        return f"""options {{
    directory "{wd}";
    pid-file "{wd}/named.pid";
    session-keyfile "{wd}/session.key";
    managed-keys-directory "{wd}";
    listen-on port 53 {{ {listen}; }};
    listen-on-v6 {{ none; }};
    allow-query {{ 127.0.0.0/8; }};
    minimal-responses no;
}};
controls {{ }};
""" + "\n".join(views) + "\n"

    def start(self, anchor_text: str) -> None:
        named = _which("named")
        checkconf = _which("named-checkconf")
        if named is None or checkconf is None:
            raise LabError("missing named (run tests/lab/install.sh)")
        wd = Path(tempfile.mkdtemp(prefix=f"rollover-resolver-{self.dns_lab.net}-"))
        self._workdir = wd
        try:
            (wd / "plain.test.db").write_text(f"""$ORIGIN {PLAIN}
$TTL 2
@    SOA ns.plain.test. hostmaster.plain.test. 1 5 2 3600 2
@    NS  ns.plain.test.
ns   A   {self.auth}
""")
            (wd / "named.conf").write_text(self._conf(wd, anchor_text))
            _check([checkconf, str(wd / "named.conf")], "named-checkconf resolver")
            for address in (self.validating, self.plain, self.auth, self.bogus):
                self._addresses.ensure(address)
                _require_free(address)
            self.dns_lab.update_parent(PLAIN, "NS", 2, ["ns.plain.test."])
            self.dns_lab.update_parent("ns.plain.test.", "A", 2, [self.auth])
            self._daemon = Daemon("resolver", [named, "-g", "-n", "2", "-c",
                                               str(wd / "named.conf")],
                                  wd / "named.log", cwd=wd)
            self._daemon.start()
            wait_for(self._ready, 20.0, "the lab resolver to validate test.")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self._daemon is not None:
            self._daemon.check_alive()
        msg = self.dns_lab.query_message(self.auth, PLAIN, "SOA", timeout=0.5)
        if msg.rcode() != 0 or not msg.answer:
            return False
        return bool(self.ask(self.validating, "test.", "DNSKEY").flags & 0x0020)  # AD

    def ask(self, resolver: str, owner: str, rtype: str) -> dns.message.Message:
        import dns.flags
        import dns.message
        import dns.query

        q = dns.message.make_query(owner, rtype, want_dnssec=True)
        q.flags |= dns.flags.RD | dns.flags.AD
        response, _ = dns.query.udp_with_fallback(q, resolver, timeout=2.0)
        return response

    def update_plain(self, owner: str, rtype: str, rdatas: list[str]) -> None:
        """Replace an RRset in the unsigned plain.test. (unsigned dynamic update)."""
        import dns.name
        import dns.query
        import dns.update

        msg = dns.update.UpdateMessage(PLAIN)
        msg.replace(dns.name.from_text(owner), 2,
                    *[dns.rdata.from_text(dns.rdataclass.IN, rtype, t) for t in rdatas])
        response = dns.query.tcp(msg, self.auth, timeout=5.0)
        if response.rcode() != 0:
            raise LabError(f"update of {owner} {rtype} refused by {self.auth}")

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
        self._addresses.remove_all()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
