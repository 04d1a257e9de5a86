"""Dovecot as the lab's IMAP/POP3 server (Debian dovecot-core, -imapd, -pop3d): `dovecot -F -c
CONF` with its own base_dir and state_dir, STARTTLS on {net}.32:143 (IMAP) and :110 (POP3 STLS),
implicit TLS on :993 and :995, one combined file per algorithm (key, then chain; 0600 root) as
ssl_cert/ssl_key and ssl_alt_cert/ssl_alt_key, self-signed at first. `doveadm -c CONF reload`
picks up new files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lab.pki import ALGORITHMS, chain_file_bytes, generate_key, self_signed, write_private
from lab.proc import Daemon, LabError, LoopbackAddresses, lab_net, tcp_open, wait_for

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
HOSTNAME = "imap.example.test"
PORTS = (143, 993, 110, 995)


class DovecotLab:
    def __init__(self, net: str | None = None, hostname: str = HOSTNAME) -> None:
        self.net = net or lab_net()
        self.address = f"{self.net}.32"
        self.hostname = hostname
        self.workdir = Path(tempfile.mkdtemp(prefix="rollover-dovecot-"))
        os.chmod(self.workdir, 0o755)  # login processes (dovenull) reach base_dir
        self.base_dir = self.workdir / "run"
        self.state_dir = self.workdir / "state"
        self.tls_dir = self.workdir / "tls"
        self.config = self.workdir / "dovecot.conf"
        self.log = self.workdir / "dovecot.log"
        self.chain_files: dict[str, Path] = {a: self.tls_dir / f"{a}.pem" for a in ALGORITHMS}
        self.reload_command = [DOVEADM, "-c", str(self.config), "reload"]
        self.daemon: Daemon | None = None
        self._addresses = LoopbackAddresses()

    def _conf(self) -> str:
        ec, rsa = (self.chain_files[a] for a in ALGORITHMS)
        return f"""\
base_dir = {self.base_dir}
state_dir = {self.state_dir}
listen = {self.address}
protocols = imap pop3
log_path = {self.log}
ssl = yes
ssl_min_protocol = TLSv1.2
ssl_cert = <{ec}
ssl_key = <{ec}
ssl_alt_cert = <{rsa}
ssl_alt_key = <{rsa}
auth_mechanisms = plain
passdb {{
  driver = static
  args = nopassword
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 143
  }}
  inet_listener imaps {{
    port = 993
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = 110
  }}
  inet_listener pop3s {{
    port = 995
    ssl = yes
  }}
}}
"""

    def _write(self) -> None:
        for d in (self.base_dir, self.state_dir, self.tls_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        os.chmod(self.tls_dir, 0o700)
        self.config.write_text(self._conf())
        for algorithm in ALGORITHMS:
            if not self.chain_files[algorithm].exists():
                key = generate_key(algorithm)
                write_private(self.chain_files[algorithm],
                              chain_file_bytes(key, [self_signed(key, [self.hostname])]))

    def start(self, timeout: float = 15.0) -> float:
        self._write()
        self._addresses.ensure(self.address)
        self.daemon = Daemon("dovecot", [DOVECOT, "-F", "-c", str(self.config)],
                             self.workdir / "dovecot.out", cwd=self.workdir)
        self.daemon.start()
        try:
            waited: float = wait_for(self._up, timeout, f"Dovecot IMAP on {self.address}")
        except LabError:
            self.daemon.check_alive()
            self.stop()
            raise
        return waited

    def _up(self) -> bool:
        assert self.daemon is not None
        self.daemon.check_alive()
        return all(tcp_open(self.address, p) for p in PORTS)

    def reload(self) -> None:
        proc = subprocess.run(self.reload_command, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise LabError(f"doveadm reload failed: {(proc.stderr or proc.stdout).strip()}")

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None
        self._addresses.remove_all()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DovecotLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
