"""A tiny SMTP server for probe tests: a thread on a loopback address that speaks just enough
SMTP (banner, EHLO, optionally STARTTLS with one pyOpenSSL certificate) to exercise what real
Postfix cannot easily show: no STARTTLS, a refusing banner, silence, a server with only an
ECDSA certificate."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL


class SmtpStub:
    def __init__(self, address: str = "127.0.0.1", *, banner: str = "220 stub ESMTP",
                 starttls: bool = False, chain: list[x509.Certificate] | None = None,
                 key: PrivateKeyTypes | None = None, silent: bool = False) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.address = address
        self.port: int = self.sock.getsockname()[1]
        self.banner = banner
        self.starttls = starttls
        self.chain = chain or []
        self.key = key
        self.silent = silent
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SmtpStub:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                if self.silent:
                    conn.recv(1)  # until the client gives up
                    return
                conn.sendall(self.banner.encode() + b"\r\n")
                if not self.banner.startswith("220"):
                    return
                buf = b""
                while True:
                    while b"\r\n" not in buf:
                        chunk = conn.recv(1024)
                        if not chunk:
                            return
                        buf += chunk
                    line, buf = buf.split(b"\r\n", 1)
                    cmd = line.upper()
                    if cmd.startswith(b"EHLO"):
                        ext = b"250-STARTTLS\r\n" if self.starttls else b""
                        conn.sendall(b"250-stub\r\n" + ext + b"250 8BITMIME\r\n")
                    elif cmd == b"STARTTLS" and self.starttls:
                        conn.sendall(b"220 go ahead\r\n")
                        self._tls(conn)
                        return
                    elif cmd == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"502 not here\r\n")
            except (OSError, SSL.Error):
                return

    def _tls(self, conn: socket.socket) -> None:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        if self.key is not None and self.chain:
            ctx.use_privatekey(self.key)  # type: ignore[arg-type]
            ctx.use_certificate(self.chain[0])  # type: ignore[arg-type]
            for extra in self.chain[1:]:
                ctx.add_extra_chain_cert(extra)  # type: ignore[arg-type]
        tls = SSL.Connection(ctx, conn)
        tls.set_accept_state()
        conn.settimeout(None)
        tls.do_handshake()
        self.handshakes += 1
        with contextlib.suppress(SSL.Error, OSError):
            tls.shutdown()
