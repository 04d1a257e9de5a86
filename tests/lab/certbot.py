"""Real certbot (PyPI, the test extra) with certbot-dns-rfc2136 against the lab: Pebble as the
ACME server (its HTTPS CA trusted through REQUESTS_CA_BUNDLE), DNS-01 TXT records written with
TSIG to the lab's BIND primary, every certbot directory in a temp dir. Traffic stays on
loopback: --server is Pebble, --no-eff-email, --no-random-sleep-on-renew."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lab.dns import DnsLab
from lab.pebble import PebbleLab


def certbot_binary() -> str | None:
    beside = Path(sys.executable).parent / "certbot"  # the venv's, next to its python
    return str(beside) if beside.exists() else shutil.which("certbot")


class Certbot:
    def __init__(self, workdir: Path, dns_lab: DnsLab, pebble: PebbleLab) -> None:
        binary = certbot_binary()
        assert binary is not None, "certbot is not installed (pip install '.[test]')"
        self.binary = binary
        self.pebble = pebble
        self.config_dir = workdir / "letsencrypt"
        self.work_dir = workdir / "certbot-work"
        self.logs_dir = workdir / "certbot-logs"
        for d in (self.config_dir, self.work_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.credentials = workdir / "rfc2136.ini"
        self.credentials.write_text(
            f"dns_rfc2136_server = {dns_lab.primary.address}\n"
            "dns_rfc2136_port = 53\n"
            f"dns_rfc2136_name = {dns_lab.tsig_name}\n"
            f"dns_rfc2136_secret = {dns_lab.tsig_secret}\n"
            "dns_rfc2136_algorithm = HMAC-SHA256\n")
        os.chmod(self.credentials, 0o600)

    def live(self, name: str) -> Path:
        return self.config_dir / "live" / name

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *args,
                "--config-dir", str(self.config_dir), "--work-dir", str(self.work_dir),
                "--logs-dir", str(self.logs_dir), "--server", self.pebble.directory_url,
                "--non-interactive", "--no-eff-email"]
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(self.pebble.ca_bundle)}
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        assert proc.returncode == 0, f"certbot {args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def certonly(self, name: str, host: str, deploy_hook: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
        hook = ["--deploy-hook", deploy_hook] if deploy_hook else []
        return self._run("certonly", "--cert-name", name, "-d", host, "--agree-tos",
                         "-m", "hostmaster@example.test", "--key-type", "ecdsa",
                         "--elliptic-curve", "secp256r1", "--authenticator", "dns-rfc2136",
                         "--dns-rfc2136-credentials", str(self.credentials),
                         "--dns-rfc2136-propagation-seconds", "1", *hook)

    def renew(self, name: str, *, new_key: bool, deploy_hook: str | None = None
              ) -> subprocess.CompletedProcess[str]:
        hook = ["--deploy-hook", deploy_hook] if deploy_hook else []
        return self._run("renew", "--cert-name", name, "--force-renewal",
                         "--new-key" if new_key else "--reuse-key",
                         "--no-random-sleep-on-renew", *hook)

    def log(self) -> str:
        return (self.logs_dir / "letsencrypt.log").read_text(errors="replace")

    def tree(self) -> dict[str, str]:
        """Every file and link under the config dir, with its content hash or link target:
        proves rollover wrote nothing there."""
        out: dict[str, str] = {}
        for root, dirs, files in os.walk(self.config_dir):
            for name in dirs + files:
                path = Path(root) / name
                rel = str(path.relative_to(self.config_dir))
                if path.is_symlink():
                    out[rel] = "-> " + os.readlink(path)
                elif path.is_file():
                    out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
                    out[rel] += f" {os.stat(path).st_mode & 0o7777:o}"
        return out
