"""pytest fixtures for the application part of the lab (Pebble ACME, Postfix)."""
