"""Text that came from outside (a certificate, a DNS answer, a server, a config value, a file
name) made safe to show: no control characters reach the terminal, nothing is huge, and a value
that could be a secret is described instead of shown.

Ground floor: imports nothing of ours.
"""

from __future__ import annotations

import re

# A base64/base64url/hex token long enough to be a key: TSIG and EAB secrets look like this.
_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")


def printable(text: str) -> str:
    """`text` with every non-printable character (newline, ESC, NUL, bidi overrides, ...)
    replaced by a visible escape, so it stays on one line and cannot drive the terminal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def clip(text: str, limit: int = 80) -> str:
    """printable(text), cut to about `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return printable(text)
    return f"{printable(text[:limit])}... ({len(text) - limit} more characters)"


def looks_secret(text: str) -> bool:
    """True for a value shaped like a key (base64, base64url or long hex, mixed characters):
    such a value is never echoed, whatever key it was given under."""
    s = text.strip()
    if _HEX.fullmatch(s):
        return any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
    if not _TOKEN.fullmatch(s):
        return False
    has_digit = any(c.isdigit() for c in s)
    mixed_case = any(c.isupper() for c in s) and any(c.islower() for c in s)
    return s.endswith("=") or (has_digit and mixed_case)


def shown(value: str, limit: int = 60) -> str:
    """A config or file value for an error message: quoted and clipped, or, when it looks like
    a secret, only its length."""
    if looks_secret(value):
        return f"(a value of {len(value)} characters, not shown: it looks like a secret)"
    return f"'{clip(value, limit)}'"


def shown_path(path: object, limit: int = 200) -> str:
    """A file name for a message: printable and clipped (a path can be over the OS limit), and
    hidden when someone pasted a secret where a file name belongs."""
    text = str(path)
    if looks_secret(text.rstrip("/").rsplit("/", 1)[-1]) or (
        looks_secret(text) and not text.startswith(("/", "./", "../", "~"))
    ):
        return f"(a name of {len(text)} characters, not shown: it looks like a secret)"
    return clip(text, limit)
