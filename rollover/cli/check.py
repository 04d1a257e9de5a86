"""`rollover check`: does what a mail server presents match its TLSA records, as a DANE SMTP
client (RFC 7671/7672) would judge it?

Chains: the live server (STARTTLS to every address x every algorithm) or a chain file (--chain).
Records: the ones given with --tlsa, else the TLSA RRset that *every* authoritative nameserver
serves (each server's RRset is judged on its own). One verdict line per chain x RRset.
`--domain D` checks every MX host of a mail domain (rollover.monitor.domaincheck) with hygiene
findings.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rollover.cli import argtypes
from rollover.dane import tlsa
from rollover.display import clip, printable
from rollover.dns.names import normalize_hostname
from rollover.environment import DEFAULT_CONFIG, Environment
from rollover.errors import ExitStatus, InputError, ObserveError, RolloverError, UsageError
from rollover.model import Algorithm, Endpoint, TLSARecord
from rollover.monitor import nagios as nagios_out
from rollover.monitor.hostcheck import (
    DEFAULT_ALGORITHMS,
    ChainSource,
    Outcome,
    RecordSource,
    dns_sources,
    judge,
    outcomes_json,
    probe_all,
    sources_json,
)

EPILOG = """\
examples:
  rollover check mail.example.nl --resolver 192.0.2.53
      every address of mail.example.nl, ECDSA P-256 and RSA 2048, against the TLSA RRset
      of every authoritative nameserver of _25._tcp.mail.example.nl
  rollover check mail.example.nl --address 192.0.2.25 --tlsa "3 1 1 29c8...d084"
  rollover check mail.example.nl --chain /etc/postfix/new.pem --resolver 192.0.2.53
      a candidate chain file (leaf first) before installing it
  rollover check --domain example.nl --resolver 192.0.2.53 --nagios -w 21 -c 7
      every MX host (CNAMEs followed), every address and algorithm, DNSSEC from the root's
      trust anchor down, zone hygiene; Nagios plugin output
  rollover check mail.example.nl --port 587     (465, 143, 993: the port says the protocol)

