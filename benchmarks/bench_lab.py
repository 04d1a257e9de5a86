"""The lab and the DNS half, measured: start/stop times and memory of the servers, one
verification round over 3 nameservers, and first update -> "ready" for the lab TTL."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("ROLLOVER_LAB_NET", "127.0.8")

from rollover.cli.main import main as rollover
from rollover.clock import SystemClock, parse_time
from rollover.edges.observe import Observer

from lab.configs import write_config
from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab

CLOCK = SystemClock()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    t = CLOCK.monotonic()
    dns = DnsLab()
    dns.start()
    dns_up = CLOCK.monotonic() - t
    t = CLOCK.monotonic()
    pebble = PebbleLab(f"{dns.primary.address}:53", dns.net)
    pebble.start()
    postfix = PostfixLab(dns.net)
    postfix.start()
    app_up = CLOCK.monotonic() - t
    pids = list(dns.pids().values()) + [p for p in [pebble.pid] if p] + postfix.process_ids()
    rss = sum(rss_kib(p) for p in pids) / 1024
    try:
        obs = Observer([dns.primary.address], clock=CLOCK)
        owner = "_25._tcp.mail.example.test."
        obs.observe(owner)  # discovery, cached afterwards
        rounds = []
        for _ in range(20):
            s = CLOCK.monotonic()
            obs.observe(owner)
            rounds.append(CLOCK.monotonic() - s)
        work = Path(tempfile.mkdtemp())
        cfg = write_config(work, dns, "bench.example.test")
        s = CLOCK.now()
        rollover(["run", "--wait", "--config", str(cfg)])
        import json

        slot = json.loads((work / "state" / "state.json").read_text())["slots"]
        st = slot["bench.example.test:25:ecdsa-p256"]
        ready = parse_time(st["phase_since"])
        submitted = parse_time(st["submitted_at"])
    finally:
        t = CLOCK.monotonic()
        postfix.close()
        pebble.close()
        dns.stop()
        down = CLOCK.monotonic() - t
    print(f"lab start: DNS {dns_up:.2f}s, Pebble+Postfix {app_up:.2f}s; stop {down:.2f}s; "
          f"RSS of all servers {rss:.0f} MiB")
    print(f"one verification round, 3 servers: median {statistics.median(rounds) * 1000:.1f} ms "
          f"(max {max(rounds) * 1000:.1f} ms, 20 rounds)")
    print(f"first update -> ready: {(ready - submitted).total_seconds():.2f}s for TTL {dns.ttl}s "
          f"(2T = {2 * dns.ttl}s); whole run {(ready - s).total_seconds():.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
