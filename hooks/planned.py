"""Installer types that are planned but not written yet. They are registered (so a config that
names them is refused when it loads, with "not implemented yet", instead of failing later)."""

from __future__ import annotations

from rollover.registry import Planned


class EximInstaller(Planned):
    NOT_IMPLEMENTED = "use type: command with Exim's tls_certificate/tls_privatekey files"


class DovecotInstaller(Planned):
    NOT_IMPLEMENTED = "use type: command with `doveadm reload`"
