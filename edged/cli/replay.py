"""`edged replay`: publish a recording on ZeroMQ with its timing."""

from __future__ import annotations

import argparse
from pathlib import Path

from edged.cli.common import DEFAULT_ENDPOINT, positive_float, setup_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("replay", help="publish a recording on ZeroMQ with its timing")
    rp.add_argument("file", help="an .mcap file written by edged")
    rp.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="where to publish (bound)")
    rp.add_argument("--speed", type=positive_float, default=1.0, help="2 = twice as fast")
    rp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    rp.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    setup_logging(args.log_level or "info")
    from edged.outputs.record import require_record

    require_record()
    from edged.outputs.record.replay import replay

    replay(Path(args.file), args.endpoint, speed=args.speed)
    return 0
