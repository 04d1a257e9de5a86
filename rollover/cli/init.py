"""`rollover init`: write a starting configuration for a mail domain, changing nothing else.

It asks the resolvers for the domain's MX hosts (a CNAME'd MX host followed to its target, the
name TLSA records belong to), their addresses, each host's zone and nameservers and the TLSA
records already published; it looks at what every address presents per key algorithm and
whether that matches those records; it reads where the MTA takes its TLS files from today
(`postconf -h`, Exim's `tls_certificate`, `doveconf -h`). Then it writes a commented YAML that
`rollover plan` accepts (mode 0600; an existing file is never overwritten) and prints the lines
that point the MTA at rollover's files and the how-to's outbound DANE settings.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rollover.cli import argtypes
from rollover.clock import Clock
from rollover.config.load import DEFAULT_STATE_DIR, load_config, system_resolvers
from rollover.dane import match as dane
from rollover.dane import tlsa
from rollover.display import clip
from rollover.edges.mx import MxHost, Resolver, mx_hosts
from rollover.edges.observe import Observer
from rollover.edges.probe import probe_tls
from rollover.environment import DEFAULT_CONFIG, Environment
from rollover.errors import ConfigError, ObserveError, RolloverError, UsageError
from rollover.fanout import parallel
from rollover.hooks.dovecot import DovecotInstaller
from rollover.hooks.exim import EximInstaller, EximOptions
from rollover.hooks.files import FileOptions
from rollover.model import Algorithm, SlotId, TLSARecord

MTAS = ("postfix", "exim", "dovecot")
ALGORITHMS = (Algorithm.ECDSA_P256, Algorithm.RSA2048)
DEFAULT_TLS_DIR = {"postfix": "/etc/postfix/tls", "exim": "/etc/exim4/tls",
                   "dovecot": "/etc/dovecot/private"}
DEFAULT_PORT = {"postfix": 25, "exim": 25, "dovecot": 993}
POSTCONF_KEYS = ("smtpd_tls_chain_files", "smtpd_tls_cert_file", "smtpd_tls_key_file")
DOVECONF_KEYS = ("ssl_cert", "ssl_key", "ssl_alt_cert", "ssl_alt_key")
OUTBOUND = {
    "postfix": "# Postfix main.cf, outbound DANE (the how-to):\n"
               "smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n"
               "smtp_host_lookup = dns\n",
    "exim": "# Exim, outbound DANE (the how-to): main section\ndns_dnssec_ok = 1\n"
            "# ... and in every smtp transport (transport/30_exim4-config_remote_smtp)\n"
            "hosts_try_dane = *\n",
    "dovecot": "# Dovecot receives only; the MTA that sends needs the outbound settings\n"
               "# (Postfix: smtp_tls_security_level = dane; Exim: hosts_try_dane = *)\n",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", required=True, type=domain_name,
                        help="mail domain whose MX hosts to manage")
    parser.add_argument("--output", "-o", type=Path, default=Path(DEFAULT_CONFIG),
                        help=f"configuration file to write (default {DEFAULT_CONFIG}; never "
                             "overwritten)")
    parser.add_argument("--resolver", action="append", type=ip_address, default=None,
                        metavar="IP", help="resolver to ask (repeatable; default: resolv.conf)")
    parser.add_argument("--dns-port", type=argtypes.integer(1, 65535), default=53,
                        help=argparse.SUPPRESS)
    parser.add_argument("--host", action="append", type=domain_name, default=None,
                        help="manage only this MX host (repeatable; default: every MX host; "
                             "the others are listed as comments)")
    parser.add_argument("--mta", choices=MTAS, default="postfix",
                        help="the server rollover installs certificates into (default postfix)")
    parser.add_argument("--port", type=argtypes.integer(1, 65535), default=None,
                        help="TLS port (default 25; dovecot 993)")
    parser.add_argument("--postfix-config", type=Path, default=None, metavar="DIR",
                        help="Postfix config directory to read (postconf -c DIR)")
    parser.add_argument("--exim-config", type=Path, default=None, metavar="FILE",
                        help="Exim configuration file to read tls_certificate from")
    parser.add_argument("--dovecot-config", type=Path, default=None, metavar="FILE",
                        help="dovecot.conf to read ssl_cert/ssl_alt_cert from (doveconf -c)")
    parser.add_argument("--tls-dir", type=Path, default=None,
                        help="where rollover writes the MTA's key+chain files (default per MTA)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--ttl", type=argtypes.integer(1, 2**31 - 1), default=3600)
    parser.add_argument("--provider-server", type=ip_address, default=None,
                        metavar="IP", help="RFC 2136 primary (default: the zone's SOA MNAME)")
    parser.add_argument("--tsig-key-name", default=None)
    parser.add_argument("--tsig-algorithm", default=None)
    parser.add_argument("--tsig-secret-file", type=Path, default=None)
    parser.add_argument("--acme-directory", default=None, metavar="URL",
                        help="ACME directory: certificates ordered by rollover")
    parser.add_argument("--acme-email", default=None)
    parser.add_argument("--acme-ca-bundle", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=argtypes.seconds(120), default=5.0,
                        help="seconds per DNS/TLS try (default 5)")


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def domain_name(text: str) -> str:
    """A DNS name: labels of 1-63 letters, digits, '-' or '_', at most 253 characters."""
    name = text.strip().rstrip(".").lower()
    if not name or len(name) > 253 or not all(_LABEL.match(lb) for lb in name.split(".")):
        raise argparse.ArgumentTypeError(f"'{clip(text, 60)}' is not a domain name")
    return name


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{clip(text, 40)}' is not an IP address") from None


# --------------------------------------------------------------------------- discovery


@dataclass
class Look:
    """What one address presents for one algorithm, and whether the TLSA records match it."""

    address: str
    algorithm: Algorithm
    spki: str | None = None
    error: str | None = None
    matches: bool | None = None  # None: no TLSA records to match against


@dataclass
class HostFacts:
    mx: MxHost
    zone: str
    nameservers: list[tuple[str, str]]
    tlsa: list[str]
    looks: list[Look] = field(default_factory=list)
    managed: bool = True  # False: another machine's MX host (--host), only listed

    def algorithms(self) -> tuple[Algorithm, ...]:
        """The algorithms some address presents (both when none can be seen)."""
        seen = tuple(a for a in ALGORITHMS if any(lk.algorithm == a and lk.spki
                                                  for lk in self.looks))
        return seen or ALGORITHMS


def _look(address: str, port: int, alg: Algorithm, host: str, records: list[str],
          timeout: float, now: datetime) -> Look:
    probe = probe_tls(address, port, alg, host, timeout=timeout)
    if probe.error or not probe.chain:
        return Look(address, alg, error=probe.error or "no certificate")
    look = Look(address, alg, spki=tlsa.spki_sha256_hex(probe.chain[0]))
    if records:
        parsed = [TLSARecord.from_text(r) for r in records]
        look.matches = dane.match_chain(list(probe.chain), parsed, host, now).matched
    return look


def _looker(port: int, host: str, records: list[str], timeout: float,
            now: datetime) -> Callable[[tuple[str, Algorithm]], Look]:
    def look(job: tuple[str, Algorithm]) -> Look:
        return _look(job[0], port, job[1], host, records, timeout, now)
    return look


def discover(args: argparse.Namespace, resolvers: Sequence[str], port: int,
             clock: Clock) -> list[HostFacts]:
    resolver = Resolver(resolvers, port=args.dns_port, timeout=args.timeout)
    observer = Observer(resolvers, port=args.dns_port, timeout=args.timeout,
                        clock=clock)
    facts: list[HostFacts] = []
    hosts = mx_hosts(resolver, args.domain)
    wanted = set(args.host or ())
    unknown = wanted - {m.host for m in hosts} - {m.name for m in hosts}
    if unknown:
        raise UsageError(f"--host {', '.join(sorted(unknown))}: not an MX host of {args.domain} "
                         f"(its MX hosts: {', '.join(m.host for m in hosts)})")
    for mx in hosts:
        if wanted and not {mx.host, mx.name} & wanted:
            facts.append(HostFacts(mx, "", [], [], managed=False))
            continue
        zone = observer.find_zone(mx.host).rstrip(".")
        servers = observer.nameservers(zone)
        records = resolver.rdatas(f"_{port}._tcp.{mx.host}", "TLSA")
        hf = HostFacts(mx, zone, servers, records)
        jobs = [(a, alg) for a in mx.addresses for alg in ALGORITHMS]
        hf.looks = parallel(_looker(port, mx.host, records, args.timeout, clock.now()), jobs)
        facts.append(hf)
    return facts


def primary_address(resolver: Resolver, zone: str) -> str | None:
    """The address of the zone's SOA MNAME (the usual RFC 2136 primary)."""
    soa = resolver.rdatas(zone, "SOA")
    if not soa:
        return None
    mname = soa[0].split()[0].rstrip(".")
    addresses = resolver.rdatas(mname, "A") + resolver.rdatas(mname, "AAAA")
    return addresses[0] if addresses else None


