"""Benchmark: the colour mask's cost per frame (docs/benchmarks.md, "Foxglove clients").

For a synthetic scene's class mask at camera resolution: the palette PNG edged sends
(`messages.colour_mask`, built and protobuf-encoded), against the RGB8 `RawImage` it
sent before and an RGB PNG through OpenCV; medians of `--n` runs, one thread.

    .venv/bin/python tests/foxglove_mask_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent / "unit"))  # test_codec
from test_codec import make_result  # noqa: E402

from edged import synth  # noqa: E402
from edged.outputs.base import foxglove_schema as messages  # noqa: E402
from edged.outputs.base.draw import Overlay  # noqa: E402
from edged.outputs.base.png import grey_png  # noqa: E402


def median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure(w: int, h: int, n: int) -> str:
    ids = synth.render(38, 5, w, h).segmentation.astype(np.uint8)
    r = make_result("front", frame=(w, h))
    r = type(r)(**{**{f: getattr(r, f) for f in r.__dataclass_fields__},
                   "mask_classes": ("background", "lines", "field")})
    ov = Overlay()
    png = messages.colour_mask(r, grey_png(ids), ov).encode()
    t_png = median_ms(lambda: messages.colour_mask(r, grey_png(ids), ov).encode(), n)

    def rgb8() -> bytes:
        rgb = ov.colour_mask_rgb(ids, r.mask_classes)
        return messages.RawImage(timestamp=messages.stamp(0), frame_id="front", width=w,
                                 height=h, encoding="rgb8", step=3 * w,
                                 data=rgb.tobytes()).encode()

    raw = rgb8()
    t_rgb8 = median_ms(rgb8, n)
    t_cv = median_ms(lambda: cv2.imencode(
        ".png", ov.colour_mask_rgb(ids, r.mask_classes)[..., ::-1]), max(20, n // 10))
    t_mono = median_ms(lambda: messages.class_mask(r, ids).encode(), n)
    return (f"{w}x{h}: palette PNG (edged) {t_png:.2f} ms, {len(png) / 1e3:.1f} KB | "
            f"rgb8 RawImage (before) {t_rgb8:.2f} ms, {len(raw) / 1e3:.0f} KB | "
            f"RGB PNG via OpenCV {t_cv:.2f} ms | mono8 class ids {t_mono:.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    for w, h in ((640, 480), (1280, 720)):
        print(measure(w, h, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
