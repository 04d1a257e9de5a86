"""Shared test code for installers: the conformance suite every installer must pass (imported as
`installers.conformance`; tests/ is on sys.path)."""
