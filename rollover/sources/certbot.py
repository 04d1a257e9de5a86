"""`source: certbot`: the certificate and key of a certbot lineage, read, never written.

    certificate:
      source: certbot
      lineage: /etc/letsencrypt/live/mail.example.nl     # or just: mail.example.nl
      # certbot_config_dir: /srv/certbot                  # certbot --config-dir, if not default
    certificate:                                          # an endpoint with two algorithms:
      source: certbot                                     # one lineage per key type
      lineage: {ecdsa-p256: mx-ecdsa, rsa2048: mx-rsa}

certbot keeps every version in archive/NAME/{fullchain,privkey}N.pem and points live/NAME/*.pem
at the newest one, relinking one file after the other. A snapshot is taken by reading each live
link once, requiring fullchain and privkey to name the same version N, and reading those archive
files (which certbot never changes once the links point at them); links caught half updated are
"in flux" and looked at again later. With --reuse-key privkeyN.pem is itself a link to the
older key file: reading follows it.

certbot decides the key (`EXTERNAL`): a renewal with the same key goes in without a TLSA
change; a new key's 3 1 1 is published first (current+next: installed once omnipresent for
2 x TTL; current+issuer: covered by the omnipresent 2 1 1). The MTA reads rollover's installed
files, never live/ (certbot would otherwise bring a new key into service before DNS is ready).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from rollover.clock import Clock, SystemClock
from rollover.config.check import Section
from rollover.config.registry import ParseContext, SourceEnv
from rollover.edges.protocols import IssuedCert
from rollover.model import Algorithm, SlotId
from rollover.sources import CertSourceError, ExternalCert, NoCertYet
from rollover.sources.files import CertFiles, FilesSource

DEFAULT_CONFIG_DIR = Path("/etc/letsencrypt")


@dataclass(frozen=True)
class CertbotOptions:
    lineages: Mapping[Algorithm, Path] = field(  # live/NAME directories
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    config_dir: Path = DEFAULT_CONFIG_DIR

    def describe(self) -> str:
        return "from certbot lineage " + ", ".join(str(p) for p in self.lineages.values())

    def key_paths(self) -> tuple[Path, ...]:
        return tuple(p / "privkey.pem" for p in self.lineages.values())

    def serves(self, lineage: str) -> bool:
        """Whether `lineage` (certbot's RENEWED_LINEAGE) is one of ours."""
        wanted = {os.path.normpath(lineage), os.path.realpath(lineage)}
        return any({os.path.normpath(p), os.path.realpath(p)} & wanted
                   for p in self.lineages.values())


class CertbotSource:
    OPTIONS = ("lineage", "certbot_config_dir")
    REQUIRES_RTYPES: tuple[str, ...] = ()
    EXTERNAL = "certbot"  # certbot decides the key and when to renew

    @classmethod
    def parse_options(cls, sec: Section, ctx: ParseContext) -> CertbotOptions | None:
        given = sec.get_path("certbot_config_dir", ctx.base)
        config_dir = given or DEFAULT_CONFIG_DIR
        node = sec.value_node("lineage")
        if node is None:
            sec.missing("lineage")
            return None
        lineages: dict[Algorithm, Path] = {}
        if isinstance(node, yaml.MappingNode):
            lsec = sec.section("lineage", [a.value for a in ctx.algorithms])
            if lsec is None:
                return None
            for alg in ctx.algorithms:
                if not lsec.has(alg.value):
                    lsec.missing(alg.value)
                    continue
                path = _lineage(lsec, alg.value, ctx.base, config_dir, given is not None)
                if path is not None and path in lineages.values():
                    lsec.bad(alg.value, f"{path} is also the lineage of another algorithm "
                             "(certbot makes one key type per lineage)")
                elif path is not None:
                    lineages[alg] = path
        elif len(ctx.algorithms) != 1:
            names = ", ".join(f"{a.value}: NAME" for a in ctx.algorithms)
            sec.bad("lineage", f"the endpoint has {len(ctx.algorithms)} algorithms and certbot "
                    f"makes one key type per lineage: give one each ({{{names}}})")
            return None
        else:
            path = _lineage(sec, "lineage", ctx.base, config_dir, given is not None)
            if path is None:
                return None
            lineages[ctx.algorithms[0]] = path
        if len(lineages) != len(ctx.algorithms):
            return None
        return CertbotOptions(MappingProxyType(lineages), config_dir)

    @classmethod
    def from_config(cls, options: CertbotOptions, env: SourceEnv) -> CertbotSource:
        return cls(options, env.clock)

    def __init__(self, options: CertbotOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.clock = clock or SystemClock()

    def describe(self) -> str:
        return self.options.describe()

    def latest(self, slot: SlotId) -> ExternalCert:
        """The lineage's current version, checked (see rollover.sources.files)."""
        live = self.options.lineages.get(slot.algorithm)
        if live is None:
            raise CertSourceError(f"{slot}: no certbot lineage configured for "
                                  f"{slot.algorithm.value}")
        if not live.is_dir():
            raise NoCertYet(f"{live} does not exist (certbot certonly has not run for it)")
        chain, chain_v = _version(live, "fullchain")
        key, key_v = _version(live, "privkey")
        if chain_v != key_v:
            raise CertSourceError(f"certbot is updating {live} right now (fullchain.pem is "
                                  f"version {chain_v}, privkey.pem version {key_v}); "
                                  "looking again later")
        snap = FilesSource({slot.algorithm: CertFiles(chain, key)}, self.clock).latest(slot)
        if _version(live, "fullchain")[1] != chain_v:  # relinked while reading: fine, but new
            raise CertSourceError(f"certbot renewed {live} while it was read; looking again "
                                  "later")
        return snap

    def order(self, endpoint: Any, slot: SlotId, key_pem: bytes) -> IssuedCert:
        raise CertSourceError(f"{slot}: certbot decides the key; rollover cannot order a "
                              "certificate from it (run certbot renew)")

    def renewal(self, chain_pem: bytes) -> tuple[datetime | None, datetime | None]:
        return None, None  # certbot decides when to renew


_ARCHIVE_NAME = re.compile(r"^(fullchain|privkey)([0-9]{1,9})\.pem$")


def _version(live: Path, kind: str) -> tuple[Path, int]:
    """live/NAME/KIND.pem -> (archive/NAME/KINDn.pem, n), reading the link once."""
    link = live / f"{kind}.pem"
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        # certbot unlinks and relinks each file: missing for a moment during a renewal
        raise CertSourceError(f"{link} is missing (certbot is updating {live}, or it is not a "
                              "lineage); looking again later") from None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise CertSourceError(f"{link} is not a symlink: {live} is not a certbot "
                                  "lineage") from None
        raise CertSourceError(f"cannot read {link}: {exc.strerror}") from None
    path = Path(os.path.normpath(live / target))
    found = _ARCHIVE_NAME.match(path.name)
    if found is None or found.group(1) != kind:
        raise CertSourceError(f"{link} points at {path}, not at a certbot archive version "
                              f"({kind}N.pem)")
    return path, int(found.group(2))


def _lineage(sec: Section, key: str, base: Path, config_dir: Path,
             config_dir_given: bool) -> Path | None:
    """A lineage: a live/NAME directory, or NAME under certbot_config_dir/live. Not checked
    for existence: certbot may not have issued it yet."""
    node, value = sec.scalar(key, required=True)
    if node is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        sec.wrong(key, node, value, "a certbot lineage (live/NAME directory, or NAME)")
        return None
    value = value.strip().rstrip("/")
    path = Path(os.path.normpath(base / value)) if "/" in value else config_dir / "live" / value
    if path.parent.name != "live":
        sec.bad(key, f"{path} is not a certbot lineage (CONFIG_DIR/live/NAME)")
        return None
    if config_dir_given and path.parent != config_dir / "live":
        sec.bad(key, f"{path} is not under certbot_config_dir {config_dir}/live")
        return None
    return path
