from rollover.cli.main import entry

entry()
