"""Monitoring: `check --domain`, zone hygiene, DNSSEC from a trust anchor, and the outputs (text,
JSON, Nagios, Prometheus, the live view).
"""