Exit status: 0 when every chain matches every RRset, 2 when one does not (or a probe or a
nameserver failed), 64 bad arguments, 65/66 unreadable input, 78 bad configuration.
--domain and --nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (bad input).
Addresses and resolvers are IP addresses: the system resolver is never used.
"""



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("host", nargs="?", help="mail server host name (the MX target)")
    parser.add_argument("--domain", metavar="DOMAIN",
                        help="check every MX host of this mail domain instead of one HOST")
    parser.add_argument("--port", type=argtypes.integer(1, 65535), default=25,
                        help="TCP port (default 25)")
    parser.add_argument("--address", action="append", default=[], metavar="IP",
                        help="probe this address (repeatable; default: all A and AAAA of HOST)")
    parser.add_argument("--algorithm", action="append", default=[], metavar="ALG",
                        choices=[a.value for a in Algorithm],
                        help="key algorithm to ask for (repeatable; default ecdsa-p256 and "
                             "rsa2048)")
    parser.add_argument("--chain", metavar="FILE", type=argtypes.path,
                        help="check this chain file (PEM, leaf first) instead of the live server")
    parser.add_argument("--tlsa", action="append", default=[], metavar='"U S M HEX"',
                        help="check against this record instead of DNS (repeatable)")
    parser.add_argument("--resolver", action="append", default=[], metavar="IP",
                        help="resolver for discovery (repeatable; default: the config's)")
    parser.add_argument("--config", metavar="PATH", type=argtypes.path,
                        help=f"configuration file for `resolver` (default {DEFAULT_CONFIG})")
    parser.add_argument("--timeout", type=argtypes.seconds(3600), default=10.0,
                        help="seconds per network step (default 10, at most 3600)")
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.2",
                        help="TLS version used to force each algorithm (default 1.2)")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output (schemas/check-*.schema.json)")
    parser.add_argument("--nagios", action="store_true",
                        help="Nagios plugin output: status line with perfdata, exit 0/1/2/3")
    parser.add_argument("-w", "--warning", type=nagios_out.days_threshold, default=21.0,
                        metavar="DAYS", help="warn when a certificate expires within DAYS "
                                             "(default 21; Nagios range N: accepted)")
    parser.add_argument("-c", "--critical", type=nagios_out.days_threshold, default=7.0,
                        metavar="DAYS", help="critical within DAYS (default 7)")
    parser.add_argument("--trust-anchor", metavar="FILE", type=argtypes.path,
                        help="DS/DNSKEY lines to validate DNSSEC from (default: the root key "
                             "of dns-root-data, else the built-in root KSK DS)")
    parser.add_argument("--prometheus", metavar="FILE", type=argtypes.path,
                        help="with --domain: also write Prometheus metrics to FILE "
                             "(textfile collector; atomic)")
    parser.add_argument("--validating-resolver", metavar="IP",
                        help="trust this validating resolver's AD bit instead of validating "
                             "from a trust anchor")


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace, env: Environment) -> int:
    if not args.nagios:
        return _run(args, env)
    try:
        return _run(args, env)
    except RolloverError as exc:  # a plugin that cannot tell says UNKNOWN, in one line
        env.out(nagios_out.plugin_output("DANE", ExitStatus.UNKNOWN, str(exc).split("\n")[0],
                                         ()))
        return int(ExitStatus.UNKNOWN)


def _run(args: argparse.Namespace, env: Environment) -> int:
    if args.warning < args.critical:
        raise UsageError(f"-w {args.warning:g} must not be below -c {args.critical:g} "
                         "(days until expiry: warn first)")
    if args.domain is not None:
        return _run_domain(args, env)
    if args.host is None:
        raise UsageError("give a HOST to check, or --domain DOMAIN")
    if args.trust_anchor or args.validating_resolver or args.prometheus:
        raise UsageError("--trust-anchor, --validating-resolver and --prometheus go with "
                         "--domain")
    host = _check_host(args.host)
    endpoint = Endpoint(host, _check_port(args.port))
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g} must be positive")
    given = _parse_tlsa(args.tlsa)
    addresses = [_check_ip(a, "--address") for a in args.address]
    algorithms = [Algorithm(a) for a in dict.fromkeys(args.algorithm)] or list(DEFAULT_ALGORITHMS)
    if args.chain is not None and (args.address or args.algorithm):
        raise UsageError("--chain checks a file: leave out --address and --algorithm")
    chain_file = _load_chain(args.chain, env) if args.chain is not None else None

    needs_dns = not given or (chain_file is None and not addresses)
    resolvers: list[str] = []
    dns_port, dns_timeout = 53, 2.0
    if needs_dns:
        resolvers, dns_port, dns_timeout = _resolvers(args, env)

    if chain_file is not None:
        chains = [chain_file]
    else:
        chains = probe_all(endpoint, addresses, algorithms, resolvers, dns_port, args.timeout,
                           args.tls)
    if given:
        sources = [RecordSource("--tlsa", frozenset(given))]
    else:
        sources, _obs = dns_sources(endpoint.owner, resolvers, dns_port, dns_timeout,
                                      env.clock)

    now = env.clock.now()
    outcomes = judge(chains, sources, host, now)

    ok = bool(outcomes) and all(o.ok for o in outcomes)
    if args.nagios:
        status, text = _host_nagios(endpoint, outcomes, ok, now, args)
        env.out(text)
        return int(status)
    if args.json:
        env.out(json.dumps(_json(endpoint, outcomes, sources, ok), indent=2))
    else:
        _print(endpoint, outcomes, env)
    return int(ExitStatus.OK if ok else ExitStatus.ERROR)


# --------------------------------------------------------------------------- arguments


def _check_host(text: str) -> str:
    host, problem = normalize_hostname(text)
    if problem:
        raise UsageError(f"host '{clip(text, 60)}' is not a valid host name: {problem}")
    return host


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range (1-65535)")
    return port


def _check_ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise UsageError(f"{what} '{clip(text, 60)}' is not an IP address") from None


def _parse_tlsa(texts: Sequence[str]) -> list[TLSARecord]:
    out: list[TLSARecord] = []
    for text in texts:
        try:
            rec = TLSARecord.from_text(text)
        except ValueError as exc:
            raise UsageError(f"--tlsa: {exc}") from None
        if rec not in out:
            out.append(rec)
    return out


def _load_chain(path: str, env: Environment) -> ChainSource:
    material = tlsa.load_material(path)  # MissingInputError / InputError, one line
    if not material.certificates:
        raise InputError(
            f"{material.source}: holds no certificate (a chain file starts with the leaf)"
        )
    for note in material.notes:
        env.err(f"rollover: warning: {note}")
    return ChainSource(f"file {material.source}", None, None, material.certificates)


def _resolvers(args: argparse.Namespace, env: Environment) -> tuple[list[str], int, float]:
    if args.resolver:
        return [_check_ip(r, "--resolver") for r in args.resolver], 53, 2.0
    from rollover.config.load import load_config

    path = env.config_path(args.config)
    if args.config is None and not path.exists():
        raise UsageError(
            "give --resolver IP (or --config with a `resolver` setting), or --tlsa and "
            "--address: the system resolver is never used"
        )
    config = load_config(path)
    return list(config.resolver), config.dns.port, config.dns.timeout


# --------------------------------------------------------------------------- output


def _print(endpoint: Endpoint, outcomes: list[Outcome], env: Environment) -> None:
    def say(line: str) -> None:
        # labels, errors and reasons carry what servers and certificates said: escape them
        env.out(printable(line))

    for o in outcomes:
        if o.chain.error is not None:
            say(f"FAIL  {o.chain.label}: {o.chain.error}")
            continue
        for src, verdict in o.verdicts:
            if verdict is None:
                say(f"FAIL  {o.chain.label} vs {src.label}: {src.error}")
                continue
            word = "OK  " if verdict.matched else "FAIL"
            say(f"{word}  {o.chain.label} vs {src.label}: {verdict.reason}")
    bad = sum(1 for o in outcomes if not o.ok)
    total = len(outcomes)
    summary = (f"all {total} chain(s) match" if not bad else f"{bad} of {total} chain(s) do not "
               "match")
    say(f"{endpoint.owner} {summary}")


def _json(endpoint: Endpoint, outcomes: list[Outcome], sources: list[RecordSource],
          ok: bool) -> dict[str, Any]:
    return {
        "$schema": "https://rollover.invalid/schemas/check-host.schema.json",
        "host": endpoint.host,
        "port": endpoint.port,
        "owner": endpoint.owner,
        "ok": ok,
        "record_sources": sources_json(sources),
        "chains": outcomes_json(outcomes),
    }


def _host_nagios(endpoint: Endpoint, outcomes: list[Outcome], ok: bool, now: datetime,
                 args: argparse.Namespace) -> tuple[ExitStatus, str]:
    chains = [o for o in outcomes if o.chain.error is None]
    days = [(o.chain.chain[0].not_valid_after_utc - now).total_seconds() / 86400
            for o in chains if o.chain.chain]
    status = ExitStatus.OK if ok else ExitStatus.ERROR
    soonest = min(days) if days else None
    if status == ExitStatus.OK and soonest is not None and soonest < args.warning:
        status = ExitStatus.ERROR if soonest < args.critical else ExitStatus.WARNING
    perf = [nagios_out.Perf("chains", len(outcomes), minimum="0"),
            nagios_out.Perf("chains_matching", sum(1 for o in outcomes if o.ok), minimum="0")]
    if soonest is not None:
        perf.append(nagios_out.Perf("days_to_expiry", round(soonest, 2),
                                    warn=nagios_out.expiry_range(args.warning),
                                    crit=nagios_out.expiry_range(args.critical)))
    bad = [o for o in outcomes if not o.ok]
    summary = (f"{endpoint.owner} all {len(outcomes)} chain(s) match" if not bad else
               f"{endpoint.owner} {len(bad)} of {len(outcomes)} chain(s) do not match")
    if soonest is not None:
        summary += f", certificate expiry in {soonest:.1f} days"
    details = [f"{o.chain.label}: " + (o.chain.error or "no match on " + ", ".join(
        s.label for s, v in o.verdicts if v is None or not v.matched)) for o in bad]
    return status, nagios_out.plugin_output("DANE", status, summary, perf, details)


# --------------------------------------------------------------------------- --domain


def _run_domain(args: argparse.Namespace, env: Environment) -> int:
    from rollover.edges.observe import Observer
    from rollover.monitor import anchors, check_output
    from rollover.monitor.domaincheck import Options, check_domain

    domain = _check_host(args.domain)
    if args.host is not None:
        raise UsageError("give either a HOST or --domain, not both")
    if args.address or args.chain or args.tlsa:
        raise UsageError("--domain finds addresses and records itself: leave out --address, "
                         "--chain and --tlsa")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g} must be positive")
    validating = (_check_ip(args.validating_resolver, "--validating-resolver")
                  if args.validating_resolver else None)
    if validating and args.trust_anchor:
        raise UsageError("give --trust-anchor or --validating-resolver, not both")
    anchor = None if validating else anchors.load(args.trust_anchor)
    resolvers, dns_port, dns_timeout = _resolvers(args, env)
    algorithms = tuple(Algorithm(a) for a in dict.fromkeys(args.algorithm)) or DEFAULT_ALGORITHMS
    opts = Options(port=_check_port(args.port), resolvers=tuple(resolvers), dns_port=dns_port,
                   dns_timeout=dns_timeout, timeout=args.timeout, algorithms=algorithms,
                   tls=args.tls, anchor=anchor, validating_resolver=validating,
                   warn_days=args.warning, crit_days=args.critical)
    clock = env.clock
    try:
        observer = Observer(resolvers, port=dns_port, timeout=dns_timeout, clock=clock)
    except ObserveError as exc:
        raise UsageError(str(exc)) from None
    report = check_domain(domain, opts, observer, clock.now())
    if args.prometheus:
        from rollover.monitor.metrics import write_domain

        write_domain(report, args.prometheus)
    if args.nagios:
        status, text = check_output.nagios(report, args.warning, args.critical)
        env.out(text)
        return int(status)
    env.out(check_output.to_json(report) if args.json else check_output.text(report))
    return int(check_output.exit_status(report))
