"""The synthetic renderer across architectures: dump the images of a fixed set of scenes
on one machine, compare two dumps.

    python tools/arm64/synth_compare.py dump OUT.npz
    python tools/arm64/synth_compare.py compare A.npz B.npz   (exit 1 when images differ)
"""

from __future__ import annotations

import json
import sys

import numpy as np

# seeds of the demo's evaluation (1_000_000...) and training ranges, two sizes
SCENES = [(seed, index, w, h) for seed in (0, 7, 1_000_000, 1_000_100)
          for index in (0, 5) for (w, h) in ((640, 480), (320, 240))]


def dump(path: str) -> None:
    from edged import synth

    arrays: dict[str, np.ndarray] = {}
    for i, (seed, index, w, h) in enumerate(SCENES):
        scene = synth.render(seed, index, w, h)
        arrays[f"img{i}"] = scene.image
        arrays[f"seg{i}"] = scene.segmentation
    np.savez_compressed(path, **arrays)


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    worst, differing, total, seg_diff = 0, 0, 0, 0
    for i in range(len(SCENES)):
        d = np.abs(a[f"img{i}"].astype(np.int16) - b[f"img{i}"].astype(np.int16))
        worst = max(worst, int(d.max()))
        differing += int((d > 0).sum())
        total += d.size
        seg_diff += int((a[f"seg{i}"] != b[f"seg{i}"]).sum())
    print(json.dumps({"scenes": len(SCENES), "max_abs_diff": worst,
                      "differing_values": differing, "values": total,
                      "differing_fraction": differing / total,
                      "segmentation_pixels_differing": seg_diff}))
    # labels: at most a few pixels in a million (a homography's last bit, see the docs)
    return 0 if worst == 0 and seg_diff <= total // 3 // 100_000 else 1


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
