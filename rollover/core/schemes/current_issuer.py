"""current + issuer: 3 1 1 of the current key + 2 1 1 of the issuing CA's public key (the how-to
prefers the root). A certificate is covered by its own key's 3 1 1 *or* by the 2 1 1 of an issuer
in the chain it is served with, so a new key may go into service as soon as the issuer record is
omnipresent; a chain from an issuer that is not published (a CA change) waits until it is.
Looser than current+next: any certificate that CA issues for the name matches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollover.model import own_rdata

if TYPE_CHECKING:
    from rollover.core.machine import CertInfo, SlotState


class CurrentIssuer:
    name = "current+issuer"
    wants_next_key = False

    def _issuers(self, st: SlotState, cert: CertInfo | None,
                 pins: frozenset[str]) -> frozenset[str]:
        if cert is not None:
            return frozenset(cert.issuers)
        # not issued yet: expect the issuer of the certificate in service (same CA), or a pin
        return frozenset(st.installed.issuers if st.installed else ()) | pins

    def covering(self, st: SlotState, key_id: str, cert: CertInfo | None,
                 pins: frozenset[str]) -> frozenset[str]:
        key = st.key_by_id(key_id)
        own = {own_rdata(key.spki_sha256)} if key else set()
        return frozenset(own) | self._issuers(st, cert, pins)

    def needed(self, st: SlotState, key_id: str, cert: CertInfo | None,
               pins: frozenset[str]) -> frozenset[str]:
        return self.covering(st, key_id, cert, pins)
