"""`edged inspect`: a model's tensors, recognised format, manifest and latency."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edged.cli.common import runs_arg, setup_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    n = sub.add_parser("inspect", help="show a model's tensors, recognised format, manifest "
                                       "and latency")
    n.add_argument("model", help="ONNX file")
    n.add_argument("--format", default="auto",
                   help="take the model as this format instead of recognising it")
    n.add_argument("--write-manifest", action="store_true",
                   help="write the manifest derived from the graph to <model>.json")
    n.add_argument("--force", action="store_true", help="let --write-manifest overwrite")
    n.add_argument("--runs", type=runs_arg, default=10, help="timed runs for the latency estimate")
    n.add_argument("--json", action="store_true", help="one JSON object instead of text")
    n.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    setup_logging("warning")
    from edged.tools.inspection import (
        inspect_model,
        render_report,
        write_manifest,
    )

    info = inspect_model(Path(args.model), args.format, runs=args.runs)
    if args.write_manifest:
        # from the graph even when the existing manifest is what failed; then show
        # what edged makes of the model with the new file
        wrote = write_manifest(info, args.format, force=args.force)
        info = inspect_model(Path(args.model), args.format, runs=args.runs)
        info["wrote"] = str(wrote)
    print(json.dumps(info, indent=2) if args.json else render_report(info))
    return 0 if info["error"] is None else 1
