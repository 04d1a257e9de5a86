from rollover.cli import entry

entry()
