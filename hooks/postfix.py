"""Postfix installer: one file per slot holding the private key, then the full chain, the format
of `smtpd_tls_chain_files` (list one file per algorithm there); written atomically, 0600; then
`postfix reload`. On a failed reload the previous file is put back and Postfix reloaded again.

    smtpd_tls_chain_files = /etc/postfix/tls/mail.example.nl.ecdsa-p256.pem,
                            /etc/postfix/tls/mail.example.nl.rsa2048.pem
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rollover.hooks.files import (
    DEFAULT_FILE_NAME,
    FILE_OPTIONS,
    FileInstaller,
    FileOptions,
    Runner,
    file_name_for,
    parse_file_options,
)
from rollover.model import SlotId

DEFAULT_RELOAD = ("postfix", "reload")


def chain_file_bytes(key_pem: bytes, chain_pem: bytes) -> bytes:
    """Key then chain, each ending in a newline."""
    key = key_pem if key_pem.endswith(b"\n") else key_pem + b"\n"
    chain = chain_pem if chain_pem.endswith(b"\n") else chain_pem + b"\n"
    return key + chain


class PostfixInstaller(FileInstaller):
    """`type: postfix`: directory, file_name, reload_command (default `postfix reload`),
    file_mode, group."""

    kind = "postfix"
    OPTIONS = (*FILE_OPTIONS, "reload_command")

    @classmethod
    def parse_options(cls, sec: Any, ctx: Any) -> FileOptions | None:
        return parse_file_options(sec, ctx.base, command_key="reload_command",
                                  default_command=DEFAULT_RELOAD)

    @classmethod
    def from_config(cls, name: str, options: FileOptions) -> PostfixInstaller:
        return cls(options.directory, options.command or DEFAULT_RELOAD,
                   file_name=options.file_name, file_mode=options.file_mode, group=options.group)

    def __init__(
        self,
        directory: Path,
        reload_command: Sequence[str] = DEFAULT_RELOAD,
        file_name: str = DEFAULT_FILE_NAME,
        file_mode: int = 0o600,
        group: str | None = None,
        run: Runner = subprocess.run,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(directory, file_mode=file_mode, group=group, run=run, timeout=timeout)
        self.reload_command = tuple(reload_command)
        self.file_name = file_name

    def path_for(self, slot: SlotId) -> Path:
        return self.directory / file_name_for(self.file_name, slot)

    def files_for(self, slot: SlotId) -> list[Path]:
        return [self.path_for(slot)]

    def contents(self, slot: SlotId, key_pem: bytes, chain_pem: bytes) -> list[bytes]:
        return [chain_file_bytes(key_pem, chain_pem)]

    def command_for(self, slot: SlotId) -> tuple[Sequence[str], Mapping[str, str] | None]:
        return self.reload_command, None

    def describe_command(self, slot: SlotId) -> str:
        if not self.reload_command:
            return "no reload command"
        shown = " ".join(self.reload_command)
        return "run postfix reload" if self.reload_command == DEFAULT_RELOAD else f"run {shown}"
