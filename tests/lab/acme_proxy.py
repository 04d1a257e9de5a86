"""A small HTTPS proxy in front of the lab's real Pebble that injects ACME faults.

Every request is forwarded with its Host header unchanged, so Pebble builds every URL it hands
out (directory, orders, JWS `url` checks) with the proxy's address: the client never talks to
Pebble directly. A test adds rules that answer instead of Pebble (a 429 with Retry-After) or
rewrite Pebble's JSON answer (an order that stays `processing`, a challenge token that is not
Pebble's, so the TXT record the client publishes is wrong). `stop()` closes the port (connection
refused); `hang = True` accepts connections and never answers (a CA that times out).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rollover.clock import SystemClock

from lab.pebble import PebbleLab

CLOCK = SystemClock()
HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}
# Pebble 2.4's paths
NEW_ORDER, FINALIZE, ORDER, AUTHZ = "/order-plz", "/finalize-order/", "/my-order/", "/authZ/"


@dataclass
class Refuse:
    """Answer POSTs to paths containing `path` with an ACME problem, `times` times."""

    path: str
    status: int = 429
    problem: str = "rateLimited"
    detail: str = "too many new orders (lab proxy)"
    retry_after: int | None = None
    times: int = 1


@dataclass
class Rewrite:
    """Change Pebble's JSON answer to requests on paths containing `path` (forever)."""

    path: str
    change: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Seen:
    at: float  # monotonic
    method: str
    path: str
    status: int


@dataclass
class _Rules:
    refuse: list[Refuse] = field(default_factory=list)
    rewrite: list[Rewrite] = field(default_factory=list)


class AcmeProxy:
    def __init__(self, pebble: PebbleLab, port: int) -> None:
        self.pebble = pebble
        self.address = pebble.address
        self.port = port
        self.directory_url = f"https://{self.address}:{port}/dir"
        self.ca_bundle = pebble.ca_bundle
        self.rules = _Rules()
        self.seen: list[Seen] = []
        self.hang = False
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._upstream = ssl.create_default_context(cafile=str(pebble.ca_bundle))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_POST = do_GET

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer((self.address, self.port), Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = self.pebble._cert, self.pebble._key
        ctx.load_cert_chain(str(cert), str(key))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._release.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port: the CA is down (connection refused) until start()."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> AcmeProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self, path: str, method: str = "POST") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if path in s.path and s.method == method]

    # -- one request -------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if self.hang:
            self._release.wait(60)  # never answer (until the proxy stops)
            h.close_connection = True
            return
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        refusal = self._refusal(h.command, h.path)
        if refusal is not None:
            problem = {"type": f"urn:ietf:params:acme:error:{refusal.problem}",
                       "detail": refusal.detail, "status": refusal.status}
            headers = {"Content-Type": "application/problem+json"}
            if refusal.retry_after is not None:
                headers["Retry-After"] = str(refusal.retry_after)
            self._answer(h, refusal.status, headers, json.dumps(problem).encode())
            return
        conn = http.client.HTTPSConnection(self.pebble.address, self.pebble.port,
                                           context=self._upstream, timeout=30)
        try:
            fwd = {k: v for k, v in h.headers.items() if k.lower() not in HOP}
            conn.request(h.command, h.path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            headers = {k: v for k, v in resp.getheaders() if k.lower() not in HOP}
            status = resp.status
        finally:
            conn.close()
        data = self._rewritten(h.path, data)
        self._answer(h, status, headers, data, method=h.command)

    def _refusal(self, method: str, path: str) -> Refuse | None:
        with self._lock:
            for rule in self.rules.refuse:
                if method == "POST" and rule.path in path and rule.times > 0:
                    rule.times -= 1
                    return rule
        return None

    def _rewritten(self, path: str, data: bytes) -> bytes:
        rules = [r for r in self.rules.rewrite if r.path in path]
        if not rules:
            return data
        try:
            doc = json.loads(data)
        except ValueError:
            return data
        for rule in rules:
            doc = rule.change(doc)
        return json.dumps(doc).encode()

    def _answer(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
                data: bytes, method: str = "POST") -> None:
        with self._lock:
            self.seen.append(Seen(CLOCK.monotonic(), h.command, h.path, status))
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)


# -- rewrites ------------------------------------------------------------------------------------


def stuck(status: str = "processing") -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An order that never leaves `status` (and never shows a certificate URL)."""

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("status") in ("ready", "processing", "valid"):
            doc["status"] = status
            doc.pop("certificate", None)
        return doc

    return change


def wrong_token(doc: dict[str, Any]) -> dict[str, Any]:
    """The client is told another token than Pebble checks: the TXT value it publishes is
    wrong, and Pebble's real validation against the DNS lab fails."""
    for ch in doc.get("challenges", ()):
        if ch.get("type") == "dns-01" and "token" in ch:
            ch["token"] = "x" + ch["token"][1:] if ch["token"][:1] != "x" else "y" + ch["token"][1:]
    return doc
