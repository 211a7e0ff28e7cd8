"""The small typed records that flow through the pipeline, one stage to the next."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edged.preprocess import Letterbox


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image, stamped when the source got it."""

    camera: str
    seq: int  # per-camera frame counter, starts at 0, +1 per captured frame
    image: np.ndarray  # HxWx3 uint8 BGR
    t_wall_ns: int  # capture time, time.time_ns()
    t_mono_ns: int  # capture time, time.monotonic_ns()


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes in camera pixels."""

    boxes: np.ndarray  # Nx4 float32, x1 y1 x2 y2
    scores: np.ndarray  # N float32
    class_ids: np.ndarray  # N int32

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

    def mask_camera(self) -> np.ndarray | None:
        """The class-index mask at camera resolution (nearest neighbour)."""
        if self.mask is None:
            return None
        if self.mask.shape == (self.frame_h, self.frame_w):
            return self.mask
        return cv2.resize(self.mask, (self.frame_w, self.frame_h), interpolation=cv2.INTER_NEAREST)

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)
