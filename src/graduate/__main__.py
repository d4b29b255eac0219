"""`python -m graduate` runs the command line."""

from graduate.cli.app import entry

entry()
