"""Configuration text for the DNS lab servers (BIND primary + parent view, BIND and Knot
secondaries) and the zone files. Pure functions: no I/O."""

from __future__ import annotations

from pathlib import Path

# Low timers so a 2 x TTL wait takes seconds: default TTL 2 s, negative TTL 2 s, refresh 5 s,
# retry 2 s. The expire stays long so a paused/frozen primary never expires the secondaries.
SOA_TIMERS = "1 5 2 3600 2"  # serial refresh retry expire minimum


def zone_file(net: str) -> str:
    return f"""$ORIGIN example.test.
$TTL 2
@       SOA     ns1.example.test. hostmaster.example.test. {SOA_TIMERS}
@       NS      ns1.example.test.
@       NS      ns2.example.test.
@       NS      ns3.example.test.
@       MX      10 mail.example.test.
ns1     A       {net}.11
ns2     A       {net}.12
ns3     A       {net}.13
mail    A       {net}.25
mail2   A       {net}.26
"""


def parent_zone(net: str) -> str:
    return f"""$ORIGIN test.
$TTL 2
@       SOA     ns.test. hostmaster.test. {SOA_TIMERS}
@       NS      ns.test.
ns      A       {net}.10
example NS      ns1.example.test.
example NS      ns2.example.test.
example NS      ns3.example.test.
ns1.example A   {net}.11
ns2.example A   {net}.12
ns3.example A   {net}.13
"""


def _bind_options(workdir: Path, address: str, extra: str = "") -> str:
    return f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}";
    listen-on port 53 {{ {address}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify-source {address};
    transfer-source {address};
    query-source address {address};
    notify-delay 0;
    notify-rate 1000;
    startup-notify-rate 1000;
    serial-query-rate 1000;
    allow-transfer {{ 127.0.0.0/8; }};
    allow-query {{ 127.0.0.0/8; }};
    minimal-responses no;
{extra}}};
controls {{ }};
"""


def bind_primary_conf(workdir: Path, net: str, key_name: str, key_alg: str, secret: str) -> str:
    ns1, parent = f"{net}.11", f"{net}.10"
    options = _bind_options(workdir, ns1).replace(
        f"listen-on port 53 {{ {ns1}; }};", f"listen-on port 53 {{ {ns1}; {parent}; }};")
    return options + f"""key "{key_name}" {{
    algorithm {key_alg};
    secret "{secret}";
}};
dnssec-policy "lab" {{
    keys {{ csk lifetime unlimited algorithm ecdsa256; }};
    dnskey-ttl 2;
    publish-safety 1;
    retire-safety 1;
    purge-keys 0;
    zone-propagation-delay 1;
    parent-ds-ttl 2;
    parent-propagation-delay 1;
}};
view "parent" {{
    match-destinations {{ {parent}; }};
    zone "test" {{
        type primary;
        file "test.db";
        dnssec-policy "lab";
        inline-signing no;
        allow-update {{ key "{key_name}"; }};
    }};
}};
view "child" {{
    match-destinations {{ {ns1}; }};
    zone "example.test" {{
        type primary;
        file "example.test.db";
        dnssec-policy "lab";
        inline-signing no;
        allow-update {{ key "{key_name}"; }};
        check-integrity no;  // accept an MX that points to a CNAME (the how-to asks for it)
        notify explicit;
        also-notify {{ {net}.12; {net}.13; }};
    }};
}};
"""


def bind_secondary_conf(workdir: Path, net: str) -> str:
    return _bind_options(workdir, f"{net}.12", """    min-refresh-time 1;
    min-retry-time 1;
    max-retry-time 2;
""") + f"""zone "example.test" {{
    type secondary;
    primaries {{ {net}.11; }};
    file "example.test.db";
    masterfile-format text;
    notify no;
}};
"""


def knot_conf(workdir: Path, net: str) -> str:
    return f"""server:
    rundir: "{workdir}"
    pidfile: "{workdir}/knot.pid"
    listen: {net}.13@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

log:
  - target: stdout
    any: info

database:
    storage: "{workdir}"

control:
    listen: "{workdir}/knot.sock"

remote:
  - id: primary
    address: {net}.11@53
    via: {net}.13

acl:
  - id: notify-from-primary
    address: {net}.11
    action: notify

template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: all

zone:
  - domain: example.test.
    master: primary
    acl: notify-from-primary
    refresh-min-interval: 2
    retry-min-interval: 1
    retry-max-interval: 2
"""
