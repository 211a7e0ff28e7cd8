"""The one place a command's error becomes what the user sees: one line per error on
stderr (or in the log, for `run` once it logs) and an exit code."""

from __future__ import annotations

import os
import sys

from edged.cli.common import log
from edged.errors import UserError

# Every command's errors end up here, through `main`: bad config, model, bind or
# environment gets one clear message and its exit code (1 unless the error says), never a
# traceback. Every such error derives from `edged.errors.UserError` (standard library
# only: reporting an error never imports onnxruntime or zmq).


def _leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, e.g. from an asyncio.TaskGroup."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def error_message(e: BaseException) -> str | None:
    """The message for an error a user can fix (config, model, address, file), or None
    for anything else (a bug)."""
    if isinstance(e, UserError):
        return f"{e.prefix}{e}"
    if isinstance(e, OSError):
        return str(e) if not e.filename else f"{e.strerror or e}: {e.filename}"
    return None


def report_error(command: str, e: BaseException, *, logged: bool = False) -> int:
    """Report `e` (what a command raised) without a traceback; the exit code (the
    highest of its user errors' `exit_code`, 1 for anything else).

    With `logged` (`run` once its logging is set up) one ERROR line per error goes to
    the log (the journal); every other case prints `edged COMMAND: message` to stderr.
    An unexpected error is named as one; EDGED_TRACEBACK=1 adds its traceback for a bug
    report.
    """
    lines: list[str] = []
    unexpected = False
    code = 1
    for leaf in _leaves(e):
        if isinstance(leaf, UserError):
            code = max(code, leaf.exit_code)
        msg = error_message(leaf)
        if msg is None:
            unexpected = True
            msg = (f"internal error: {type(leaf).__name__}: {leaf} "
                   "(set EDGED_TRACEBACK=1 to see where)")
        if msg not in lines:
            lines.append(msg)
    for msg in lines:
        if logged:
            log.error("%s", msg)
        else:
            print(f"edged {command}: {msg}", file=sys.stderr)
    if unexpected and os.environ.get("EDGED_TRACEBACK"):
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    return code
