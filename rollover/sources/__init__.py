"""Certificate sources (entry-point group `rollover.sources`): where an endpoint's certificates
come from. Built-ins: `acme` (ordered for the key rollover published, DNS-01 through the
endpoint's provider) and `files` (dropped by another tool, picked up when they change)."""

from __future__ import annotations

from rollover.errors import RolloverError


class CertSourceError(RolloverError):
    """A certificate source could not deliver: files missing, in flux, or for another key."""
