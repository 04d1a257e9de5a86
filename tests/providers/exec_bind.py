"""A tiny `type: exec` DNS program for the tests: answers rollover's JSON requests by talking to
the lab's real BIND primary (TSIG-signed queries and RFC 2136 updates through dnspython).

Configured by the environment: ROLLOVER_EXEC_SERVER (primary's address), ROLLOVER_EXEC_KEY_NAME,
ROLLOVER_EXEC_KEY_FILE (base64 secret, 0600). ROLLOVER_EXEC_MODE makes it misbehave for the
failure tests: "sleep", "exit", "garbage", "refuse", "list", "no-ok".

It does compare-and-swap the way an operator's script should: the update carries the "before"
RRset as an RFC 2136 prerequisite, so a concurrent edit makes BIND refuse it.
"""

from __future__ import annotations

import json
import os
import sys
import time

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update


def rdataset(rtype: str, texts: list[str], ttl: int = 0) -> dns.rdataset.Rdataset:
    rds = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), ttl=ttl)
    for text in texts:
        rds.add(dns.rdata.from_text(dns.rdataclass.IN, rtype, text))
    return rds


def main() -> int:
    mode = os.environ.get("ROLLOVER_EXEC_MODE", "")
    request = json.load(sys.stdin)
    if mode == "sleep":
        time.sleep(30)
    if mode == "exit":
        print("exec_bind: cannot reach the DNS API (simulated)", file=sys.stderr)
        return 3
    if mode == "garbage":
        print("<html>not json</html>")
        return 0
    if mode == "list":
        print("[]")
        return 0
    if mode == "refuse":
        print(json.dumps({"error": "zone is locked by the change freeze"}))
        return 0
    server = os.environ["ROLLOVER_EXEC_SERVER"]
    key_name = dns.name.from_text(os.environ["ROLLOVER_EXEC_KEY_NAME"])
    with open(os.environ["ROLLOVER_EXEC_KEY_FILE"]) as f:
        keyring = {key_name: dns.tsig.Key(key_name, f.read().strip(), dns.tsig.HMAC_SHA256)}
    owner = dns.name.from_text(request["owner"])
    rtype = request["rtype"]
    if request["action"] == "read":
        q = dns.message.make_query(owner, rtype)
        q.flags &= ~dns.flags.RD
        q.use_tsig(keyring, key_name)
        r = dns.query.tcp(q, server, timeout=5)
        rrset = r.get_rrset(r.answer, owner, dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
        rdatas = [rd.to_text() for rd in rrset] if rrset else []
        print(json.dumps({"ttl": rrset.ttl if rrset else None, "rdatas": rdatas}))
        return 0
    update = dns.update.UpdateMessage(request["zone"], keyring=keyring, keyname=key_name)
    before = request["before"]["rdatas"]
    if before:
        update.present(owner, rdataset(rtype, before))
    else:
        update.absent(owner, rtype)
    update.delete(owner, rtype)
    if request["after"]:
        update.add(owner, rdataset(rtype, request["after"], request["ttl"]))
    r = dns.query.tcp(update, server, timeout=5)
    rcode = r.rcode()
    if rcode != dns.rcode.NOERROR:
        print(json.dumps({"error": f"BIND answered {dns.rcode.to_text(rcode)}"}))
        return 0
    print(json.dumps({} if mode == "no-ok" else {"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
