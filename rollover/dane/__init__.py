"""DANE maths: TLSA records from certificates and keys (`tlsa.py`), RFC 7671 matching of a chain
(`match.py`). Pure.
"""
