"""Postfix as the lab's MTA: its own config dir, queue and data dirs in a temp dir, listening
only on {net}.25:25 with STARTTLS from one chain file per algorithm (`smtpd_tls_chain_files`: key
then chain, 0600), self-signed at first. No DNS lookups, no chroot, every outbound transport is
`error:`.

`postfix start` daemonises the master; stop() runs `postfix -c DIR stop` and then makes sure the
master whose pid this instance recorded is gone. Nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from rollover.clock import SystemClock

from lab.pki import ALGORITHMS, chain_file_bytes, generate_key, self_signed, write_private
from lab.proc import LabError, LoopbackAddresses, lab_net, tcp_open, wait_for

POSTFIX = "/usr/sbin/postfix"
HOSTNAME = "mail.example.test"

# TLS 1.2 cipher lists that force the server to use one certificate (one key algorithm).
_CIPHERS = {
    "ecdsa-p256": b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
    "rsa2048": b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:AES128-GCM-SHA256",
}

_SERVICES = """\
{listen} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixLab:
    def __init__(self, net: str | None = None, hostname: str = HOSTNAME) -> None:
        self.net = net or lab_net()
        self.address = f"{self.net}.25"
        self.port = 25
        self.hostname = hostname
        self.workdir = Path(tempfile.mkdtemp(prefix="rollover-postfix-"))
        os.chmod(self.workdir, 0o755)  # unprivileged postfix daemons traverse into the queue
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.tls_dir = self.workdir / "tls"
        self.maillog = self.workdir / "maillog"
        self.chain_files: dict[str, Path] = {a: self.tls_dir / f"{a}.pem" for a in ALGORITHMS}
        self.serving: tuple[str, ...] = ALGORITHMS  # the chain files main.cf lists
        self.reload_command = [POSTFIX, "-c", str(self.config_dir), "reload"]
        self._addresses = LoopbackAddresses()
        self._master_pid: int | None = None

    # -- files -------------------------------------------------------------------------------

    def _main_cf(self) -> str:
        error = "error:outbound mail disabled in the rollover lab"
        chain = " ".join(str(self.chain_files[a]) for a in self.serving)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": "example.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": self.address,
            "inet_protocols": "ipv4",
            "smtpd_banner": "$myhostname ESMTP rollover-lab",
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "relay_domains": "",
            "default_transport": error,
            "relay_transport": error,
            "local_transport": error,
            "virtual_transport": error,
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.workdir),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_chain_files": chain,
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_received_header": "no",
            "smtp_tls_security_level": "none",
        }
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    def _write_config(self) -> None:
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.tls_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tls_dir, 0o700)
        shutil.chown(self.data_dir, user="postfix")  # master.lock, caches: written as postfix
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(
            _SERVICES.format(listen=f"{self.address}:{self.port}"))
        # Postfix commands wait ~2 s when main.cf changed less than 2 s ago (mtime race guard):
        # date the fresh files back so start/check do not pay that wait.
        past = SystemClock().now().timestamp() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (past, past))
        for algorithm in ALGORITHMS:
            if not self.chain_files[algorithm].exists():
                key = generate_key(algorithm)
                cert = self_signed(key, [self.hostname])
                write_private(self.chain_files[algorithm], chain_file_bytes(key, [cert]))

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([POSTFIX, "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise LabError(f"postfix {' '.join(args)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
        return proc

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> float:
        """Write config, add the address, `postfix check` + `start`; return seconds until the
        SMTP port answered."""
        self._write_config()
        self._addresses.ensure(self.address)
        try:
            self._postfix("check")
            self._postfix("start")
            waited: float = wait_for(lambda: tcp_open(self.address, self.port), timeout,
                              f"Postfix SMTP on {self.address}:{self.port}")
            self._master_pid = self._read_master_pid()
        except BaseException:
            self.stop()
            raise
        return waited

    def _read_master_pid(self) -> int | None:
        pidfile = self.queue_dir / "pid" / "master.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        pid = self._master_pid or self._read_master_pid()
        self._postfix("stop", check=False)
        if pid is not None:
            try:
                wait_for(lambda: not _alive(pid), timeout, f"Postfix master {pid} to exit")
            except LabError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._master_pid = None
        self._addresses.remove_all()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def reload(self) -> None:
        proc = subprocess.run(self.reload_command, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise LabError(f"postfix reload failed: {(proc.stderr or proc.stdout).strip()}")

    def serve(self, algorithms: tuple[str, ...], timeout: float = 15.0) -> None:
        """List only `algorithms`' chain files in main.cf (as an operator whose Postfix has one
        certificate per configured algorithm), reload, and wait until the server presents a
        key for exactly those algorithms."""
        algorithms = tuple(a for a in ALGORITHMS if a in algorithms)
        if algorithms == self.serving:
            return
        self.serving = algorithms
        (self.config_dir / "main.cf").write_text(self._main_cf())
        past = SystemClock().now().timestamp() - 10  # no mtime-race wait (see _write_config)
        os.utime(self.config_dir / "main.cf", (past, past))
        self._postfix("reload")

        last: dict[str, str] = {}

        def presents(alg: str) -> bool:
            try:
                return bool(self.served_chain(alg, timeout=2.0))
            except LabError as exc:
                last[alg] = str(exc)
                return False

        # a slow poll: each look is an SMTP session, and a flood of them exhausts smtpd
        try:
            wait_for(lambda: all(presents(a) == (a in algorithms) for a in ALGORITHMS),
                     timeout, f"Postfix to serve exactly {', '.join(algorithms)}",
                     interval=0.3)
        except LabError as exc:
            raise LabError(f"{exc} ({'; '.join(last.values())})") from None

    def __enter__(self) -> PostfixLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def master_pid(self) -> int | None:
        return self._master_pid

    def process_ids(self) -> list[int]:
        """The master and its children (for RSS measurements)."""
        if self._master_pid is None:
            return []
        pids = [self._master_pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self._master_pid:
                    pids.append(int(entry.name))
        return pids

    # -- TLS probe ---------------------------------------------------------------------------

    def install_chain(self, algorithm: str, data: bytes) -> None:
        """Replace one chain file (key then chain) atomically, 0600. Does not reload."""
        write_private(self.chain_files[algorithm], data)

    def served_chain(self, algorithm: str, timeout: float = 5.0) -> list[bytes]:
        """DER certificates Postfix presents via STARTTLS when the client only offers
        `algorithm`'s TLS 1.2 cipher suites."""
        return served_chain(self.address, self.port, algorithm, timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _smtp_reply(sock: socket.socket) -> str:
    """Read one (multi-line) SMTP reply; return its last line."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise LabError("SMTP server closed the connection")
        buf += chunk
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return line.decode("ascii", "replace")


def served_chain(address: str, port: int, algorithm: str, timeout: float = 5.0) -> list[bytes]:
    ciphers = _CIPHERS[algorithm]
    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        for command, expect in ((None, "220"), (b"EHLO lab.example.test\r\n", "250"),
                                (b"STARTTLS\r\n", "220")):
            if command is not None:
                sock.sendall(command)
            line = _smtp_reply(sock)
            if not line.startswith(expect):
                raise LabError(f"SMTP {address}:{port}: expected {expect}, got {line!r}")
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_cipher_list(ciphers)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *_: True)
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(HOSTNAME.encode())
        conn.set_connect_state()
        sock.setblocking(True)  # pyOpenSSL wants a blocking socket; SO_RCVTIMEO bounds reads
        secs = int(timeout)
        usecs = int((timeout - secs) * 1_000_000)
        tv = secs.to_bytes(8, "little") + usecs.to_bytes(8, "little")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        try:
            conn.do_handshake()
        except SSL.Error as err:
            raise LabError(f"STARTTLS {algorithm} handshake with {address}:{port} failed: "
                           f"{err}") from err
        peer: Any = conn  # the installed stubs predate `as_cryptography`
        chain: list[x509.Certificate] = peer.get_peer_cert_chain(as_cryptography=True) or []
        with contextlib.suppress(SSL.Error):
            conn.shutdown()
        return [c.public_bytes(serialization.Encoding.DER) for c in chain]
    finally:
        sock.close()


def leaf(chain: list[bytes]) -> x509.Certificate:
    return x509.load_der_x509_certificate(chain[0])
