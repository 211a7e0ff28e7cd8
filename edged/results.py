"""The small typed records that flow through the pipeline, one stage to the next."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edged.inference.preprocess import Letterbox


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index sampled by each of `dst` output cells: floor((2i + 1) * src / (2 dst)).

    Centre-aligned nearest neighbour in exact integer arithmetic (cv2's INTER_NEAREST
    and INTER_NEAREST_EXACT round differently for some sizes); the protocol defines
    the mask -> camera mapping by this formula so every language gets the same pixels.
    """
    return (2 * np.arange(dst, dtype=np.int64) + 1) * src // (2 * dst)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image, stamped when the source got it."""

    camera: str
    seq: int  # per-camera frame counter, starts at 0, +1 per captured frame
    image: np.ndarray  # HxWx3 uint8 BGR
    t_wall_ns: int  # capture time, time.time_ns()
    t_mono_ns: int  # capture time, time.monotonic_ns()


def instance_extents(boxes: np.ndarray) -> np.ndarray:
    """The camera pixels each box's instance mask covers: [N, 4] int64 x0, y0, x1, y1.

    x0 = floor(box x1), x1 = max(ceil(box x2), x0) (end exclusive), y alike, so a mask
    is exactly large enough to hold every pixel its box touches. Computed from float32
    boxes, as they are stored and sent, so every side gets the same integers.
    """
    b = np.asarray(boxes, np.float32).astype(np.float64).reshape(-1, 4)
    lo = np.floor(b[:, :2])
    hi = np.maximum(np.ceil(b[:, 2:]), lo)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes in camera pixels, and instance masks for formats that have them."""

    boxes: np.ndarray  # Nx4 float32, x1 y1 x2 y2
    scores: np.ndarray  # N float32
    class_ids: np.ndarray  # N int32
    # None: the model gives no instance masks. Else one uint8 0/1 mask per box, in camera
    # pixels, covering `instance_extents(boxes)[i]` (its top-left pixel is (x0, y0)):
    # 1 where the instance is, 0 elsewhere (always 0 outside the box)
    instance_masks: list[np.ndarray] | None = None

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(slots=True)
class Result:
    """What the model made of one frame."""

    camera: str
    seq: int
    t_capture_wall_ns: int
    t_capture_mono_ns: int
    frame_w: int
    frame_h: int
    detections: Detections
    class_names: tuple[str, ...]  # detection classes, indexed by class_ids
    # class-index mask covering the whole camera frame, at the model's resolution
    # (the letterbox padding cropped away); `mask_camera()` scales it to camera pixels
    mask: np.ndarray | None
    mask_classes: tuple[str, ...]
    letterbox: Letterbox | None
    model_id: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    flags: tuple[str, ...] = ()
    conf_threshold: float | None = None  # the score threshold the detections passed

    def mask_camera(self) -> np.ndarray | None:
        """The class-index mask at camera resolution, by the wire protocol's rule, so the
        daemon and every subscriber get the same pixels."""
        if self.mask is None:
            return None
        mh, mw = self.mask.shape
        if (mh, mw) == (self.frame_h, self.frame_w):
            return self.mask
        return self.mask.take(nearest_indices(mh, self.frame_h), axis=0).take(
            nearest_indices(mw, self.frame_w), axis=1)

    def class_name(self, class_id: int) -> str:
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return str(class_id)
