"""The small typed records that flow through the pipeline, one stage to the next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# how a frame is fitted into the model input
Resize = Literal["letterbox", "stretch"]


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a camera frame was placed into the model input: input = camera * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    content_w: int  # size of the resized frame inside the input
    content_h: int
    input_w: int
    input_h: int

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, input_w: int, input_h: int, mode: Resize = "letterbox",
            align: Literal["center", "topleft"] = "center") -> Letterbox:
        if mode == "stretch":
            return cls(input_w / frame_w, input_h / frame_h, 0, 0, input_w, input_h, input_w,
                       input_h)
        r = min(input_w / frame_w, input_h / frame_h)
        # a 1 x 4000 frame scales its short side to 0.1 pixel: keep at least one pixel
        # (a sliver of stretch), since a 0-pixel resize target is an error, not an image
        cw = max(1, min(input_w, round(frame_w * r)))
        ch = max(1, min(input_h, round(frame_h * r)))
        px, py = ((input_w - cw) // 2, (input_h - ch) // 2) if align == "center" else (0, 0)
        return cls(cw / frame_w, ch / frame_h, px, py, cw, ch, input_w, input_h)

    def boxes_to_camera(self, xyxy: np.ndarray, frame_w: int, frame_h: int) -> np.ndarray:
        """Input-pixel xyxy boxes -> camera-pixel xyxy boxes, clipped to the frame."""
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = (xyxy[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (xyxy[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, frame_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, frame_h, out=out[:, 1::2])
        return out

    def boxes_to_input(self, xyxy: np.ndarray) -> np.ndarray:
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = xyxy[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = xyxy[:, 1::2] * self.scale_y + self.pad_y
        return out

    def crop_mask(self, mask: np.ndarray) -> np.ndarray:
        """The part of an input-sized mask that covers the frame (a view, no copy).

        A mask of another size than the input (e.g. a segmentation head at 1/4
        resolution) is cropped proportionally.
        """
        fy, fx = mask.shape[0] / self.input_h, mask.shape[1] / self.input_w
        y0, x0 = int(round(self.pad_y * fy)), int(round(self.pad_x * fx))
        y1 = int(round((self.pad_y + self.content_h) * fy))
        x1 = int(round((self.pad_x + self.content_w) * fx))
        return mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index sampled by each of `dst` output cells: floor((2i + 1) * src / (2 dst)).

    Centre-aligned nearest neighbour in exact integer arithmetic (cv2's INTER_NEAREST
    and INTER_NEAREST_EXACT round differently for some sizes); the protocol defines
    the mask -> camera mapping by this formula so every language gets the same pixels.
    """
    return (2 * np.arange(dst, dtype=np.int64) + 1) * src // (2 * dst)


def mask_at(mask: np.ndarray | None, frame_w: int, frame_h: int) -> np.ndarray | None:
    """A class-index mask at camera resolution by the protocol's nearest-neighbour rule
    (`nearest_indices`); the mask itself when it already has the frame's size."""
    if mask is None:
        return None
    mh, mw = mask.shape
    if (mh, mw) == (frame_h, frame_w):
        return mask
    return mask.take(nearest_indices(mh, frame_h), axis=0).take(
        nearest_indices(mw, frame_w), axis=1)


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

    def finite(self) -> tuple[Detections, int]:
        """These detections without those whose box or score is NaN/Inf (a format that
        computed them from such outputs), and how many those were."""
        ok = np.isfinite(self.boxes).all(axis=1) & np.isfinite(self.scores)
        if ok.all():
            return self, 0
        masks = (None if self.instance_masks is None
                 else [mk for mk, keep in zip(self.instance_masks, ok) if keep])
        return (Detections(self.boxes[ok], self.scores[ok], self.class_ids[ok], masks),
                int(ok.size - np.count_nonzero(ok)))


@dataclass(frozen=True, slots=True)
class Tracks:
    """The camera's tracker on one frame's detections (`edged.tracking`), per detection
    in detection order: detection i (and its instance mask) belongs to track `ids[i]`."""

    epoch: int  # +1 each time the camera's source reconnects; ids never repeat anyway
    ids: np.ndarray  # N int64: the confirmed track's id, 0 = none (tentative, not tracked)
    velocities: np.ndarray  # Nx2 float32: the track's box centre velocity, px/s; 0 when id 0
    active: int  # confirmed tracks matched in this frame
    # per detection: its track's recent box centres (Kx2 float32 camera px, oldest first,
    # this frame's last), what the view and Foxglove draw as a trail; empty when id 0
    trails: tuple[np.ndarray, ...] = ()


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
    # detections the model gave with NaN/Inf values, dropped (never published)
    nonfinite: int = 0
    tracks: Tracks | None = None  # None: tracking is off for the camera

    @property
    def nonfinite_only(self) -> bool:
        """Every detection the model gave for this frame had NaN/Inf values: an output
        that cannot be used (a broken or overflowing model), not an empty scene."""
        return self.nonfinite > 0 and len(self.detections) == 0

    def mask_camera(self) -> np.ndarray | None:
        """The class-index mask at camera resolution, by the wire protocol's rule, so the
        daemon and every subscriber get the same pixels."""
        return mask_at(self.mask, self.frame_w, self.frame_h)

    def class_name(self, class_id: int) -> str:
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return str(class_id)
