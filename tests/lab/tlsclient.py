"""An independent look at what a server presents: `openssl s_client` (not rollover's probe),
forced to one key algorithm with TLS 1.2 cipher suites, STARTTLS per protocol or implicit TLS."""

from __future__ import annotations

import re
import subprocess

from cryptography import x509

from rollover.dane import tlsa

from lab.proc import LabError

CIPHERS = {"ecdsa-p256": "ECDHE-ECDSA-AES128-GCM-SHA256",
           "rsa2048": "ECDHE-RSA-AES128-GCM-SHA256"}
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def served_chain(address: str, port: int, algorithm: str, starttls: str | None,
                 host: str = "mail.example.test", timeout: float = 10.0) -> list[x509.Certificate]:
    """The chain `address:port` presents to a client offering only `algorithm`."""
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", "-servername", host,
            "-tls1_2", "-cipher", CIPHERS[algorithm], "-showcerts"]
    if starttls:
        argv += ["-starttls", starttls]
    proc = subprocess.run(argv, input=b"", capture_output=True, timeout=timeout)
    certs = _PEM.findall(proc.stdout)
    if not certs:
        tail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-1:]
        raise LabError(f"openssl s_client {address}:{port} {algorithm}: no certificate "
                       f"({tail[0] if tail else proc.returncode})")
    return [x509.load_pem_x509_certificate(c) for c in certs]


def served_spki(address: str, port: int, algorithm: str, starttls: str | None) -> str:
    """3 1 1 data (hex) of the leaf `address:port` presents for `algorithm`."""
    return tlsa.spki_sha256_hex(served_chain(address, port, algorithm, starttls)[0])


def dane_verifies(address: str, port: int, algorithm: str, starttls: str | None, host: str,
                  rdata: str) -> bool:
    """openssl's own DANE check of one TLSA record against what the server presents."""
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", "-tls1_2",
            "-cipher", CIPHERS[algorithm], "-dane_tlsa_domain", host,
            "-dane_tlsa_rrdata", rdata, "-verify_return_error", "-brief"]
    if starttls:
        argv += ["-starttls", starttls]
    proc = subprocess.run(argv, input=b"", capture_output=True, timeout=20)
    return proc.returncode == 0 and b"Verification: OK" in proc.stderr + proc.stdout
