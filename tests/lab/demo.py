"""The main job on the embedded default: start the lab, bootstrap DANE for an MX host from
nothing, roll its key over, and show `rollover status`.

    bash examples/lab-demo.sh          (installs what it needs, then runs this)

Every step is a real `rollover` command against real servers on loopback: BIND primary
(DNSSEC, TSIG updates) + BIND and Knot secondaries, Pebble as the ACME CA, Postfix with STARTTLS.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from rollover.clock import SystemClock

from lab.configs import write_full_config
from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab

CLOCK = SystemClock()
HOST = "mail.example.test"


def rollover(*args: str) -> float:
    argv = [sys.executable, "-m", "rollover", *args]
    print(f"\n$ rollover {shlex.join(args)}", flush=True)
    start = CLOCK.monotonic()
    proc = subprocess.run(argv)
    took = CLOCK.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"demo: `rollover {shlex.join(args)}` exited {proc.returncode}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="leave the lab running until Enter")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollover-demo-"))
    clock_start = CLOCK.monotonic()
    with DnsLab() as dns, PebbleLab(f"{dns.primary.address}:53", dns.net) as pebble, \
            PostfixLab(dns.net) as postfix:
        print(f"lab up in {CLOCK.monotonic() - clock_start:.1f}s: nameservers "
              + ", ".join(f"{s.name} {s.address}" for s in dns.servers)
              + f"; ACME {pebble.directory_url}; Postfix {postfix.address}:25")
        cfg = write_full_config(work, dns, pebble, postfix, HOST,
                                algorithms=("ecdsa-p256", "rsa2048"),
                                policy={"retire_grace": "2s"})
        print(f"config: {cfg}  (TLSA TTL {dns.ttl}s, so 2 x TTL = {2 * dns.ttl}s)")
        c = ["--config", str(cfg)]
        rollover("plan", *c)
        boot = rollover("run", "--wait", *c)
        rollover("check", HOST, "--resolver", dns.primary.address)
        roll = rollover("run", "--roll", "--wait", *c)
        rollover("check", HOST, "--resolver", dns.primary.address)
        rollover("status", *c)
        print(f"\ndemo: bootstrap {boot:.1f}s, key rollover {roll:.1f}s, "
              f"2 x TTL = {2 * dns.ttl}s, total {CLOCK.monotonic() - clock_start:.1f}s")
        if args.keep:
            input("lab running; press Enter to stop it ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
