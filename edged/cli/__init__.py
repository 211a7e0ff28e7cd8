"""`edged` command line: `main` assembles the parser from one module per command (each
registers its sub-parser and its `cmd_*`), runs the command and turns its error into one
line and an exit code (`edged.cli.report`).

Importing this package must be quick and load no numpy: `edged run` installs its signal
handlers only once it is imported (EarlySignals), so the commands import what they need
inside their functions.
"""

from __future__ import annotations

import argparse

from edged.cli import (
    bench,
    check,
    echo,
    eval,
    inspect,
    keygen,
    quantize,
    replay,
    run,
    synth_video,
    triton_repo,
)
from edged.cli.report import report_error

__all__ = ["build_parser", "main"]

# in the order `edged --help` lists them; run registers `run` and `record`
COMMANDS = (run, replay, check, echo, keygen, bench, synth_video, eval, inspect, quantize,
            triton_repo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edged", description="Streaming edge-inference daemon.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the one place errors become messages (report_error)
        return report_error(args.command, e, logged=getattr(args, "errors_to_log", False))