# --------------------------------------------------------------------------- the MTA today


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out = proc.stdout
    return out[:-1] if out.endswith("\n") else out  # keep empty values (one line each)


def mta_today(args: argparse.Namespace) -> list[str]:
    """`key = value` lines: where the MTA reads its TLS files now (comments in the YAML)."""
    if args.mta == "postfix":
        base = ["postconf"] + (["-c", str(args.postfix_config)] if args.postfix_config else [])
        value = _run([*base, "-h", *POSTCONF_KEYS])  # one call: postconf starts slowly
        if value is None and args.postfix_config:
            raise ConfigError(f"postconf -c {args.postfix_config} -h {' '.join(POSTCONF_KEYS)} "
                              "failed (is it a Postfix config directory?)")
        values = value.split("\n") if value is not None else []
        if len(values) != len(POSTCONF_KEYS):
            values = ["(postconf not found)"] * len(POSTCONF_KEYS)
        return [f"{k} = {v}" for k, v in zip(POSTCONF_KEYS, values, strict=True)]
    if args.mta == "exim":
        if args.exim_config is None:
            return ["(pass --exim-config to read tls_certificate/tls_privatekey)"]
        try:
            text = args.exim_config.read_text(errors="replace")
        except OSError as exc:
            raise ConfigError(f"cannot read {args.exim_config}: {exc.strerror or exc}") from None
        return [ln.strip() for ln in text.splitlines()
                if re.match(r"\s*tls_(certificate|privatekey)\s*=", ln)] or \
            ["tls_certificate is not set"]
    if args.dovecot_config is None:
        return ["(pass --dovecot-config to read ssl_cert/ssl_alt_cert)"]
    out = []
    for key in DOVECONF_KEYS:
        value = _run(["doveconf", "-c", str(args.dovecot_config), "-h", key])
        if value is None:
            raise ConfigError(f"doveconf -c {args.dovecot_config} -h {key} failed")
        out.append(f"{key} = {value}")
    return out


