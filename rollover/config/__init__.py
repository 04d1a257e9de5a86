"""The configuration file: `check.py` YAML nodes with FILE:LINE, `registry.py` the plugin
registries, `load.py` the typed, frozen result.
"""
