"""The pure core: the state machine (`machine.py`), the schemes it consults, the flight rules. No
I/O, no clock: `now` is passed in.
"""
