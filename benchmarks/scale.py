"""Scale: N DNS-only endpoints (TTL 3) in the lab, each command timed as a whole process.

    PYTHONPATH=tests python3 benchmarks/scale.py                 # N = 100 and 1000
    PYTHONPATH=tests python3 benchmarks/scale.py --sizes 100 --python /other/venv/bin/python

Rows, per N (columns), next to the floor measured in the same run:
- raw wave: the 3 x N TLSA queries (every owner x every server) sent at once, one dnspython
  asyncio wave in this process: the floor an observation round is compared with;
- sequential dig: `dig +norec @server owner TLSA` one after the other (what danectl/danebot do),
  sampled on 60 owner x server pairs and extrapolated to 3 x N;
- keygen: N ECDSA P-256 keys generated in this process (what bootstrap must spend anyway);
- plan, bootstrap `run`, `run` that marks omnipresent (after 2 x TTL), no-op `run`, `status`:
  `python -m rollover ...` wall time, whole process; peak RSS is the largest of those processes.

Every figure is printed with its ratio to the raw wave of the same N; the last column is the
N=100 -> N=1000 ratio (10 means linear). Timings are noisy on a shared machine: compare ratios.
A step slower than --max-step seconds is killed and shown as "> LIMIT".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("ROLLOVER_LAB_NET", "127.0.8")

import dns.asyncquery
import dns.flags
import dns.message
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from rollover.clock import SystemClock

from lab.dns import DnsLab

CLOCK = SystemClock()
TTL = 3
DIG_SAMPLE = 60
STEPS = ("plan", "bootstrap", "omnipresent", "no-op", "status")


@dataclass
class Column:
    n: int
    wave: float = 0.0
    dig: float = 0.0
    keygen: float = 0.0
    steps: dict[str, float | None] = field(default_factory=dict)  # None: killed at the limit
    rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)


def owners(prefix: str, n: int) -> list[str]:
    return [f"_25._tcp.{prefix}{i}.example.test." for i in range(n)]


def write_config(directory: Path, lab: DnsLab, prefix: str, n: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    doc = {
        "state_dir": str(directory / "state"),
        "resolver": [lab.primary.address],
        "dns": {"timeout": 2.0},
        "providers": {"lab": {
            "type": "rfc2136", "server": lab.primary.address, "tsig_key_name": lab.tsig_name,
            "tsig_algorithm": lab.tsig_algorithm, "tsig_secret_file": str(lab.tsig_secret_file),
        }},
        "endpoints": [{
            "host": f"{prefix}{i}.example.test", "zone": "example.test", "provider": "lab",
            "algorithms": ["ecdsa-p256"], "ttl": TTL, "bootstrap": "no-certificate",
            "policy": {"retire_grace": "2s"},
        } for i in range(n)],
    }
    path = directory / "rollover.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def _wave(pairs: list[tuple[str, str]]) -> int:
    async def one(address: str, owner: str) -> bool:
        q = dns.message.make_query(owner, "TLSA", want_dnssec=True)
        q.flags &= ~dns.flags.RD
        try:
            await dns.asyncquery.udp(q, address, timeout=5.0)
        except Exception:
            return False
        return True

    results = await asyncio.gather(*(one(a, o) for a, o in pairs))
    return sum(results)


def raw_wave(lab: DnsLab, names: list[str]) -> float:
    pairs = [(s.address, o) for o in names for s in lab.servers]
    best = None
    for _ in range(3):  # the best of three: the floor
        t = CLOCK.monotonic()
        answered = asyncio.run(_wave(pairs))
        took = CLOCK.monotonic() - t
        if answered != len(pairs):
            print(f"  raw wave: only {answered}/{len(pairs)} answered", file=sys.stderr)
        best = took if best is None else min(best, took)
    assert best is not None
    return best


def sequential_dig(lab: DnsLab, names: list[str]) -> float:
    rng = random.Random(12)
    pairs = [(s.address, o) for o in names for s in lab.servers]
    sample = rng.sample(pairs, min(DIG_SAMPLE, len(pairs)))
    t = CLOCK.monotonic()
    for address, owner in sample:
        subprocess.run(["dig", "+norec", "+dnssec", "+time=2", "+tries=1", f"@{address}", owner,
                        "TLSA"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (CLOCK.monotonic() - t) / len(sample) * len(pairs)


def keygen(n: int) -> float:
    t = CLOCK.monotonic()
    for _ in range(n):
        ec.generate_private_key(ec.SECP256R1())
    return CLOCK.monotonic() - t


def timed(python: str, argv: list[str], limit: float, env: dict[str, str]
          ) -> tuple[float | None, float, int]:
    """(wall seconds or None when killed, peak RSS MiB, exit code) of one rollover process."""
    t = CLOCK.monotonic()
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen([python, "-m", "rollover", *argv], stdout=subprocess.DEVNULL,
                                stderr=err_file, env=env, cwd=tempfile.gettempdir())
        killed = False
        while True:  # os.wait4 (not Popen.wait) so the child's rusage is ours to read
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if CLOCK.monotonic() - t > limit and not killed:
                proc.kill()
                killed = True
            CLOCK.sleep(0.02)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        took = CLOCK.monotonic() - t
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    if ("rollover: error" in err or "Traceback" in err) and not killed:
        print(f"  rollover {argv[0]} exited {code}: {err[-600:]}", file=sys.stderr)
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    if lines:
        print(f"  rollover {argv[0]}: {len(lines)} warning line(s), first: {lines[0][:120]}",
              file=sys.stderr)
    return (None if killed else took), usage.ru_maxrss / 1024, code


def measure(lab: DnsLab, n: int, python: str, limit: float, work: Path) -> Column:
    prefix = f"s{n}x{random.randrange(10**6)}-"
    names = owners(prefix, n)
    col = Column(n)
    print(f"N={n}: raw wave, dig, keygen", file=sys.stderr)
    col.wave = raw_wave(lab, names)
    col.dig = sequential_dig(lab, names)
    col.keygen = keygen(n)
    cfg = write_config(work / f"n{n}", lab, prefix, n)
    env = {**os.environ}
    env.pop("PYTHONPATH", None)  # the rollover under test comes from --python's environment
    base = ["--config", str(cfg)]
    runs = {"plan": ["plan", *base], "bootstrap": ["run", *base], "omnipresent": ["run", *base],
            "no-op": ["run", *base], "status": ["status", *base]}
    for step in STEPS:
        if step == "omnipresent":  # let every server serve the records for 2 x TTL first
            CLOCK.sleep(2 * TTL + 1)
        print(f"N={n}: {step}", file=sys.stderr)
        took, rss, _code = timed(python, runs[step], limit, env)
        col.steps[step] = took
        col.rss_mib = max(col.rss_mib, rss)
    return col


def fmt(seconds: float | None, limit: float) -> str:
    if seconds is None:
        return f"> {limit:.0f} s"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    return f"{seconds:.2f} s"


def table(cols: list[Column], limit: float) -> str:
    head = "| | " + " | ".join(f"N = {c.n:,}" for c in cols)
    scale = len(cols) >= 2
    head += " | N ratio |" if scale else " |"
    sep = "|---" * (len(cols) + 1 + int(scale)) + "|"
    rows = [head, sep]

    def row(name: str, values: list[float | None], ratio: bool = True) -> None:
        cells = []
        for c, v in zip(cols, values, strict=True):
            text = fmt(v, limit)
            if ratio and v is not None and c.wave:
                text += f" ({v / c.wave:.1f} x wave)"
            cells.append(text)
        line = f"| {name} | " + " | ".join(cells)
        if scale:
            a, b = values[0], values[-1]
            line += f" | {b / a:.1f} |" if a and b else " | - |"
        else:
            line += " |"
        rows.append(line)

    row("raw wave (3 x N TLSA, one asyncio wave)", [c.wave for c in cols], ratio=False)
    row("sequential dig (sampled)", [c.dig for c in cols])
    row("keygen (N x ECDSA P-256, in process)", [c.keygen for c in cols])
    for step in STEPS:
        label = {"bootstrap": "bootstrap `run`", "omnipresent": "`run` marking omnipresent",
                 "no-op": "no-op `run`"}.get(step, f"`{step}`")
        row(label, [c.steps.get(step) for c in cols])
    rss = " | ".join(f"{c.rss_mib:.0f} MiB" for c in cols)
    rows.append(f"| peak RSS of a rollover process | {rss} |" + (" |" if scale else ""))
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--python", default=sys.executable, help="interpreter whose rollover runs")
    ap.add_argument("--max-step", type=float, default=600.0, help="seconds before a step is killed")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rollover-scale-"))
    with DnsLab() as lab:
        cols = [measure(lab, n, args.python, args.max_step, work) for n in sizes]
    print(table(cols, args.max_step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
