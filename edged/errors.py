"""`UserError`: a mistake in what the user typed (a command-line argument, a file named
on the command line) that is not the config's or a model's. Standard library only, so
every module can raise it; `edged.cli.main` reports it as one line and exit 1."""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave that edged cannot use; str() is the whole message."""
