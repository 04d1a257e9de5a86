"""Certificate sources that are planned but not written yet: registered so that a config naming
them is refused when it loads ("not implemented yet"), never later."""

from __future__ import annotations

from rollover.registry import Planned


class CertbotSource(Planned):
    NOT_IMPLEMENTED = "use source: files with certbot's live/NAME/fullchain.pem and privkey.pem"
