"""Child-process and loopback-address plumbing shared by every lab server.

Daemons run in the foreground as plain children of the test process (no systemd), each in its
own process group so a stop kills exactly what the lab started and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from rollover.clock import SystemClock

_clock = SystemClock()  # the lab polls with deadlines; only the clock module sleeps


class LabError(RuntimeError):
    pass


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> float:
    """Poll `predicate` until true; return seconds waited. Raise LabError naming `what`."""
    start = _clock.monotonic()
    deadline = start + timeout
    while True:
        try:
            if predicate():
                return _clock.monotonic() - start
        except Exception:  # a server still starting may refuse or reset
            pass
        if _clock.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.1f}s waiting for {what}")
        _clock.sleep(interval)


def tcp_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Daemon:
    """One foreground daemon; output goes to a log file in the lab directory."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        full_env = dict(os.environ)
        if self.env:
            full_env.update(self.env)
        self.proc = subprocess.Popen(
            self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=self.cwd, start_new_session=True,
        )
        logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise LabError(f"{self.name} exited early; log tail:\n{tail}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)  # a stopped daemon cannot die on TERM
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None


class LoopbackAddresses:
    """Adds 127.x addresses to `lo` (BIND and Postfix only bind configured addresses) and
    removes exactly the ones it added."""

    def __init__(self) -> None:
        self.added: list[str] = []

    def ensure(self, address: str) -> None:
        shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                               text=True, check=True).stdout
        if f" {address}/" in shown:
            return
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True,
                       capture_output=True)
        self.added.append(address)

    def remove_all(self) -> None:
        while self.added:
            address = self.added.pop()
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"],
                           capture_output=True)


def lab_net() -> str:
    """First three octets of the lab's addresses (ROLLOVER_LAB_NET, default 127.0.0)."""
    return os.environ.get("ROLLOVER_LAB_NET", "127.0.0")
