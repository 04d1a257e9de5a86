"""The loop: `loop.py` rounds of observe -> step -> execute -> persist, `executors.py` one executor
per action kind (real and dry), `wiring.py` edges from config.
"""
