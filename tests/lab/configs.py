"""rollover configuration files pointing at the lab (used by tests and the README demo)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from lab.dns import DnsLab
from lab.pebble import PebbleLab
from lab.postfix import PostfixLab


def write_config(directory: Path, dns_lab: DnsLab, host: str = "mail.example.test", *,
                 algorithms: tuple[str, ...] = ("ecdsa-p256",), ttl: int | None = None,
                 tsig_secret_file: Path | None = None, extra_nameservers: tuple[str, ...] = (),
                 endpoint: dict[str, Any] | None = None, top: dict[str, Any] | None = None,
                 policy: dict[str, Any] | None = None) -> Path:
    """Write DIR/rollover.yaml for one endpoint in the lab zone; state under DIR/state."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ep: dict[str, Any] = {
        "host": host,
        "zone": "example.test",
        "provider": "lab",
        "algorithms": list(algorithms),
        "ttl": ttl if ttl is not None else dns_lab.ttl,
        "policy": {"retire_grace": "2s", **(policy or {})},
    }
    if extra_nameservers:
        ep["extra_nameservers"] = list(extra_nameservers)
    ep.update(endpoint or {})
    doc: dict[str, Any] = {
        "state_dir": str(directory / "state"),
        "resolver": [dns_lab.primary.address],
        "dns": {"timeout": 1.0},
        "providers": {
            "lab": {
                "type": "rfc2136",
                "server": dns_lab.primary.address,
                "tsig_key_name": dns_lab.tsig_name,
                "tsig_algorithm": dns_lab.tsig_algorithm,
                "tsig_secret_file": str(tsig_secret_file or dns_lab.tsig_secret_file),
            }
        },
        "endpoints": [ep],
    }
    doc.update(top or {})
    path = directory / "rollover.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_full_config(directory: Path, dns_lab: DnsLab, pebble: PebbleLab, postfix: PostfixLab,
                      host: str, *, algorithms: tuple[str, ...] = ("ecdsa-p256",),
                      policy: dict[str, Any] | None = None,
                      reload_command: list[str] | None = None) -> Path:
    """A config managing `host` end to end: records in the lab zone, certificates from Pebble,
    installed into the lab Postfix's chain files (one per algorithm) and reloaded. The lab
    Postfix is made to serve exactly `algorithms` (a key of another family would block the
    bootstrap: its clients would match none of the records)."""
    postfix.serve(algorithms)
    return write_config(
        directory, dns_lab, host, algorithms=algorithms, policy=policy,
        endpoint={"certificate": {"source": "acme"}, "installer": "postfix"},
        top={
            "acme": {"directory": pebble.directory_url, "email": "hostmaster@example.test",
                     "ca_bundle": str(pebble.ca_bundle)},
            "installers": {"postfix": {
                "type": "postfix", "directory": str(postfix.tls_dir),
                "file_name": "{algorithm}.pem",
                "reload_command": reload_command or list(postfix.reload_command)}},
        })
