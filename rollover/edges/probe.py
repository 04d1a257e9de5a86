"""Live TLS probe: which certificate chain does a mail server present, per key algorithm?

The dialogue before TLS follows the port (`dialect_for_port`): SMTP STARTTLS (25, 587 and any
port not listed), IMAP STARTTLS (143), POP3 STLS (110), or implicit TLS from the first byte
(465 submissions, 993 imaps, 995 pop3s).

Python 3.11's `ssl` cannot return the peer's chain, so the TLS side is pyOpenSSL. To see one
algorithm's certificate the client offers only that algorithm:

- TLS 1.2 (the default, `tls="1.2"`): only ECDHE-ECDSA or only (ECDHE-)RSA cipher suites, so the
  server must pick its ECDSA or its RSA certificate ("no shared cipher" on the server, a
  handshake-failure alert here, means it has none of that algorithm);
- TLS 1.3 (`tls="1.3"`): cipher suites do not name the key type there; the client instead sends
  only that algorithm's signature schemes (ECDSA+SHA256 / RSA-PSS ...). pyOpenSSL has no public
  call for this; OpenSSL's SSL_CTX_set1_sigalgs_list is reached through pyOpenSSL's cffi
  binding when it is there (`TLS13_AVAILABLE`), else `tls="1.3"` reports an error.

No certificate verification happens here (DANE matching does it), SNI is the MX host name,
addresses are IP literals only (nothing is ever resolved through the system resolver: LiveProber
resolves A/AAAA through the configured resolver addresses with dnspython).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dns.exception
import dns.resolver
from cryptography import x509
from OpenSSL import SSL

from rollover.config.load import EndpointConfig
from rollover.dane import tlsa
from rollover.fanout import parallel
from rollover.model import Algorithm, PresentedChain, SlotId

TlsVersion = Literal["1.2", "1.3"]
Dialect = Literal["smtp", "imap", "pop3", "implicit"]
# ports whose TLS does not start with SMTP's STARTTLS
_PORT_DIALECTS: dict[int, Dialect] = {143: "imap", 110: "pop3", 465: "implicit",
                                      993: "implicit", 995: "implicit"}
EHLO_NAME = "rollover.invalid"
MAX_REPLY = 64 * 1024


_CIPHERS_TLS12 = {
    "ecdsa": b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
             b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA",
    "rsa": b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:"
           b"DHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA",
}
_SIGALGS_TLS13 = {
    Algorithm.ECDSA_P256: b"ECDSA+SHA256",
    Algorithm.ECDSA_P384: b"ECDSA+SHA384",
    Algorithm.RSA2048: b"rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512",
    Algorithm.RSA3072: b"rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512",
    Algorithm.RSA4096: b"rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512",
}


def _sigalgs_setter() -> Callable[[Any, bytes], int] | None:
    try:
        from OpenSSL._util import lib
    except ImportError:  # pragma: no cover - pyOpenSSL without its cffi binding
        return None
    fn = getattr(lib, "SSL_CTX_set1_sigalgs_list", None)
    if fn is None or not getattr(lib, "Cryptography_HAS_SIGALGS", 0):
        return None  # pragma: no cover
    return fn  # type: ignore[no-any-return]


_SET_SIGALGS = _sigalgs_setter()
TLS13_AVAILABLE = _SET_SIGALGS is not None


class ProbeFailure(Exception):
    """Internal: one line saying why the probe of one address failed."""

    def __init__(self, message: str, nothing_served: bool = False) -> None:
        super().__init__(message)
        self.nothing_served = nothing_served


@dataclass(frozen=True)
class Probe:
    """One STARTTLS handshake: what an address presented for one algorithm."""

    address: str
    port: int
    algorithm: Algorithm
    chain: tuple[x509.Certificate, ...] = ()
    error: str | None = None
    protocol: str | None = None  # "TLSv1.2", "TLSv1.3"
    cipher: str | None = None
    nothing_served: bool = False  # see PresentedChain.nothing_served

    @property
    def presented(self) -> PresentedChain:
        return PresentedChain(self.address, self.chain, self.error, self.nothing_served)

    @property
    def label(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port} {self.algorithm.value}"


# --------------------------------------------------------------------------- SMTP


def _read_reply(sock: socket.socket, step: str) -> tuple[int, list[str]]:
    """One (multi-line) SMTP reply: its code and the text of every line."""
    buf = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            raise ProbeFailure(f"timed out waiting for the {step} reply") from None
        if not chunk:
            raise ProbeFailure(f"connection closed by the server before the {step} reply")
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise ProbeFailure(f"{step} reply longer than {MAX_REPLY} bytes")
        lines = buf.split(b"\r\n") if b"\r\n" in buf else buf.split(b"\n")
        complete = lines[:-1]
        for n, raw in enumerate(complete):
            if (len(raw) >= 4 and raw[3:4] == b" ") or len(raw) == 3:
                texts = [ln.decode("ascii", "replace") for ln in complete[: n + 1]]
                try:
                    code = int(texts[-1][:3])
                except ValueError:
                    raise ProbeFailure(f"{step}: not an SMTP reply: {texts[-1][:80]!r}") from None
                return code, [t[4:] for t in texts]


def _smtp_starttls(sock: socket.socket) -> None:
    code, lines = _read_reply(sock, "banner")
    if code != 220:
        raise ProbeFailure(f"SMTP banner {code} {(lines[-1] if lines else '')[:80]}".rstrip())
    sock.sendall(f"EHLO {EHLO_NAME}\r\n".encode("ascii"))
    code, lines = _read_reply(sock, "EHLO")
    if code != 250:
        raise ProbeFailure(f"EHLO refused: {code} {(lines[-1] if lines else '')[:80]}".rstrip())
    if not any(ln.split()[:1] == ["STARTTLS"] for ln in (x.upper() for x in lines[1:])):
        raise ProbeFailure("no STARTTLS: the server does not advertise STARTTLS after EHLO")
    sock.sendall(b"STARTTLS\r\n")
    code, lines = _read_reply(sock, "STARTTLS")
    if code != 220:
        raise ProbeFailure(
            f"STARTTLS refused: {code} {(lines[-1] if lines else '')[:80]}".rstrip()
        )


def _read_line(sock: socket.socket, step: str) -> str:
    """One CRLF line of an IMAP/POP3 dialogue."""
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = sock.recv(1)  # byte by byte: nothing after the line may be consumed
        except TimeoutError:
            raise ProbeFailure(f"timed out waiting for the {step} reply") from None
        if not chunk:
            raise ProbeFailure(f"connection closed by the server before the {step} reply")
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise ProbeFailure(f"{step} reply longer than {MAX_REPLY} bytes")
    return buf.decode("ascii", "replace").rstrip("\r\n")


def _imap_starttls(sock: socket.socket) -> None:
    greeting = _read_line(sock, "IMAP greeting")
    if not greeting.upper().startswith("* OK"):
        raise ProbeFailure(f"IMAP greeting is not * OK: {greeting[:80]!r}")
    # a capability list in the greeting saves a round trip; else ask for it
    caps = greeting.upper()
    if "[CAPABILITY" not in caps:
        sock.sendall(b"r1 CAPABILITY\r\n")
        while True:
            line = _read_line(sock, "CAPABILITY")
            if line.upper().startswith("* CAPABILITY"):
                caps = line.upper()
            elif line.startswith("r1 "):
                break
    if "STARTTLS" not in caps.replace("]", " ").split():
        raise ProbeFailure("no STARTTLS: the IMAP server does not advertise STARTTLS")
    sock.sendall(b"r2 STARTTLS\r\n")
    while True:
        line = _read_line(sock, "STARTTLS")
        if line.startswith("r2 "):
            break
    if not line.upper().startswith("R2 OK"):
        raise ProbeFailure(f"STARTTLS refused: {line[3:83]}")


def _pop3_stls(sock: socket.socket) -> None:
    greeting = _read_line(sock, "POP3 greeting")
    if not greeting.startswith("+OK"):
        raise ProbeFailure(f"POP3 greeting is not +OK: {greeting[:80]!r}")
    sock.sendall(b"STLS\r\n")
    line = _read_line(sock, "STLS")
    if not line.startswith("+OK"):
        raise ProbeFailure(f"STLS refused: {line[:80]}")


def dialect_for_port(port: int) -> Dialect:
    """How TLS starts on `port`: SMTP STARTTLS unless the port is a known IMAP/POP3/implicit
    one."""
    return _PORT_DIALECTS.get(port, "smtp")


_STARTTLS: dict[Dialect, Callable[[socket.socket], None] | None] = {
    "smtp": _smtp_starttls, "imap": _imap_starttls, "pop3": _pop3_stls, "implicit": None,
}


# --------------------------------------------------------------------------- TLS


def _context(algorithm: Algorithm, tls: TlsVersion) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *_: True)
    if tls == "1.2":
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_cipher_list(_CIPHERS_TLS12["rsa" if algorithm.is_rsa else "ecdsa"])
    else:
        if _SET_SIGALGS is None:
            raise ProbeFailure("TLS 1.3 probing needs SSL_CTX_set1_sigalgs_list, which this "
                               "pyOpenSSL does not expose; use TLS 1.2")
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
        if _SET_SIGALGS(ctx._context, _SIGALGS_TLS13[algorithm]) != 1:
            raise ProbeFailure(f"OpenSSL refused the TLS 1.3 signature algorithms for "
                               f"{algorithm.value}")
    return ctx


def _ssl_reason(err: SSL.Error) -> str:
    if isinstance(err, SSL.SysCallError):
        code = err.args[0] if err.args else None
        if code == -1 or not err.args:
            return "connection closed during the TLS handshake"
        return f"connection error during the TLS handshake: {err.args[-1]}"
    reasons: list[str] = []
    for item in err.args[0] if err.args and isinstance(err.args[0], list) else []:
        if isinstance(item, tuple) and item:
            reasons.append(str(item[-1]))
    return ", ".join(reasons) or (str(err) or err.__class__.__name__)


def _handshake_failure(err: SSL.Error, algorithm: Algorithm, tls: TlsVersion) -> str:
    reason = _ssl_reason(err)
    if "handshake failure" in reason or "no shared cipher" in reason:
        # the server's own alert: it is up and has nothing of this algorithm to present
        raise ProbeFailure(f"TLS {tls} handshake failed: {reason} (no shared cipher: the "
                           f"server has no {algorithm.value} certificate, or none it will use)",
                           nothing_served=True)
    if "protocol version" in reason or "unsupported protocol" in reason:
        return f"TLS {tls} handshake failed: {reason} (the server does not speak TLS {tls})"
    return f"TLS {tls} handshake failed: {reason}"


def _set_os_timeouts(sock: socket.socket, timeout: float) -> None:
    """pyOpenSSL wants a blocking socket; SO_RCVTIMEO/SO_SNDTIMEO bound every read and write."""
    sock.setblocking(True)
    secs = int(timeout)
    usecs = int((timeout - secs) * 1_000_000)
    tv = secs.to_bytes(8, "little", signed=True) + usecs.to_bytes(8, "little", signed=True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _tls(sock: socket.socket, algorithm: Algorithm, host: str, tls: TlsVersion,
         timeout: float) -> tuple[tuple[x509.Certificate, ...], str | None, str | None]:
    ctx = _context(algorithm, tls)
    conn = SSL.Connection(ctx, sock)
    with contextlib.suppress(SSL.Error, UnicodeError, ValueError):
        conn.set_tlsext_host_name(host.rstrip(".").encode("idna"))
    conn.set_connect_state()
    _set_os_timeouts(sock, timeout)
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        raise ProbeFailure(f"timed out after {timeout:g} s in the TLS handshake") from None
    except SSL.Error as err:
        raise ProbeFailure(_handshake_failure(err, algorithm, tls)) from None
    # as_cryptography=True (pyOpenSSL >= 24.3) is not in the types-pyOpenSSL stubs yet
    get_chain = conn.get_peer_cert_chain
    peer: list[x509.Certificate] | None = get_chain(  # type: ignore[call-arg,assignment]
        as_cryptography=True
    )
    chain = tuple(peer or ())
    protocol = conn.get_protocol_version_name()
    cipher = conn.get_cipher_name()
    with contextlib.suppress(SSL.Error, OSError):
        conn.shutdown()
    return chain, protocol, cipher


def _family(algorithm: Algorithm | None) -> str | None:
    if algorithm is None:
        return None
    return "rsa" if algorithm.is_rsa else "ecdsa"


def probe_tls(address: str, port: int, algorithm: Algorithm | str, host: str,
              timeout: float = 10.0, tls: TlsVersion = "1.2",
              dialect: Dialect | None = None) -> Probe:
    """TLS to `address` (an IPv4 or IPv6 literal; STARTTLS first unless the port, or `dialect`,
    says implicit TLS) and return what it presents when the client offers only `algorithm`.
    Never raises for network or TLS trouble: `error` says why."""
    alg = Algorithm(algorithm)
    starttls = _STARTTLS[dialect or dialect_for_port(port)]
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return Probe(address, port, alg, error=f"{address!r} is not an IP address")
    addr = str(ip)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect((addr, port))
        except ConnectionRefusedError:
            raise ProbeFailure("connection refused (nothing listens)", nothing_served=True) \
                from None
        except TimeoutError:
            raise ProbeFailure(f"connect timed out after {timeout:g} s") from None
        except OSError as exc:
            raise ProbeFailure(f"cannot connect: {exc.strerror or exc}") from None
        try:
            if starttls is not None:
                starttls(sock)
        except OSError as exc:
            what = (dialect or dialect_for_port(port)).upper()
            raise ProbeFailure(f"{what} dialogue failed: {exc.strerror or exc}") from None
        chain, protocol, cipher = _tls(sock, alg, host, tls, timeout)
    except ProbeFailure as failure:
        return Probe(addr, port, alg, error=str(failure), nothing_served=failure.nothing_served)
    finally:
        sock.close()
    if not chain:
        return Probe(addr, port, alg, error="the server sent no certificate",
                     protocol=protocol, cipher=cipher)
    got = tlsa.algorithm_of(chain[0])
    error = None
    if _family(got) != _family(alg):
        error = (f"asked for {alg.value}, the server presented a "
                 f"{got.value if got else 'different'} certificate")
    return Probe(addr, port, alg, chain, error, protocol, cipher)


def probe_chain(address: str, port: int, algorithm: Algorithm | str, host: str,
                timeout: float = 10.0, tls: TlsVersion = "1.2",
                dialect: Dialect | None = None) -> PresentedChain:
    """The engine's view of `probe_tls`: address, chain (leaf first) and error."""
    return probe_tls(address, port, algorithm, host, timeout, tls, dialect).presented


