"""Dovecot installer (`type: dovecot`): IMAP/POP3 TLS for `_143._tcp` (STARTTLS), `_993._tcp`
(implicit TLS), `_110._tcp`, `_995._tcp`.

Dovecot takes two certificates at most, of different key types: `ssl_cert`/`ssl_key` and
`ssl_alt_cert`/`ssl_alt_key` (2.2.31+). One file per algorithm holds the key, then the chain, and
serves as both the cert and the key setting (Dovecot picks the PEM blocks it needs), so each
algorithm changes with one atomic rename; `key_name` + `chain_name` write separate files.
Dovecot's master reads the files as root: 0600 without a group. Then `doveadm reload` (Dovecot
serves the new files to the next connection at once).

    ssl_cert = </etc/dovecot/private/mail.example.nl.ecdsa-p256.pem
    ssl_key = </etc/dovecot/private/mail.example.nl.ecdsa-p256.pem
    ssl_alt_cert = </etc/dovecot/private/mail.example.nl.rsa2048.pem
    ssl_alt_key = </etc/dovecot/private/mail.example.nl.rsa2048.pem
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rollover.hooks.files import (
    DEFAULT_FILE_NAME,
    FILE_OPTIONS,
    SEPARATE_FILE_OPTIONS,
    FileInstaller,
    FileOptions,
    Runner,
    command_text,
    parse_file_options,
)
from rollover.hooks.pairs import KeyChainFiles
from rollover.model import Algorithm, SlotId

DEFAULT_RELOAD = ("doveadm", "reload")


def slot_problem(algorithms: Sequence[Algorithm]) -> str | None:
    """Why Dovecot cannot serve these algorithms at once (None: it can)."""
    if len(algorithms) > 2:
        return (f"Dovecot serves at most two certificates (ssl_cert and ssl_alt_cert), not "
                f"{len(algorithms)}")
    if len(algorithms) == 2 and algorithms[0].is_rsa == algorithms[1].is_rsa:
        return ("Dovecot's ssl_cert and ssl_alt_cert must be of different key types "
                "(one RSA, one ECDSA)")
    return None


@dataclasses.dataclass(frozen=True)
class DovecotOptions(FileOptions):
    """FileOptions that know what Dovecot can serve (checked per endpoint at config load)."""

    def slots_problem(self, algorithms: Sequence[Algorithm]) -> str | None:
        return slot_problem(algorithms)


class DovecotInstaller(KeyChainFiles, FileInstaller):
    """`type: dovecot`: directory, file_name or key_name + chain_name, file_mode (0600), group,
    reload_command (default `doveadm reload`)."""

    kind = "dovecot"
    OPTIONS = (*FILE_OPTIONS, *SEPARATE_FILE_OPTIONS, "reload_command")

    @classmethod
    def parse_options(cls, sec: Any, ctx: Any) -> DovecotOptions | None:
        opts = parse_file_options(sec, ctx.base, command_key="reload_command",
                                  default_command=DEFAULT_RELOAD, separate=True)
        return None if opts is None else DovecotOptions(**dataclasses.asdict(opts))

    @classmethod
    def from_config(cls, name: str, options: FileOptions) -> DovecotInstaller:
        return cls(options.directory, options.command or DEFAULT_RELOAD,
                   file_name=options.file_name, key_name=options.key_name,
                   chain_name=options.chain_name, file_mode=options.file_mode,
                   group=options.group)

    def __init__(
        self,
        directory: Path,
        reload_command: Sequence[str] = DEFAULT_RELOAD,
        file_name: str = DEFAULT_FILE_NAME,
        key_name: str | None = None,
        chain_name: str | None = None,
        file_mode: int = 0o600,
        group: str | None = None,
        run: Runner = subprocess.run,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(directory, file_mode=file_mode, group=group, run=run, timeout=timeout)
        self._set_names("dovecot", file_name, key_name, chain_name)
        self.reload_command = tuple(reload_command)

    def command_for(self, slot: SlotId) -> tuple[Sequence[str], Mapping[str, str] | None]:
        return self.reload_command, None

    def describe_command(self, slot: SlotId) -> str:
        return f"run {command_text(self.reload_command)}" if self.reload_command else \
            "no reload command"

    @classmethod
    def snippet(cls, options: FileOptions, slots: Sequence[SlotId]) -> str:
        """dovecot.conf lines (e.g. conf.d/10-ssl.conf) pointing Dovecot at rollover's files."""
        inst = cls.from_config("dovecot", options)
        lines = ["# Dovecot: TLS files managed by rollover (one per key algorithm)",
                 "ssl = required"]
        for slot, prefix in zip(slots, ("ssl", "ssl_alt"), strict=False):
            lines.append(f"{prefix}_cert = <{inst.chain_path(slot)}")
            lines.append(f"{prefix}_key = <{inst.key_path(slot)}")
        return "\n".join(lines) + "\n"
