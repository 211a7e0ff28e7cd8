"""What several commands share: logging, reading the config, argument types, and the
one-line rendering of a result."""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edged.config import Config
    from edged.wire.codec import Message

log = logging.getLogger("edged")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def read_config(path: str | None, int8_class: str | None = None) -> Config:
    """The config; ConfigError is reported by `main` (see `edged.cli.report`). Sets OpenCV's
    decoded-image pixel bound from the cameras' max_pixels before any frame is read.
    `int8_class`: the CPU's, when the caller has detected it already."""
    from edged.app import SECTIONS
    from edged.capture.readers.images import limit_image_decoding
    from edged.config import load_config

    cfg = load_config(path, int8_class=int8_class, sections=SECTIONS)
    limit_image_decoding(max(c.max_pixels for c in cfg.cameras.values()))
    return cfg


# --------------------------------------------------------------------------- arguments
# argparse's `type=` for numbers: a nan, inf, negative or zero count or duration is a
# mistake, refused at parse time (argparse's one "error:" line and exit 2).

def finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text!r}")
    return value


def nonneg_float(text: str) -> float:
    # quantize's gates: above 1 is allowed, a gate nothing passes (tests use one)
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text!r}")
    return value


def fraction(text: str) -> float:
    value = finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text!r}")
    return value


def int_at_least(low: int, high: int | None = None) -> typing.Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {text!r}")
        return value
    return parse


count_arg = int_at_least(1)
# repeated work (timed runs, scenes): a bound so a typo cannot run for days
runs_arg = int_at_least(1, 100_000)
# frames held in memory at once (quantize: ~1 MB each at 640x480)
held_frames_arg = int_at_least(1, 4096)
nonneg_arg = int_at_least(0)
# synth-video: the same bound as a synthetic camera's width/height (config.MAX_SIDE)
side_arg = int_at_least(16, 8192)


def mask_summary(msg: Message) -> str:
    if msg.mask is None:
        return "-"
    import numpy as np

    counts = np.bincount(msg.mask.ravel(), minlength=len(msg.mask_classes))
    total = max(int(counts.sum()), 1)
    return " ".join(f"{msg.mask_classes[i] if i < len(msg.mask_classes) else i} "
                    f"{100 * c / total:.0f}%" for i, c in enumerate(counts) if c)


def format_message(msg: Message) -> str:
    from edged.wire.echo import detection_text

    dets = detection_text(msg)
    flags = f" [{','.join(msg.flags)}]" if msg.flags else ""
    return (f"{msg.camera} #{msg.seq:<5d} e2e {msg.latency_ms:5.1f} ms  "
            f"inference {msg.timings_ms.get('inference', float('nan')):5.1f} ms  "
            f"dets: {dets}  mask: {mask_summary(msg)}  [{msg.model}]{flags}")
