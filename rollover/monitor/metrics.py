"""Prometheus textfile-collector output (node_exporter --collector.textfile.directory).

Written with prometheus_client's own exposition (`write_to_textfile`: a temporary file in the
same directory, then a rename, so the collector never reads half a file). The metrics are listed
in the README ("Monitoring").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from rollover.core import machine as m
from rollover.display import shown_path
from rollover.errors import InputError
from rollover.monitor.domaincheck import DomainReport
from rollover.monitor.hygiene import Severity
from rollover.monitor.report import SlotReport


def _write(registry: CollectorRegistry, path: str | Path) -> None:
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"--prometheus {shown_path(target)}: directory "
                         f"{shown_path(target.parent)} does not exist")
    try:
        write_to_textfile(str(target), registry)
    except OSError as exc:
        raise InputError(f"--prometheus {shown_path(target)}: cannot write: "
                         f"{exc.strerror or exc}") from None


def status_metrics(reports: Sequence[SlotReport], now: datetime) -> CollectorRegistry:
    reg = CollectorRegistry()
    phase = Gauge("rollover_slot_phase", "1 for the phase the slot is in (one series per phase)",
                  ["slot", "phase"], registry=reg)
    wake = Gauge("rollover_slot_seconds_until_next_action",
                 "seconds until the slot's next action is due (0: now)", ["slot"], registry=reg)
    records = Gauge("rollover_slot_records", "TLSA records each authoritative server serves "
                    "for the slot's owner (at the last observation)",
                    ["slot", "server", "address"], registry=reg)
    kept = Gauge("rollover_slot_records_tracked", "records the state tracks for the slot",
                 ["slot"], registry=reg)
    expiry = Gauge("rollover_certificate_expiry_timestamp_seconds",
                   "notAfter of the certificate installed for the slot", ["slot"], registry=reg)
    errors = Gauge("rollover_slot_error", "1 when the slot has an error (or a recorded "
                   "failure), else 0", ["slot"], registry=reg)
    failures = Gauge("rollover_slot_failures", "consecutive failures recorded for the slot",
                     ["slot"], registry=reg)
    observed = Gauge("rollover_slot_observed_timestamp_seconds",
                     "when the nameservers were last observed for the slot", ["slot"],
                     registry=reg)
    stamp = Gauge("rollover_status_timestamp_seconds", "when this status was taken",
                  registry=reg)
    stamp.set(now.timestamp())
    for r in reports:
        key = r.slot.key
        st = r.state
        for p in m.Phase:
            phase.labels(key, p.value).set(1 if st.phase == p else 0)
        if r.wake_at is not None:
            wake.labels(key).set(max(0.0, (r.wake_at - now).total_seconds()))
        kept.labels(key).set(len(st.records))
        if st.installed is not None:
            expiry.labels(key).set(st.installed.not_after.timestamp())
        errors.labels(key).set(1 if (r.error or st.last_error) else 0)
        failures.labels(key).set(st.failures)
        if st.observation is not None:
            observed.labels(key).set(st.observation.at.timestamp())
            for a in st.observation.answers:
                records.labels(key, a.server, a.address).set(len(a.records))
    return reg


def write_status(reports: Sequence[SlotReport], now: datetime, path: str | Path) -> None:
    _write(status_metrics(reports, now), path)


def write_registry(registry: CollectorRegistry, path: str | Path) -> None:
    _write(registry, path)


def domain_metrics(report: DomainReport) -> CollectorRegistry:
    """`check --domain`: one series per MX host x address x algorithm, per server, per finding
    severity; the timestamp of this (successful) check."""
    reg = CollectorRegistry()
    d = report.domain
    match = Gauge("rollover_check_chain_match", "1 when the chain of this address x algorithm "
                  "matches the TLSA RRset of every authoritative server, else 0",
                  ["domain", "mx", "address", "algorithm"], registry=reg)
    expiry = Gauge("rollover_check_certificate_expiry_timestamp_seconds",
                   "notAfter of the leaf this address x algorithm presents",
                   ["domain", "mx", "address", "algorithm"], registry=reg)
    records = Gauge("rollover_check_records", "TLSA records each authoritative server serves",
                    ["domain", "mx", "server", "address"], registry=reg)
    secure = Gauge("rollover_check_dnssec_valid", "1 when the TLSA RRset is DNSSEC-valid",
                   ["domain", "mx"], registry=reg)
    findings = Gauge("rollover_check_findings", "findings by severity",
                     ["domain", "severity"], registry=reg)
    ok = Gauge("rollover_check_ok", "1 when the domain check found nothing critical",
               ["domain"], registry=reg)
    stamp = Gauge("rollover_check_timestamp_seconds", "when this check ran", ["domain"],
                  registry=reg)
    for h in report.hosts:
        for o in h.outcomes:
            labels = (d, h.name, o.chain.address or "", o.chain.algorithm or "")
            match.labels(*labels).set(1 if o.ok else 0)
            if o.chain.chain:
                expiry.labels(*labels).set(o.chain.chain[0].not_valid_after_utc.timestamp())
        for s in h.sources:
            records.labels(d, h.name, s.server or "", s.address or "").set(len(s.records))
        if h.validation is not None:
            secure.labels(d, h.name).set(1 if h.validation.secure else 0)
    for sev in Severity:
        findings.labels(d, sev.value).set(sum(1 for f in report.findings if f.severity == sev))
    ok.labels(d).set(1 if report.severity != Severity.CRITICAL else 0)
    stamp.labels(d).set(report.at.timestamp())
    return reg


def write_domain(report: DomainReport, path: str | Path) -> None:
    _write(domain_metrics(report), path)
