"""Ground DNS: one query to one explicit address (`query.py`), DNSSEC checks on single responses
(`dnssec.py`).
"""
