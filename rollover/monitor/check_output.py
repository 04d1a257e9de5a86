"""Output of `rollover check --domain`: text for people, JSON (schemas/check-domain.schema.json)
and the Nagios plugin format. Every string that came from a server or certificate is escaped."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rollover.clock import format_time
from rollover.display import printable
from rollover.errors import ExitStatus
from rollover.monitor.domaincheck import DomainReport, HostReport
from rollover.monitor.hostcheck import outcomes_json, sources_json
from rollover.monitor.hygiene import Severity
from rollover.monitor.nagios import Perf, expiry_range, plugin_output

SCHEMA_ID = "https://rollover.invalid/schemas/check-domain.schema.json"


def exit_status(report: DomainReport) -> ExitStatus:
    sev = report.severity
    if sev == Severity.CRITICAL or not report.hosts:
        return ExitStatus.ERROR
    if sev == Severity.WARNING:
        return ExitStatus.WARNING
    return ExitStatus.OK


def min_days(report: DomainReport, now: datetime) -> float | None:
    days = [(o.chain.chain[0].not_valid_after_utc - now).total_seconds() / 86400
            for h in report.hosts for o in h.outcomes if o.chain.chain]
    return min(days) if days else None


def _counts(report: DomainReport) -> dict[str, int]:
    chains = [o for h in report.hosts for o in h.outcomes if o.chain.error is None]
    return {
        "mx_hosts": len(report.hosts),
        "addresses": sum(len(h.addresses) for h in report.hosts),
        "chains": len(chains),
        "chains_matching": sum(1 for o in chains if o.ok),
        "records": max((len(s.records) for h in report.hosts for s in h.sources), default=0),
        "critical": sum(1 for f in report.findings if f.severity == Severity.CRITICAL),
        "warning": sum(1 for f in report.findings if f.severity == Severity.WARNING),
        "info": sum(1 for f in report.findings if f.severity == Severity.INFO),
    }


def _summary(report: DomainReport) -> str:
    c = _counts(report)
    head = (f"{report.domain}: {c['mx_hosts']} MX host(s), {c['addresses']} address(es), "
            f"{c['chains_matching']}/{c['chains']} chain(s) match")
    worst = [f for f in report.findings if f.severity != Severity.INFO]
    if worst:
        head += f"; {c['critical']} critical, {c['warning']} warning: {worst[0].message}"
    return head


def _host_lines(h: HostReport) -> list[str]:
    lines = [f"MX {h.preference} {h.name}"
             + (f" -> {' -> '.join(h.cname_chain)}" if h.cname_chain else "")
             + (f": addresses {', '.join(h.addresses)}" if h.addresses else "")]
    if h.base:
        lines.append(f"  TLSA base {h.base}: {h.base_reason}")
    if h.error:
        lines.append(f"  error: {h.error}")
    for s in h.sources:
        if s.error:
            lines.append(f"  {s.label}: {s.error}")
        else:
            lines.append(f"  {s.label}: {len(s.records)} record(s), ttl {s.ttl}, "
                         f"serial {s.serial}")
    if h.validation is not None:
        v = h.validation
        lines.append(f"  DNSSEC: {'valid' if v.secure else 'NOT valid'}, {v.method}"
                     + ("" if v.secure else f": {v.reason}")
                     + (f" (chain {' -> '.join(v.path)})" if v.path else ""))
    for o in h.outcomes:
        if o.chain.error is not None:
            lines.append(f"  {'FAIL' if not o.chain.nothing_served else 'NONE'}  "
                         f"{o.chain.label}: {o.chain.error}")
            continue
        word = "OK  " if o.ok else "FAIL"
        bad = [s.label for s, v in o.verdicts if v is None or not v.matched]
        lines.append(f"  {word}  {o.chain.label} {o.chain.protocol}: "
                     + ("matches every server" if not bad else f"no match on {', '.join(bad)}"))
    return lines


def text(report: DomainReport) -> str:
    lines = [_summary(report), f"DNSSEC: {report.dnssec_method}"]
    for h in report.hosts:
        lines.extend(_host_lines(h))
    if report.findings:
        lines.append("findings:")
    for f in report.findings:
        lines.append(f"  {f.severity.value.upper():<8} [{f.code}] {f.subject}: {f.message}")
        if f.advice:
            lines.append(f"           advice: {f.advice}")
        for cmd in f.commands:
            lines.append(f"           check: {cmd}")
    return "\n".join(printable(line) for line in lines)


def to_dict(report: DomainReport) -> dict[str, Any]:
    status = exit_status(report)
    return {
        "$schema": SCHEMA_ID,
        "domain": report.domain,
        "port": report.port,
        "checked_at": format_time(report.at),
        "ok": report.ok,
        "status": {ExitStatus.OK: "ok", ExitStatus.WARNING: "warning"}.get(status, "critical"),
        "dnssec_method": report.dnssec_method,
        "counts": _counts(report),
        "min_days_to_expiry": (round(d, 3) if (d := min_days(report, report.at)) is not None
                               else None),
        "mx": [
            {
                "name": h.name,
                "preference": h.preference,
                "cname_chain": h.cname_chain,
                "target": h.target,
                "tlsa_base": h.base,
                "tlsa_base_reason": h.base_reason,
                "owner": h.owner,
                "addresses": h.addresses,
                "ok": h.ok,
                "error": h.error,
                "zone": h.observation.zone if h.observation else None,
                "dnssec": h.validation.to_dict() if h.validation else None,
                "record_sources": sources_json(h.sources),
                "chains": outcomes_json(h.outcomes),
            }
            for h in report.hosts
        ],
        "findings": [f.to_dict() for f in report.findings],
    }


def to_json(report: DomainReport) -> str:
    return json.dumps(to_dict(report), indent=2, sort_keys=True)


def nagios(report: DomainReport, warn_days: float, crit_days: float) -> tuple[ExitStatus, str]:
    status = exit_status(report)
    c = _counts(report)
    perf = [
        Perf("mx_hosts", c["mx_hosts"], minimum="0"),
        Perf("chains", c["chains"], minimum="0"),
        Perf("chains_matching", c["chains_matching"], minimum="0"),
        Perf("records", c["records"], minimum="0"),
        Perf("findings_critical", c["critical"], minimum="0"),
        Perf("findings_warning", c["warning"], minimum="0"),
    ]
    days = min_days(report, report.at)
    if days is not None:
        perf.append(Perf("days_to_expiry", round(days, 2), warn=expiry_range(warn_days),
                         crit=expiry_range(crit_days)))
    details = [f"{f.severity.value.upper()} [{f.code}] {f.subject}: {f.message}"
               for f in report.findings]
    return status, plugin_output("DANE", status, _summary(report), perf, details)
