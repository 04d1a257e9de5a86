"""What every scheme answers. Pure: reads a slot's state, never changes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the machine imports the schemes; the schemes only read its types
    from rollover.core.machine import CertInfo, SlotState


class SchemePolicy(Protocol):
    name: str
    # True: a next key is staged and its 3 1 1 published long before it is needed
    wants_next_key: bool

    def covering(self, st: SlotState, key_id: str, cert: CertInfo | None,
                 pins: frozenset[str]) -> frozenset[str]:
        """Rdatas any one of which, omnipresent, lets a certificate for `key_id` (issued as
        `cert`, or not yet issued: None) be ordered or installed (safety rule 1). `pins`: the
        issuer records the operator configured."""
        ...

    def needed(self, st: SlotState, key_id: str, cert: CertInfo | None,
               pins: frozenset[str]) -> frozenset[str]:
        """Rdatas this scheme publishes for a certificate of `key_id` in service."""
        ...
