"""Exim as a lab MTA: Debian's exim4-daemon-light unpacked from its .deb (it conflicts with
Postfix as a package; tests/lab/install.sh puts it under /opt/rollover-lab/exim4), run in the
foreground (`-bdf -C CONF`) on {net}.31:25 with its own spool, log and TLS directory.

TLS: one file per algorithm (key, then chain; `tls_certificate = A : B`, `tls_privatekey`
unset), 0640 group Debian-exim, self-signed at first. Exim reads those files once in its daemon
and reloads them ~5 s after they change (inotify). A SIGHUP re-exec runs the compiled-in
/usr/sbin/exim4 (absent here; seen: "exec of /usr/sbin/exim4 failed") and under `-C` would drop
root and fail to bind port 25, so `restart()` stops and starts the daemon instead.

`EximLab(separate=True, per_connection=True, suffix=33)` is the other common shape: separate key
and certificate files (`tls_privatekey` list) named through an expansion, which Exim cannot
preload: each connection reads them as the Exim user (Debian-exim), at once.
"""

from __future__ import annotations

import grp
import os
import shutil
import tempfile
from pathlib import Path

from lab.pki import ALGORITHMS, cert_pem, chain_file_bytes, generate_key, key_pem, self_signed
from lab.proc import Daemon, LabError, lab_net, tcp_open, wait_for

EXIM = os.environ.get("ROLLOVER_EXIM", "/opt/rollover-lab/exim4/usr/sbin/exim4")
EXIM_USER = "Debian-exim"
HOSTNAME = "mail.example.test"


def write_group_file(path: Path, data: bytes, group: str = EXIM_USER) -> None:
    """0640, group `group`, replaced atomically (the way the installer writes)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chown(tmp, -1, grp.getgrnam(group).gr_gid)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


class EximLab:
    def __init__(self, net: str | None = None, hostname: str = HOSTNAME, *, suffix: int = 31,
                 separate: bool = False, per_connection: bool = False) -> None:
        self.net = net or lab_net()
        self.address = f"{self.net}.{suffix}"
        self.separate = separate
        self.per_connection = per_connection
        self.port = 25
        self.hostname = hostname
        self.workdir = Path(tempfile.mkdtemp(prefix="rollover-exim-"))
        os.chmod(self.workdir, 0o755)
        self.spool = self.workdir / "spool"
        self.log_dir = self.workdir / "log"
        self.tls_dir = self.workdir / "tls"
        self.config = self.workdir / "exim.conf"
        ext = ".crt" if separate else ".pem"
        self.chain_files: dict[str, Path] = {a: self.tls_dir / f"{a}{ext}" for a in ALGORITHMS}
        self.key_files: dict[str, Path] = {
            a: self.tls_dir / f"{a}.key" if separate else self.chain_files[a] for a in ALGORITHMS}
        self.daemon: Daemon | None = None

    def _tls_lines(self) -> str:
        chains = " : ".join(str(self.chain_files[a]) for a in ALGORITHMS)
        keys = " : ".join(str(self.key_files[a]) for a in ALGORITHMS)
        if self.per_connection:  # an expansion: Exim cannot preload, reads per connection
            chains = f"${{if eq{{1}}{{1}}{{{chains}}}{{}}}}"
            keys = f"${{if eq{{1}}{{1}}{{{keys}}}{{}}}}"
        lines = f"tls_certificate = {chains}\n"
        if self.separate:
            lines += f"tls_privatekey = {keys}\n"
        return lines

    def _conf(self) -> str:
        return f"""\
primary_hostname = {self.hostname}
spool_directory = {self.spool}
log_file_path = {self.log_dir}/%slog
exim_user = {EXIM_USER}
exim_group = {EXIM_USER}
never_users = root
keep_environment =
daemon_smtp_ports = {self.port}
local_interfaces = {self.address}
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts = *
{self._tls_lines()}acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  deny message = the rollover lab accepts no mail
begin routers
begin transports
"""

    def _write(self) -> None:
        gid = grp.getgrnam(EXIM_USER).gr_gid
        for d in (self.spool, self.log_dir, self.tls_dir):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.spool, self.log_dir):
            shutil.chown(d, user=EXIM_USER, group=EXIM_USER)
        os.chown(self.tls_dir, 0, gid)
        os.chmod(self.tls_dir, 0o750)
        self.config.write_text(self._conf())
        for algorithm in ALGORITHMS:
            if self.chain_files[algorithm].exists():
                continue
            key = generate_key(algorithm)
            cert = self_signed(key, [self.hostname])
            if self.separate:
                write_group_file(self.key_files[algorithm], key_pem(key))
                write_group_file(self.chain_files[algorithm], cert_pem(cert))
            else:
                write_group_file(self.chain_files[algorithm], chain_file_bytes(key, [cert]))

    def start(self, timeout: float = 15.0) -> float:
        self._write()
        self.daemon = Daemon("exim", [EXIM, "-C", str(self.config), "-bdf",
                                      "-oX", f"{self.address}:{self.port}"],
                             self.workdir / "exim.out", cwd=self.workdir)
        self.daemon.start()
        try:
            waited: float = wait_for(self._up, timeout, f"Exim SMTP on {self.address}:25")
        except LabError:
            self.daemon.check_alive()
            self.stop()
            raise
        return waited

    def _up(self) -> bool:
        assert self.daemon is not None
        self.daemon.check_alive()
        return tcp_open(self.address, self.port)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def mainlog(self) -> str:
        path = self.log_dir / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> EximLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
