"""Plan and status as text for people, JSON for machines (schemas/status.schema.json), the
Nagios plugin format (status line, perfdata, details)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollover.clock import format_time
from rollover.core import machine as m
from rollover.display import printable
from rollover.errors import ExitStatus
from rollover.model import ServerAnswer, SlotId
from rollover.monitor.nagios import Perf, expiry_range, plugin_output


@dataclass
class SlotReport:
    """One slot after `run`, `plan` or `status`: its state, why, and what comes next."""

    slot: SlotId
    state: m.SlotState
    reason: str
    action: str | None = None
    wake_at: datetime | None = None
    done: list[str] = field(default_factory=list)  # what this run did (or would do), in order
    error: str | None = None
    live: list[str] = field(default_factory=list)  # status: what each address presents


def _short(rdata: str) -> str:
    parts = rdata.split()
    if len(parts) == 4 and len(parts[3]) > 16:
        return f"{' '.join(parts[:3])} {parts[3][:12]}…"
    return rdata


def _when(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "nothing scheduled"
    left = (dt - now).total_seconds()
    if left <= 0:
        return "now"
    return f"at {format_time(dt)} (in {m.human_duration(left)})"


def _server_line(a: ServerAnswer, st: m.SlotState) -> str:
    if not a.ok:
        return f"{a.label}: {a.error or a.rcode}"
    wanted = st.wanted()
    roles = {k.rdata: k.role.value for k in st.keys}
    has = sorted(roles[r] for r in a.records if r in roles)
    lacks = sorted(roles.get(r, r) for r in wanted - a.records)
    if not wanted and not has:
        verdict = "nothing of ours published yet"
    else:
        verdict = f"has {', '.join(has) or 'none of our keys'}" + (
            f"; lacks {', '.join(lacks)}" if lacks else "")
    extra = [f"ttl {a.ttl}" if a.ttl is not None else "no RRset", f"serial {a.serial}"]
    if a.dnssec:
        extra.append(f"dnssec {a.dnssec}")
    return f"{a.label}: {len(a.records)} records, {', '.join(extra)}; {verdict}"


def slot_text(r: SlotReport, now: datetime, *, heading: str = "next") -> list[str]:
    st = r.state
    lines = [f"{r.slot}: {st.phase.value} since {format_time(st.phase_since)}"]
    for k in st.keys:
        lines.append(f"  key {k.role.value:<8} {k.key_id}  3 1 1 {k.spki_sha256[:12]}…")
    for rec in st.records:
        what = f"  ({printable(rec.label)})" if rec.label else ""
        lines.append(f"  record {_short(rec.rdata)}  {rec.state.value} since "
                     f"{format_time(rec.since)}{what}")
    if st.installed is not None:
        c = st.installed
        lines.append(f"  certificate for {c.key_id}, serial {c.serial[:16]}, valid until "
                     f"{format_time(c.not_after)}"
                     + (f", ARI renewal at {format_time(c.renew_at)}" if c.renew_at else ""))
    obs = st.observation
    if obs is not None:
        lines.append(f"  nameservers at {format_time(obs.at)} (zone {obs.zone}):")
        for a in obs.answers:
            lines.append(f"    {_server_line(a, st)}")
        for p in obs.problems:
            lines.append(f"    problem: {p}")
    if r.live:
        lines.append("  live server:")
        lines.extend(f"    {line}" for line in r.live)
    if st.last_error:
        lines.append(f"  last error: {st.last_error}")
    for d in r.done:
        lines.append(f"  did: {d}" if not d.startswith("would") else f"  {d}")
    if r.action:
        lines.append(f"  {heading}: {r.action}")
    lines.append(f"  {'error' if r.error else 'reason'}: {r.error or r.reason}")
    lines.append(f"  wake up: {_when(r.wake_at, now)}")
    return lines


def text(reports: list[SlotReport], now: datetime, *, heading: str = "next") -> str:
    if not reports:
        return "no endpoints configured"
    # server answers, probe errors and subjects are untrusted text: escape control characters
    lines = (line for r in reports for line in slot_text(r, now, heading=heading))
    return "\n".join(printable(line) for line in lines)


STATUS_SCHEMA = "https://rollover.invalid/schemas/status.schema.json"


def to_json(reports: list[SlotReport], now: datetime) -> str:
    out: list[dict[str, Any]] = []
    for r in reports:
        d = m.slot_to_dict(r.state)
        d.update({"reason": r.reason, "action": r.action, "error": r.error, "done": r.done,
                  "live": r.live,
                  "wake_at": format_time(r.wake_at) if r.wake_at else None,
                  "seconds_until_wake": _seconds_until(r.wake_at, now)})
        out.append(d)
    return json.dumps({"$schema": STATUS_SCHEMA, "now": format_time(now), "slots": out},
                      indent=2, sort_keys=True)


def _seconds_until(dt: datetime | None, now: datetime) -> float | None:
    return None if dt is None else round(max(0.0, (dt - now).total_seconds()), 3)


def _days_left(st: m.SlotState, now: datetime) -> float | None:
    if st.installed is None:
        return None
    return (st.installed.not_after - now).total_seconds() / 86400


def _perf(reports: list[SlotReport], now: datetime, warn_days: float,
          crit_days: float) -> list[Perf]:
    perf: list[Perf] = []
    for r in reports:
        key = r.slot.key
        days = _days_left(r.state, now)
        if days is not None:
            perf.append(Perf(f"{key} days_to_expiry", round(days, 2),
                             warn=expiry_range(warn_days), crit=expiry_range(crit_days)))
        wait = _seconds_until(r.wake_at, now)
        if wait is not None:
            perf.append(Perf(f"{key} seconds_waiting", wait, unit="s", minimum="0"))
        perf.append(Perf(f"{key} records", len(r.state.records), minimum="0"))
    return perf


def nagios(reports: list[SlotReport], now: datetime, warn_days: float = 21.0,
           crit_days: float = 7.0) -> tuple[ExitStatus, str]:
    """Nagios plugin text and status: CRITICAL when a slot has an error or a certificate
    expires within `crit_days`, WARNING while a slot waits on a lagging server, has a recorded
    failure, or its certificate expires within `warn_days`. Perfdata per slot: days to expiry
    (with the -w/-c ranges), seconds waiting, records kept."""
    if not reports:
        return ExitStatus.UNKNOWN, "ROLLOVER UNKNOWN - no endpoints configured"
    crit, warn = [], []
    for r in reports:
        st = r.state
        days = _days_left(st, now)
        if r.error:
            crit.append(f"{r.slot}: {r.error}")
        elif st.installed and days is not None and days < crit_days:
            crit.append(f"{r.slot}: certificate expires {format_time(st.installed.not_after)}")
        elif st.last_error:
            warn.append(f"{r.slot}: {st.last_error}")
        elif r.reason.startswith(("waiting:", "dns says no")) and st.phase != m.Phase.NEW:
            warn.append(f"{r.slot}: {r.reason}")
        elif st.installed and days is not None and days < warn_days:
            warn.append(f"{r.slot}: certificate expires {format_time(st.installed.not_after)}")
    perf = _perf(reports, now, warn_days, crit_days)
    details = [f"{r.slot}: {r.state.phase.value}; {r.error or r.reason}" for r in reports]
    if crit:
        return ExitStatus.ERROR, plugin_output("ROLLOVER", ExitStatus.ERROR, "; ".join(crit),
                                               perf, details)
    if warn:
        return ExitStatus.WARNING, plugin_output("ROLLOVER", ExitStatus.WARNING,
                                                 "; ".join(warn), perf, details)
    summary = ", ".join(f"{r.slot} {r.state.phase.value}" for r in reports)
    return ExitStatus.OK, plugin_output("ROLLOVER", ExitStatus.OK, summary, perf, details)
