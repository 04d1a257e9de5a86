"""An octoDNS-style provider class that does not declare TLSA (like octodns-route53's)."""


class NoTlsaProvider:
    SUPPORTS = frozenset({"A", "AAAA", "TXT"})

    def __init__(self, id: str, **kwargs: object) -> None:
        self.id = id
