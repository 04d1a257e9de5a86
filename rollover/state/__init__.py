"""The state store: `store.py` a local JSON document + keys under state_dir, `codec.py` its
validating schema, `s3.py` shared state on S3.
"""
