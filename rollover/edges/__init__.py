"""The engine's edges: the Protocols (`protocols.py`) and the built-in ones that talk to the world:
propagation observer, TLS probe, ACME client, spool.
"""
