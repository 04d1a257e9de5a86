"""Shared test code for DNS providers (the conformance suite every provider must pass).

Imported as `providers.conformance` (tests/ is on sys.path, ahead of the repository root); the
shipped providers are always imported as `rollover.providers.*`.
"""