# --------------------------------------------------------------------------- writing


def q(value: object) -> str:
    """A YAML scalar (JSON is YAML)."""
    return json.dumps(str(value) if isinstance(value, Path) else value)


def _describe_looks(hf: HostFacts) -> list[str]:
    lines = []
    for look in hf.looks:
        if look.spki is None:
            lines.append(f"#   {look.address} {look.algorithm.value}: {look.error}")
            continue
        verdict = {None: "no TLSA records yet", True: "matches the published TLSA",
                   False: "DOES NOT MATCH the published TLSA"}[look.matches]
        lines.append(f"#   {look.address} {look.algorithm.value}: presents 3 1 1 "
                     f"{look.spki[:16]}… ({verdict})")
    return lines


def render(args: argparse.Namespace, facts: list[HostFacts], resolvers: Sequence[str],
           port: int, tls_dir: Path, server: str | None, today: list[str]) -> str:
    out = [f"# rollover configuration for {args.domain}, written by `rollover init`.",
           "# Read it, then: rollover plan --config THIS_FILE  (changes nothing)",
           "", f"state_dir: {q(args.state_dir)}",
           f"resolver: [{', '.join(q(r) for r in resolvers)}]", ""]
    if args.acme_directory:
        out += ["acme:", f"  directory: {q(args.acme_directory)}"]
        if args.acme_email:
            out.append(f"  email: {q(args.acme_email)}")
        if args.acme_ca_bundle:
            out.append(f"  ca_bundle: {q(args.acme_ca_bundle.resolve())}")
        out.append("")
    out += ["providers:", "  dns:", "    type: rfc2136",
            f"    server: {q(server or '192.0.2.53')}"
            + ("" if server else "  # CHANGE: the zone's primary (SOA MNAME not found)")]
    if args.tsig_key_name and args.tsig_secret_file:
        out += [f"    tsig_key_name: {q(args.tsig_key_name)}",
                f"    tsig_secret_file: {q(args.tsig_secret_file.resolve())}"]
        if args.tsig_algorithm:
            out.append(f"    tsig_algorithm: {q(args.tsig_algorithm)}")
    else:
        out += ["    # tsig_key_name: rollover-key",
                "    # tsig_secret_file: /etc/rollover/tsig.key   # 0600, the base64 secret"]
    out += ["", "installers:", f"  {args.mta}:", f"    type: {args.mta}",
            f"    directory: {q(tls_dir)}",
            "    # where the server reads its TLS files today:"]
    out += [f"    #   {line}" for line in today]
    out += ["", "endpoints:"]
    for hf in facts:
        mx = hf.mx
        if not hf.managed:
            out += [f"  # MX {mx.preference} {mx.name}: not managed here (not a --host)", ""]
            continue
        out.append(f"  # MX {mx.preference} {mx.name}"
                   + (f" (a CNAME for {mx.host}: TLSA records belong to the target)"
                      if mx.name != mx.host else ""))
        out.append(f"  # zone {hf.zone}, nameservers: "
                   + ", ".join(f"{n.rstrip('.')} {a}" for n, a in hf.nameservers))
        out.append(f"  # TLSA at _{port}._tcp.{mx.host}: "
                   + ("; ".join(hf.tlsa) if hf.tlsa else "none"))
        out += [f"  {line}" for line in _describe_looks(hf)]
        out += [f"  - host: {q(mx.host)}", f"    port: {port}", f"    zone: {q(hf.zone)}",
                "    provider: dns", "    scheme: current+next",
                f"    algorithms: [{', '.join(a.value for a in hf.algorithms())}]",
                f"    ttl: {args.ttl}", f"    installer: {args.mta}"]
        if args.acme_directory:
            out.append("    certificate: {source: acme}")
        else:
            out.append("    # certificate: {source: acme}   # with an acme: section above")
        out.append("")
    return "\n".join(out)


