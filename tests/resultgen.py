"""Results as a model gives them, for the tests of the codec and of every output."""

from __future__ import annotations

import time

import numpy as np

from edged.results import Detections, Letterbox, Result

CLASSES = ("ball", "goalpost", "robot")
MASK_CLASSES = ("background", "field", "lines")


def regions_mask(h: int = 312, w: int = 416) -> np.ndarray:
    """A class map like a segmentation head gives: large uniform regions."""
    m = np.zeros((h, w), np.uint8)
    m[h // 3:, :] = 1
    m[h // 2:h // 2 + 4, :] = 2
    m[:, w // 2:w // 2 + 3] = 2
    yy, xx = np.mgrid[:h, :w]
    m[(yy - 2 * h // 3) ** 2 + (xx - w // 2) ** 2 < (h // 6) ** 2] = 2
    return m


def make_result(camera: str = "cam1", seq: int = 7, mask: np.ndarray | None = None,
                n_det: int = 3, frame: tuple[int, int] = (640, 480)) -> Result:
    rng = np.random.default_rng(seq)
    xy = rng.uniform(0, 300, (n_det, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 100, (n_det, 2))], axis=1).astype(np.float32)
    det = Detections(boxes, rng.uniform(0, 1, n_det).astype(np.float32),
                     rng.integers(0, len(CLASSES), n_det).astype(np.int32))
    return Result(camera=camera, seq=seq, t_capture_wall_ns=time.time_ns() - 5_000_000,
                  t_capture_mono_ns=time.monotonic_ns(), frame_w=frame[0], frame_h=frame[1],
                  detections=det, class_names=CLASSES, mask=mask, mask_classes=MASK_CLASSES,
                  letterbox=Letterbox.fit(frame[0], frame[1], 416, 416), model_id="yoeo-test@1",
                  timings_ms={"preprocess": 0.7, "inference": 12.25, "queue": 0},
                  flags=("late",))
