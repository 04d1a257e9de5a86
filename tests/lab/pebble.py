"""Pebble (Debian's /usr/bin/pebble, 2.4) as the lab's ACME server.

Listens on https://{net}.14:14000/dir (management on :15000) with an HTTPS certificate from the lab
CA (`ca_bundle`), and validates DNS-01 against the DNS lab's primary (`-dnsserver`). Pebble makes a
new root and intermediate at every start: fetch them with roots()/intermediates().

Pebble 2.4 has no ARI (`renewalInfo`) and no profiles in its directory; it supports EAB
(`externalAccountMACKeys`), which `eab_keys` configures.
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lab.pki import LabCA
from lab.proc import Daemon, LabError, lab_net, wait_for

PEBBLE = "/usr/bin/pebble"


class PebbleLab:
    def __init__(self, dns_server: str, net: str | None = None, *,
                 eab_keys: dict[str, str] | None = None, port: int = 14000,
                 management_port: int = 15000, nonce_reject: int = 0) -> None:
        self.net = net or lab_net()
        self.address = f"{self.net}.14"
        self.port = port
        self.management_port = management_port
        self.dns_server = dns_server
        self.eab_keys = dict(eab_keys or {})
        self.nonce_reject = nonce_reject  # percentage of good nonces Pebble rejects as bad
        self.extra_env: dict[str, str] = {}  # e.g. PEBBLE_CHAIN_LENGTH
        self.directory_url = f"https://{self.address}:{port}/dir"
        self.management_url = f"https://{self.address}:{management_port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="rollover-pebble-"))
        self.log = self.workdir / "pebble.log"
        ca = LabCA(self.workdir / "pki", "rollover lab CA (Pebble HTTPS)")
        self.ca_bundle: Path = ca.ca_bundle
        self._cert, self._key = ca.issue_server("pebble", [self.address, "localhost",
                                                           "127.0.0.1"])
        self.config_path = self.workdir / "pebble-config.json"
        self._daemon: Daemon | None = None
        self._ssl = ssl.create_default_context(cafile=str(self.ca_bundle))

    # -- lifecycle ---------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        pebble: dict[str, Any] = {
            "listenAddress": f"{self.address}:{self.port}",
            "managementListenAddress": f"{self.address}:{self.management_port}",
            "certificate": str(self._cert),
            "privateKey": str(self._key),
            # http-01/tls-alpn-01 ports: never used by the lab (DNS-01 only), kept on loopback.
            "httpPort": 5002,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
        }
        if self.eab_keys:
            pebble["externalAccountMACKeys"] = self.eab_keys
        return {"pebble": pebble}

    def start(self, timeout: float = 15.0) -> float:
        """Start Pebble; return the seconds until its directory answered."""
        self.config_path.write_text(json.dumps(self._config(), indent=2))
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject),
               "PEBBLE_AUTHZREUSE": "0", **self.extra_env}
        self._daemon = Daemon("pebble", [PEBBLE, "-config", str(self.config_path),
                                         "-dnsserver", self.dns_server],
                              self.log, env=env, cwd=self.workdir)
        self._daemon.start()
        daemon = self._daemon

        def ready() -> bool:
            daemon.check_alive()
            return "newOrder" in self.directory()

        try:
            return wait_for(ready, timeout, f"Pebble directory at {self.directory_url}")
        except LabError:
            self.stop()
            raise

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PebbleLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        d = self._daemon
        return d.proc.pid if d is not None and d.proc is not None else None

    # -- HTTP --------------------------------------------------------------------------------

    def _get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, context=self._ssl, timeout=5) as resp:
            body: bytes = resp.read()
            return body

    def directory(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._get(self.directory_url))
        return data

    def _pems(self, kind: str) -> list[bytes]:
        """GET /{kind}/0, /{kind}/1, ... until Pebble says 404 (alternate roots)."""
        found: list[bytes] = []
        index = 0
        while True:
            try:
                found.append(self._get(f"{self.management_url}/{kind}/{index}"))
            except urllib.error.HTTPError as err:
                if err.code == 404 and found:
                    return found
                raise
            index += 1

    def roots(self) -> list[bytes]:
        """PEM of Pebble's root(s) of this run (index 0 is the one chains end at)."""
        return self._pems("roots")

    def intermediates(self) -> list[bytes]:
        return self._pems("intermediates")
