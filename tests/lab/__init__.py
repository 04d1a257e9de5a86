"""The test lab: real BIND, Knot, Pebble and Postfix on loopback addresses, as child processes."""
