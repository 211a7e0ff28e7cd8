"""A config file's problems: `ConfigIssue` (one, located), `ConfigError` (all of them),
and the helpers every section's validators use to word theirs."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from typing import Final

from pydantic_core import PydanticCustomError

from edged.errors import UserError
from edged.redaction import Redactor

Loc = tuple[str | int, ...]


class _NoValue:
    """Marks an issue that has no offending value (a missing key, a YAML syntax error)."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Final = _NoValue()
_MAX_VALUE_REPR = 120  # a wrong-typed section can be large; the line number says where it is


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, located as precisely as the file allows."""

    file: str
    line: int | None  # 1-based; None when the problem has no place in the file (missing section)
    path: str  # dotted key path, list items as [i]: "publish.endpoints[1]"; "" for the file
    value: object  # the offending value, or NO_VALUE
    message: str
    column: int | None = None  # 1-based, only for YAML syntax errors
    # the values ${VAR} substitutions inserted: hidden, with URL credentials, wherever the
    # rendered value would show them (a list or map holding a substituted string)
    secrets: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.value is not NO_VALUE:
            try:
                shown = Redactor(self.secrets)(repr(self.value))
            except ValueError:  # an int of over 4300 digits (0x... in YAML) has no repr
                shown = "a number too long to show"
            if len(shown) > _MAX_VALUE_REPR:
                shown = shown[: _MAX_VALUE_REPR - 3] + "..."
            text += f" (got {shown})"
        return text


class ConfigError(UserError):
    """Raised with every issue found in a config file; str() lists them one per line."""

    prefix = "invalid configuration:\n"

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def custom_error(kind: str, message: str) -> PydanticCustomError:
    # PydanticCustomError keeps our message verbatim, without pydantic's "Value error, " prefix.
    return PydanticCustomError(kind, message)

def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"did you mean {by_lower[close[0]]!r}?"
    return "expected one of " + ", ".join(repr(c) for c in choices)

def format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
