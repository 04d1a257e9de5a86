"""current + next: 3 1 1 of the current key + 3 1 1 of a pre-generated next key (the how-to's
tight pinning). A key comes into service only once its own 3 1 1 is omnipresent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollover.model import own_rdata

if TYPE_CHECKING:
    from rollover.core.machine import CertInfo, SlotState


class CurrentNext:
    name = "current+next"
    wants_next_key = True

    def covering(self, st: SlotState, key_id: str, cert: CertInfo | None,
                 pins: frozenset[str]) -> frozenset[str]:
        key = st.key_by_id(key_id)
        return frozenset({own_rdata(key.spki_sha256)}) if key else frozenset()

    def needed(self, st: SlotState, key_id: str, cert: CertInfo | None,
               pins: frozenset[str]) -> frozenset[str]:
        return self.covering(st, key_id, cert, pins)
