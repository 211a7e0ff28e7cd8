"""`UserError`: a mistake the user can fix (the config, a model, an address, a file, a
command-line argument). Standard library only, so every module can raise one; each
module's own error class derives from it. `edged.cli.main` alone turns one into a line
(`edged COMMAND: ` + `prefix` + the message) and its `exit_code`."""

from __future__ import annotations

from typing import ClassVar


class UserError(Exception):
    """Something the user gave that edged cannot use; str() is the message."""

    prefix: ClassVar[str] = ""  # what the message is about, when it does not say itself
    exit_code: ClassVar[int] = 1


class UsageError(UserError):
    """Command-line arguments that argparse accepts one by one but not together; exit 2,
    as argparse's own errors."""

    exit_code = 2
