"""Benchmark of format post-processing (not a test): `python -m edged.tools.postprocess_bench`.

Times the yolo-seg adapter's `postprocess` alone (no model, no pre-processing) on
synthetic outputs of a 416x416 YOLOv8-seg export: 3549 anchors, 80 classes, 32 mask
prototypes at 104x104, with N objects (`--objects`, default 20) each found by 5 anchors
(5N candidates above the threshold, N kept by NMS), laid out on a grid over the
letterboxed frame with boxes about one grid cell in size, for a camera of `--frame`
(default 640x480), with the mask rule of `--mask-mode` (ultralytics, the default, or
direct). Prints the median and the 90th percentile over many runs. Record results in
docs/benchmarks.md.
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
from edged.inference.preprocess import PreprocessSpec
from edged.results import Letterbox

SIZE, ANCHORS, CLASSES, MASKS = 416, 3549, 80, 32


def synthetic_outputs(objects: int = 20, per_object: int = 5, seed: int = 0,
                      frame: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """[1, 4+80+32, 3549] detections and [1, 32, 104, 104] prototypes, as an export gives."""
    rng = np.random.default_rng(seed)
    box = Letterbox.fit(frame[0], frame[1], SIZE, SIZE)
    cols = max(1, round(np.sqrt(objects * box.content_w / box.content_h)))
    rows = -(-objects // cols)
    cw, ch = box.content_w / cols, box.content_h / rows
    table = np.zeros((4 + CLASSES + MASKS, ANCHORS), np.float32)
    table[:4] = rng.uniform(10, 60, (4, ANCHORS))  # background boxes, irrelevant
    table[4:4 + CLASSES] = rng.uniform(0, 0.2, (CLASSES, ANCHORS))  # all below 0.25
    table[4 + CLASSES:] = rng.normal(0, 1, (MASKS, ANCHORS))
    anchors = rng.choice(ANCHORS, objects * per_object, replace=False)
    # objects on a grid over the letterboxed content, boxes 0.8-1.2 cells: neighbours
    # overlap a little (IoU < 0.3), so NMS keeps one box per object
    for k, a in enumerate(anchors):
        obj = k // per_object
        cx = box.pad_x + (obj % cols + 0.5) * cw + rng.uniform(-0.5, 0.5)
        cy = box.pad_y + (obj // cols + 0.5) * ch + rng.uniform(-0.5, 0.5)
        w, h = cw * (0.8 + 0.4 * ((obj * 7) % 10) / 10), ch * (0.8 + 0.4 * ((obj * 3) % 10) / 10)
        table[:4, a] = (cx, cy, w, h)
        table[4 + (obj * 13) % CLASSES, a] = 0.9 - 0.1 * (k % per_object)
    protos = rng.normal(0, 1, (1, MASKS, SIZE // 4, SIZE // 4)).astype(np.float32)
    return [table[None], protos]


def run(runs: int, frame_w: int = 640, frame_h: int = 480, objects: int = 20,
        mask_mode: str = "ultralytics") -> dict[str, float]:
    manifest = Manifest(format="yolo-seg", input_name="images",
                        outputs={"detections": "output0", "protos": "output1"},
                        preprocess=PreprocessSpec(input_w=SIZE, input_h=SIZE, pad_value=114),
                        classes=tuple(f"c{i}" for i in range(CLASSES)), conf_threshold=0.25,
                        iou_threshold=0.7, max_detections=300, multi_label=False,
                        options={"layout": "anchors_last", "mask_threshold": 0.5,
                                 "mask_mode": mask_mode})
    adapter = Adapter(manifest, ["output0", "output1"])
    outputs = synthetic_outputs(objects, frame=(frame_w, frame_h))
    box = Letterbox.fit(frame_w, frame_h, SIZE, SIZE)
    dets = adapter.postprocess(outputs, box, frame_w, frame_h).detections
    if len(dets) != objects:
        raise RuntimeError(f"benchmark set-up gives {len(dets)} detections, expected "
                           f"{objects}")
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
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--frame", default="640x480", help="camera WxH")
    p.add_argument("--mask-mode", choices=("ultralytics", "direct"), default="ultralytics")
    args = p.parse_args(argv)
    fw, fh = (int(v) for v in args.frame.lower().split("x"))
    r = run(args.runs, fw, fh, args.objects, args.mask_mode)
    blas = {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}
    print(f"yolo-seg post-processing, {SIZE}x{SIZE} input, {ANCHORS} anchors, {CLASSES} "
          f"classes, {MASKS} prototypes, {r['detections']} detections (of "
          f"{5 * r['detections']} candidates), {fw}x{fh} camera, {args.mask_mode} masks, "
          f"{r['mask_pixels']} instance-mask pixels")
    print(f"median {r['median_ms']:.3f} ms, p90 {r['p90_ms']:.3f} ms, min {r['min_ms']:.3f} ms "
          f"over {r['runs']} runs (numpy {np.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs{', ' + str(blas) if blas else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