# --------------------------------------------------------------------------- addresses


class ResolveError(Exception):
    pass


def resolve_addresses(host: str, resolvers: Sequence[str], *, port: int = 53,
                      timeout: float = 5.0) -> list[str]:
    """All A and AAAA addresses of `host`, asked of `resolvers` only (never the system's).
    Raises ResolveError (one line) when a lookup fails; an empty list when there are none."""
    if not resolvers:
        raise ResolveError(f"no resolver address to look up {host}")
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = list(resolvers)
    res.port = port
    res.lifetime = timeout
    res.timeout = timeout
    name = host if host.endswith(".") else host + "."

    def lookup(rtype: str) -> list[str] | str:
        try:
            answer = res.resolve(name, rtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.Timeout:
            return f"{rtype} {host}: no answer from {', '.join(resolvers)} within {timeout:g} s"
        except dns.exception.DNSException as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            return f"{rtype} {host}: {first}"
        return [rd.to_text() for rd in answer.rrset] if answer.rrset is not None else []

    results = parallel(lookup, ["A", "AAAA"])
    errors = [r for r in results if isinstance(r, str)]
    if errors:
        raise ResolveError("cannot resolve " + "; ".join(errors))
    return [a for r in results if isinstance(r, list) for a in r]


class LiveProber:
    """engine.Prober: STARTTLS to every address of an endpoint for one slot, in parallel."""

    def __init__(self, resolvers: Sequence[str], *, dns_port: int = 53, dns_timeout: float = 5.0,
                 timeout: float = 10.0, tls: TlsVersion = "1.2") -> None:
        self.resolvers = tuple(resolvers)
        self.dns_port = dns_port
        self.dns_timeout = dns_timeout
        self.timeout = timeout
        self.tls = tls

    def addresses(self, endpoint: EndpointConfig) -> list[str]:
        if endpoint.addresses:
            return list(endpoint.addresses)
        return resolve_addresses(endpoint.host, self.resolvers, port=self.dns_port,
                                 timeout=self.dns_timeout)

    def probe(self, endpoint: EndpointConfig, slot: SlotId) -> list[PresentedChain]:
        try:
            addresses = self.addresses(endpoint)
        except ResolveError as exc:
            return [PresentedChain(endpoint.host, (), str(exc))]
        return parallel(
            lambda a: probe_chain(a, endpoint.port, slot.algorithm, endpoint.host,
                                  self.timeout, self.tls),
            addresses,
        )