def snippet(mta: str, tls_dir: Path, slots: Sequence[SlotId]) -> str:
    if mta == "exim":
        return EximInstaller.snippet(EximOptions(directory=tls_dir), slots)
    if mta == "dovecot":
        return DovecotInstaller.snippet(FileOptions(directory=tls_dir), slots)
    opts = FileOptions(directory=tls_dir)
    files = ", ".join(str(tls_dir / n) for s in slots for n in opts.file_names(s))
    return ("# Postfix main.cf: TLS files managed by rollover (key then chain, one per "
            f"algorithm)\nsmtpd_tls_chain_files = {files}\n")


def write_new(path: Path, text: str) -> None:
    """Create `path` 0600; never replace an existing file (O_EXCL)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; not overwriting it (remove it or pass --output "
                         "another file)") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def run(args: argparse.Namespace, env: Environment) -> int:
    out: Path = args.output
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out} exists; not overwriting it (remove it or pass --output "
                         "another file)")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} does not exist (the directory for --output)")
    resolvers = list(args.resolver or system_resolvers())
    if not resolvers:
        raise UsageError("no resolver: pass --resolver IP (resolv.conf lists none)")
    port = args.port or DEFAULT_PORT[args.mta]
    tls_dir = (args.tls_dir or Path(DEFAULT_TLS_DIR[args.mta])).resolve()
    today = mta_today(args)
    try:
        facts = discover(args, resolvers, port, env.clock)
        managed = [hf for hf in facts if hf.managed]
        server = args.provider_server or primary_address(
            Resolver(resolvers, port=args.dns_port, timeout=args.timeout), managed[0].zone)
    except ObserveError as exc:
        raise RolloverError(f"{args.domain}: {exc}") from None
    write_new(out, render(args, facts, resolvers, port, tls_dir, server, today))
    env.out(f"wrote {out} ({len(managed)} MX host{'s' if len(managed) != 1 else ''})")
    try:  # what `rollover plan` will do first: load the file and build its edges
        from rollover.engine.wiring import build_engine

        build_engine(load_config(out), env.clock, with_certs=False, create_state=False)
    except RolloverError as exc:
        env.out(f"before `rollover plan`, fix:\n{exc}")
    for hf in facts:
        bad = [lk for lk in hf.looks if lk.matches is False]
        if bad:
            env.err(f"warning: {hf.mx.host}: {len(bad)} address/algorithm(s) present a "
                    "certificate the published TLSA records do not match")
    slots = [SlotId(managed[0].mx.host, port, a) for a in managed[0].algorithms()]
    env.out("\n# Point the server at rollover's files:")
    env.out(snippet(args.mta, tls_dir, slots), end="")
    env.out("\n" + OUTBOUND[args.mta], end="")
    return 0
