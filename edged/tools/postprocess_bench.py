"""Benchmark of format post-processing (not a test): `python -m edged.tools.postprocess_bench`.

Times the yolo-seg adapter's `postprocess` alone (no model, no pre-processing) on
synthetic outputs of a 416x416 YOLOv8-seg export: 3549 anchors, 80 classes, 32 mask
prototypes at 104x104, with 20 objects each found by 5 anchors (100 candidates above
the threshold, 20 kept by NMS), for a 640x480 camera. Prints the median and the 90th
percentile over many runs. Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from edged.inference.formats.yolo_seg import Adapter
from edged.inference.manifest import Manifest
from edged.inference.preprocess import Letterbox, PreprocessSpec

SIZE, ANCHORS, CLASSES, MASKS = 416, 3549, 80, 32


def synthetic_outputs(objects: int = 20, per_object: int = 5, seed: int = 0
                      ) -> list[np.ndarray]:
    """[1, 4+80+32, 3549] detections and [1, 32, 104, 104] prototypes, as an export gives."""
    rng = np.random.default_rng(seed)
    table = np.zeros((4 + CLASSES + MASKS, ANCHORS), np.float32)
    table[:4] = rng.uniform(10, 60, (4, ANCHORS))  # background boxes, irrelevant
    table[4:4 + CLASSES] = rng.uniform(0, 0.2, (CLASSES, ANCHORS))  # all below 0.25
    table[4 + CLASSES:] = rng.normal(0, 1, (MASKS, ANCHORS))
    anchors = rng.choice(ANCHORS, objects * per_object, replace=False)
    # objects on a 5x4 grid inside the letterboxed content (y 52..364), 40-70 px boxes
    for k, a in enumerate(anchors):
        obj = k // per_object
        cx = 50 + (obj % 5) * 78 + rng.uniform(-2, 2)
        cy = 90 + (obj // 5) * 75 + rng.uniform(-2, 2)
        w, h = 40 + (obj * 7) % 30, 45 + (obj * 5) % 25
        table[:4, a] = (cx, cy, w, h)
        table[4 + (obj * 13) % CLASSES, a] = 0.9 - 0.1 * (k % per_object)
    protos = rng.normal(0, 1, (1, MASKS, SIZE // 4, SIZE // 4)).astype(np.float32)
    return [table[None], protos]


def run(runs: int, frame_w: int = 640, frame_h: int = 480) -> dict[str, float]:
    manifest = Manifest(format="yolo-seg", input_name="images",
                        outputs={"detections": "output0", "protos": "output1"},
                        preprocess=PreprocessSpec(input_w=SIZE, input_h=SIZE, pad_value=114),
                        classes=tuple(f"c{i}" for i in range(CLASSES)), conf_threshold=0.25,
                        iou_threshold=0.7, max_detections=300, multi_label=False,
                        options={"layout": "anchors_last", "mask_threshold": 0.5})
    adapter = Adapter(manifest, ["output0", "output1"])
    outputs = synthetic_outputs()
    box = Letterbox.fit(frame_w, frame_h, SIZE, SIZE)
    dets, _ = adapter.postprocess(outputs, box, frame_w, frame_h)
    if len(dets) != 20:
        raise RuntimeError(f"benchmark set-up gives {len(dets)} detections, expected 20")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        adapter.postprocess(outputs, box, frame_w, frame_h)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (runs - 1))],
            "min_ms": times[0], "runs": runs, "detections": len(dets),
            "mask_pixels": int(sum(m.size for m in dets.instance_masks or []))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edged.tools.postprocess_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=500)
    args = p.parse_args(argv)
    r = run(args.runs)
    blas = {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}
    print(f"yolo-seg post-processing, {SIZE}x{SIZE} input, {ANCHORS} anchors, {CLASSES} "
          f"classes, {MASKS} prototypes, {r['detections']} detections (of 100 candidates), "
          f"640x480 camera, {r['mask_pixels']} instance-mask pixels")
    print(f"median {r['median_ms']:.3f} ms, p90 {r['p90_ms']:.3f} ms, min {r['min_ms']:.3f} ms "
          f"over {r['runs']} runs (numpy {np.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs{', ' + str(blas) if blas else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
