"""Key and chain files of one slot: one combined file (the key, then the chain) by default, or
a separate key file and chain file when `key_name` and `chain_name` are both given. Shared by
the installers whose server takes either form (Exim, Dovecot)."""

from __future__ import annotations

from pathlib import Path

from rollover.errors import InstallError
from rollover.hooks.files import file_name_for
from rollover.hooks.postfix import chain_file_bytes
from rollover.model import SlotId


class KeyChainFiles:
    """Mixin for a FileInstaller: `directory`, `file_name`, `key_name`, `chain_name`."""

    directory: Path
    file_name: str
    key_name: str | None
    chain_name: str | None

    def _set_names(self, what: str, file_name: str, key_name: str | None,
                   chain_name: str | None) -> None:
        if (key_name is None) != (chain_name is None):
            raise InstallError(f"{what} installer: give both key_name and chain_name, or neither")
        self.file_name = file_name
        self.key_name = key_name
        self.chain_name = chain_name

    @property
    def separate(self) -> bool:
        return self.key_name is not None

    def key_path(self, slot: SlotId) -> Path:
        name = self.key_name if self.key_name is not None else self.file_name
        return self.directory / file_name_for(name, slot, "key_name")

    def chain_path(self, slot: SlotId) -> Path:
        name = self.chain_name if self.chain_name is not None else self.file_name
        return self.directory / file_name_for(name, slot, "chain_name")

    def files_for(self, slot: SlotId) -> list[Path]:
        if self.separate:
            return [self.key_path(slot), self.chain_path(slot)]
        return [self.chain_path(slot)]

    def contents(self, slot: SlotId, key_pem: bytes, chain_pem: bytes) -> list[bytes]:
        if self.separate:
            return [key_pem, chain_pem]
        return [chain_file_bytes(key_pem, chain_pem)]
