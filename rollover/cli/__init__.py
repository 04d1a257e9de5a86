"""The face: `main.py` parses argv and dispatches; one module per command, each with
`add_arguments(parser)` and `run(args, env)`.
"""
