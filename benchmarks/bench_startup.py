"""Start-up time of commands that must be quick (cron, certbot hooks), as ratios to the import of
dnspython + cryptography that any DANE tool pays. Median of N runs of a fresh interpreter."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rollover.clock import SystemClock

CLOCK = SystemClock()
N = 15


def median_run(argv: list[str]) -> float:
    samples = []
    for _ in range(N):
        t = CLOCK.monotonic()
        subprocess.run(argv, capture_output=True, check=False)
        samples.append(CLOCK.monotonic() - t)
    return statistics.median(samples)


def main() -> int:
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import certgen

        cert = Path(tmp) / "cert.pem"
        cert.write_bytes(certgen.make_chain(1).leaf.cert_pem())
        rows = [
            ("python3 -c pass", [py, "-c", "pass"]),
            ("baseline: import dnspython + cryptography",
             [py, "-c", "import dns.message, dns.query, dns.resolver, cryptography.x509"]),
            ("rollover --version", [py, "-m", "rollover", "--version"]),
            ("rollover --help", [py, "-m", "rollover", "--help"]),
            ("rollover tlsa CERT", [py, "-m", "rollover", "tlsa", str(cert)]),
            ("rollover certbot-hook (no env)", [py, "-m", "rollover", "certbot-hook"]),
            ("rollover run --help", [py, "-m", "rollover", "run", "--help"]),
        ]
        times = [(name, median_run(argv)) for name, argv in rows]
    base = times[1][1]
    print(f"{'command':<44} {'median':>9} {'x baseline':>11}")
    for name, t in times:
        print(f"{name:<44} {t * 1000:7.0f}ms {t / base:10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
