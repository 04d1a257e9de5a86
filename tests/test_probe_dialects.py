"""The probe's IMAP and POP3 dialogues against small scripted servers, for what a real Dovecot
does not easily show: no STARTTLS capability, a greeting that is not OK, STARTTLS/STLS refused,
silence. Every failure is one line in `error`, never an exception or a hang. (Real Dovecot, per
algorithm: tests/test_dovecot_lab.py.)"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from rollover.clock import SystemClock
from rollover.edges.probe import Dialect, dialect_for_port, probe_tls


@contextlib.contextmanager
def scripted(greeting: bytes, replies: dict[bytes, bytes]) -> Iterator[int]:
    """A one-connection server: sends `greeting`, then answers each command line whose start
    matches a key of `replies`. Yields its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            if greeting:
                conn.sendall(greeting)
            buf = b""
            while not done.is_set():
                try:
                    chunk = conn.recv(1024)
                except (TimeoutError, OSError):
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    for start, reply in replies.items():
                        if line.startswith(start):
                            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        done.set()
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        srv.close()
        thread.join(5)


@pytest.mark.parametrize(("dialect", "greeting", "replies", "wanted"), [
    ("imap", b"* OK ready\r\n",
     {b"r1 CAPABILITY": b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nr1 OK done\r\n"},
     "no STARTTLS: the IMAP server does not advertise STARTTLS"),
    ("imap", b"* BYE go away\r\n", {}, "IMAP greeting is not * OK"),
    ("imap", b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
     {b"r2 STARTTLS": b"* OK still here\r\nr2 NO not today\r\n"}, "STARTTLS refused: NO not today"),
    ("pop3", b"+OK POP3 ready\r\n", {b"STLS": b"-ERR no TLS here\r\n"}, "STLS refused: -ERR"),
    ("pop3", b"-ERR busy\r\n", {}, "POP3 greeting is not +OK"),
])
def test_dialogue_failures_are_one_line(dialect: Dialect, greeting: bytes,
                                        replies: dict[bytes, bytes], wanted: str) -> None:
    with scripted(greeting, replies) as port:
        probe = probe_tls("127.0.0.1", port, "ecdsa-p256", "imap.example.test", timeout=3,
                          dialect=dialect)
    assert probe.error is not None and wanted in probe.error, probe.error
    assert "\n" not in probe.error and not probe.chain


def test_a_silent_imap_server_times_out_in_time() -> None:
    clock = SystemClock()
    with scripted(b"", {}) as port:
        t0 = clock.monotonic()
        probe = probe_tls("127.0.0.1", port, "rsa2048", "imap.example.test", timeout=1,
                          dialect="imap")
        took = clock.monotonic() - t0
    assert probe.error == "timed out waiting for the IMAP greeting reply"
    assert took < 3


def test_ports_choose_the_dialogue() -> None:
    assert [dialect_for_port(p) for p in (25, 587, 143, 110, 465, 993, 995, 2525)] == \
        ["smtp", "smtp", "imap", "pop3", "implicit", "implicit", "implicit", "smtp"]
