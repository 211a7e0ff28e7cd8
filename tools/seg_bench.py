"""What the semantic families' pre- and post-processing options cost per frame.

    python tools/seg_bench.py [--runs N]

Post-processing: `upsample: logits` (the logits enlarged to the camera frame, then the
argmax) against `upsample: class_ids` (the argmax at the head's size, the class map
enlarged by the protocol's nearest-neighbour rule), on random logits of the heads of
SegFormer-b0 at 512x512 (128x128), an smp U-Net at 320x256 (full size) and a 150-class
(ADE20K) SegFormer head, for a 640x480 and a 1280x720 camera. Pre-processing: the
resize alone, Pillow's bilinear (`pil_bilinear`) against OpenCV's INTER_LINEAR and
Pillow's own (in C) where Pillow is installed.
Medians (and p90) in ms, one thread of this process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from edged.inference.formats.semantic import Adapter
from edged.inference.manifest import Manifest
from edged.inference.preprocess import resize_image
from edged.results import Letterbox, mask_at


def _time(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def _postprocess(ad: Adapter, out: np.ndarray, box: Letterbox, fw: int, fh: int) -> object:
    mask = ad.postprocess([out], box, fw, fh).mask
    return mask_at(mask, fw, fh)  # what a subscriber draws at camera size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    runs = ap.parse_args().runs
    rng = np.random.default_rng(0)
    heads = [("SegFormer-b0 head, 4 classes", 4, 128, 128, 512, 512),
             ("SegFormer-b0 head, 19 classes", 19, 128, 128, 512, 512),
             ("SegFormer head, 150 classes", 150, 128, 128, 512, 512),
             ("smp U-Net, 4 classes", 4, 256, 320, 320, 256)]
    print("| head | camera | `class_ids` median (p90) | `logits` median (p90) |")
    print("|---|---|---|---|")
    for label, c, h, w, iw, ih in heads:
        out = rng.normal(size=(1, c, h, w)).astype(np.float32)
        for fw, fh in ((640, 480), (1280, 720)):
            box = Letterbox.fit(fw, fh, iw, ih, "stretch")
            cells = []
            for mode in ("class_ids", "logits"):
                ad = Adapter(Manifest(format="semantic", outputs={"segmentation": "o"},
                                      options={"upsample": mode}), ["o"])

                med, p90 = _time(partial(_postprocess, ad, out, box, fw, fh), runs)
                cells.append(f"{med:.2f} ms ({p90:.2f})")
            print(f"| {label} | {fw}x{fh} | {cells[0]} | {cells[1]} |")
    print()
    try:
        from PIL import Image
    except ImportError:  # Pillow is a test dependency: its column is left out without it
        Image = None  # type: ignore[assignment]
    print("| resize | `linear` (OpenCV) median (p90) | `pil_bilinear` median (p90) |"
          + (" Pillow itself median (p90) |" if Image is not None else ""))
    print("|---|---|---|" + ("---|" if Image is not None else ""))
    for (fw, fh), (iw, ih) in (((640, 480), (512, 512)), ((640, 480), (320, 256)),
                               ((1280, 720), (512, 512))):
        frame = rng.integers(0, 256, (fh, fw, 3), dtype=np.uint8)
        cells = []
        for interp in ("linear", "pil_bilinear"):
            med, p90 = _time(partial(resize_image, frame, (iw, ih), interp), runs)
            cells.append(f"{med:.2f} ms ({p90:.2f})")
        if Image is not None:
            pil = Image.fromarray(frame)
            med, p90 = _time(partial(pil.resize, (iw, ih), Image.Resampling.BILINEAR), runs)
            cells.append(f"{med:.2f} ms ({p90:.2f})")
        print(f"| {fw}x{fh} -> {iw}x{ih} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
