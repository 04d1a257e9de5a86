"""DNS provider backends (installed as rollover.providers)."""
