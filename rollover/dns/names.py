"""Host names as rollover takes them, from a config file, a command line or a state file: the one
rule (ASCII/xn-- labels of letters, digits and inner hyphens, at most 253 characters)."""

from __future__ import annotations

import ipaddress
import re

from rollover.display import shown

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_hostname(value: str) -> tuple[str, str | None]:
    """(lowercase name without trailing dot, problem or None)."""
    name = value.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return name, "empty"
    if not name.isascii():
        return name, "use the ASCII (xn--) form of an internationalised name"
    try:
        ipaddress.ip_address(name)
        return name, "an IP address, not a name"
    except ValueError:
        pass
    if len(name) > 253:
        return name, "longer than 253 characters"
    for label in name.split("."):
        if not _LABEL.match(label):
            return name, f"bad label {shown(label, 40)}"
    return name, None
