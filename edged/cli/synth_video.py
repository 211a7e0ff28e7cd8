"""`edged synth-video`: a video of synthetic scenes (for replay and tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edged.cli.common import count_arg, nonneg_arg, side_arg
from edged.errors import UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sv = sub.add_parser("synth-video", help="write a video of synthetic scenes (for replay)")
    sv.add_argument("out")
    sv.add_argument("--frames", type=count_arg, default=300)
    sv.add_argument("--seed", type=nonneg_arg, default=0)
    sv.add_argument("--width", type=side_arg, default=640)
    sv.add_argument("--height", type=side_arg, default=480)
    sv.set_defaults(func=cmd_synth_video)


def cmd_synth_video(args: argparse.Namespace) -> int:
    from edged.tools.bench import write_synthetic_video

    out = Path(args.out)
    if out.suffix.lower() != ".avi":
        # OpenCV picks the container by extension; MJPG goes into AVI, and for a name
        # without one it raises its own assertion instead of saying so
        raise UserError(f"{out}: the output must be an .avi file (MJPG in AVI)")
    try:  # our own open says why (no such directory, permission), OpenCV's does not
        with open(out, "ab"):
            pass
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    write_synthetic_video(Path(args.out), args.frames, args.seed, args.width, args.height)
    print(f"wrote {args.frames} frames to {args.out}")
    return 0
