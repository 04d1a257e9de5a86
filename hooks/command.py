"""Generic installer: write the key and chain files, then run a command that picks them up.

One combined file (key then chain, like Postfix) by default, or a separate key file and chain
file with `key_name` and `chain_name`. The command gets ROLLOVER_HOST, ROLLOVER_PORT,
ROLLOVER_ALGORITHM, ROLLOVER_CHAIN_FILE and ROLLOVER_KEY_FILE in its environment (file names,
never key material). A failing command puts the previous files back and runs it once more.
"""

from __future__ import annotations

import os
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
from rollover.model import SlotId


class CommandInstaller(KeyChainFiles, FileInstaller):
    """`type: command`: directory, command (required), file_name or key_name + chain_name,
    file_mode, group."""

    kind = "command"
    OPTIONS = (*FILE_OPTIONS, *SEPARATE_FILE_OPTIONS, "command")

    @classmethod
    def parse_options(cls, sec: Any, ctx: Any) -> FileOptions | None:
        return parse_file_options(sec, ctx.base, command_key="command", command_required=True,
                                  separate=True)

    @classmethod
    def from_config(cls, name: str, options: FileOptions) -> CommandInstaller:
        return cls(options.directory, options.command, file_name=options.file_name,
                   key_name=options.key_name, chain_name=options.chain_name,
                   file_mode=options.file_mode, group=options.group)

    def __init__(
        self,
        directory: Path,
        command: Sequence[str],
        file_name: str = DEFAULT_FILE_NAME,
        key_name: str | None = None,
        chain_name: str | None = None,
        file_mode: int = 0o600,
        group: str | None = None,
        run: Runner = subprocess.run,
        timeout: float = 60.0,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(directory, file_mode=file_mode, group=group, run=run, timeout=timeout)
        self._set_names("command", file_name, key_name, chain_name)
        self.command = tuple(command)
        self.base_env = base_env

    def environment(self, slot: SlotId) -> dict[str, str]:
        env = dict(os.environ if self.base_env is None else self.base_env)
        env.update(
            ROLLOVER_HOST=slot.host,
            ROLLOVER_PORT=str(slot.port),
            ROLLOVER_ALGORITHM=slot.algorithm.value,
            ROLLOVER_CHAIN_FILE=str(self.chain_path(slot)),
            ROLLOVER_KEY_FILE=str(self.key_path(slot)),
        )
        return env

    def command_for(self, slot: SlotId) -> tuple[Sequence[str], Mapping[str, str] | None]:
        return self.command, self.environment(slot)

    def describe_command(self, slot: SlotId) -> str:
        return f"run {command_text(self.command)}" if self.command else "no command"
