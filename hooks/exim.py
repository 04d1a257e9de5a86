"""Exim installer (`type: exim`): one file per key algorithm, listed in Exim's `tls_certificate`
(Exim >= 4.92 with OpenSSL or GnuTLS takes a list: one certificate per algorithm).

By default each file holds the private key, then the chain, and `tls_privatekey` stays unset
(Exim then reads the key from the certificate file). One file per algorithm means one atomic
rename per algorithm: Exim can never load a new certificate with the old key (it then refuses
STARTTLS for every algorithm; seen in the lab). `key_name` +
`chain_name` write separate files for `tls_privatekey`/`tls_certificate` lists instead.

Exim (4.94+) preloads the TLS files in its daemon and watches them with inotify; it reloads
them about 5 s after they change (measured with Debian's 4.96: 4.3-4.8 s), not at once. So a
probe right after writing still sees the old certificate. The installer therefore waits
`settle` (default 6 s) after writing, or after `reload_command` when one is given (e.g.
`systemctl reload exim4`: the SIGHUP re-exec loads the files as it starts; settle then
defaults to 0, and a slow re-exec is caught by the post-flight probe; not shown in the lab: the
re-exec runs the compiled-in /usr/sbin/exim4, which the unpacked lab Exim lacks, and under `-C`
it could not bind port 25 again), before the post-flight probe runs.

Files are 0640, group `Debian-exim` by default (Debian runs Exim's receiving processes as that
group, and an Exim that cannot preload reads the key as that user); set `group` to the group
your Exim runs as, or give `file_mode: 0600` alone when Exim reads them as root only.

    tls_certificate = /etc/exim4/tls/mail.example.nl.ecdsa-p256.pem : \\
                      /etc/exim4/tls/mail.example.nl.rsa2048.pem
"""

from __future__ import annotations

import dataclasses
import grp
import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollover.clock import Clock, SystemClock
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

log = logging.getLogger("rollover.hooks")

DEFAULT_GROUP = "Debian-exim"
DEFAULT_MODE = 0o640
# Exim reloads watched TLS files ~5 s after a change; one second more for a loaded machine.
DEFAULT_SETTLE = 6


@dataclass(frozen=True)
class EximOptions(FileOptions):
    settle: int = DEFAULT_SETTLE  # seconds to wait after writing for Exim to reload the files

    def describe(self, slot: SlotId) -> str:
        files = ", ".join(str(self.directory / n) for n in self.file_names(slot))
        then = command_text(self.command) if self.command else "no reload command"
        return f"into {files}; then {then}; wait {self.settle}s for Exim to reload them"


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


class EximInstaller(KeyChainFiles, FileInstaller):
    """`type: exim`: directory, file_name or key_name + chain_name, file_mode (0640), group
    (Debian-exim), reload_command (none), settle (6s; 0s with a reload_command)."""

    kind = "exim"
    OPTIONS = (*FILE_OPTIONS, *SEPARATE_FILE_OPTIONS, "reload_command", "settle")

    @classmethod
    def parse_options(cls, sec: Any, ctx: Any) -> EximOptions | None:
        opts = parse_file_options(sec, ctx.base, command_key="reload_command", separate=True)
        settle_default = 0 if opts is not None and opts.command else DEFAULT_SETTLE
        settle = sec.get_duration("settle", settle_default)
        if settle > 60:
            sec.bad("settle", f"{settle}s is longer than any Exim needs (about 5 s); at most 60s")
        root_only = sec.has("file_mode") and opts is not None and not opts.file_mode & 0o070
        if sec.has("group"):
            group = opts.group if opts is not None else None
        else:
            group = None if root_only else DEFAULT_GROUP
        if group is not None and not _group_exists(group):
            if sec.has("group"):
                sec.bad("group", f"group {group!r} does not exist")
            else:
                sec.bad("group", f"the default group {group!r} (Debian's Exim) does not exist "
                        "here; set group: to the group Exim runs as, or file_mode: 0600 when "
                        "Exim reads its TLS files as root")
        if opts is None:
            return None
        mode = opts.file_mode if sec.has("file_mode") else (
            DEFAULT_MODE if group is not None else 0o600)
        return EximOptions(**{**dataclasses.asdict(opts), "file_mode": mode, "group": group,
                              "settle": settle})

    @classmethod
    def from_config(cls, name: str, options: EximOptions) -> EximInstaller:
        return cls(options.directory, options.command, file_name=options.file_name,
                   key_name=options.key_name, chain_name=options.chain_name,
                   file_mode=options.file_mode, group=options.group, settle=options.settle)

    def __init__(
        self,
        directory: Path,
        reload_command: Sequence[str] = (),
        file_name: str = DEFAULT_FILE_NAME,
        key_name: str | None = None,
        chain_name: str | None = None,
        file_mode: int = DEFAULT_MODE,
        group: str | None = DEFAULT_GROUP,
        settle: float = DEFAULT_SETTLE,
        run: Runner = subprocess.run,
        timeout: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(directory, file_mode=file_mode, group=group, run=run, timeout=timeout)
        self._set_names("exim", file_name, key_name, chain_name)
        self.reload_command = tuple(reload_command)
        self.settle = settle
        self.clock = clock or SystemClock()

    def command_for(self, slot: SlotId) -> tuple[Sequence[str], Mapping[str, str] | None]:
        return self.reload_command, None

    def describe_command(self, slot: SlotId) -> str:
        what = f"run {command_text(self.reload_command)}" if self.reload_command else \
            "no reload command"
        return f"{what}; wait {self.settle:g}s for Exim to reload the files"

    def _run_after(self, slot: SlotId) -> str | None:
        failure = super()._run_after(slot)
        if failure is None and self.settle > 0:
            # install, the restore after a failed reload and rollback all end here: wait until
            # Exim serves what is on disk now, so the post-flight probe sees the truth
            log.info("%s: waiting %gs for Exim to reload its TLS files", slot, self.settle)
            self.clock.sleep(self.settle)
        return failure

    @classmethod
    def snippet(cls, options: EximOptions, slots: Sequence[SlotId]) -> str:
        """The Exim main-configuration lines that point Exim at rollover's files (Debian:
        conf.d/main/03_exim4-config_tlsoptions, or the main section of exim4.conf)."""
        inst = cls.from_config("exim", options)
        chains = " : ".join(str(inst.chain_path(s)) for s in slots)
        lines = [
            "# Exim: TLS files managed by rollover (one per key algorithm)",
            "MAIN_TLS_ENABLE = yes",
            "tls_advertise_hosts = *",
            f"tls_certificate = {chains}",
        ]
        if inst.separate:
            lines.append("tls_privatekey = " + " : ".join(str(inst.key_path(s)) for s in slots))
        else:
            lines.append("# tls_privatekey stays unset: each file holds the key, then the chain")
        return "\n".join(lines) + "\n"
