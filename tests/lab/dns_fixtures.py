"""pytest fixtures for the DNS part of the lab (BIND primary, BIND + Knot secondaries)."""
