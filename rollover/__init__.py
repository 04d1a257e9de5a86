"""rollover: DANE TLSA certificate rollover for mail servers."""

__version__ = "0.1.0"
