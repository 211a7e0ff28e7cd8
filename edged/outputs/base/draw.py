"""What the view draws: the camera frame with the class mask blended in, instance masks,
boxes labelled with class name, track id and score, and each track's trail.

Colours are fixed per class index (not per name), so a legend built from the manifest's
class names matches every frame; a mask class named like a background is left clear.
Runs on the view sink's thread; never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edged.results import Frame, Result, instance_extents

MASK_ALPHA = 0.5  # share of the class colour in a masked pixel
BACKGROUND_NAMES = frozenset({"background", "bg", "unlabeled", "unlabelled", "void", "other"})

# BGR, saturated, distinct from grass green and from each other; index 0 is usually the
# background (left clear when its name says so)
MASK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (0, 215, 255), (255, 40, 150), (255, 160, 0), (0, 90, 255),
    (200, 0, 255), (255, 255, 0), (80, 0, 160), (0, 255, 140), (160, 80, 0),
    (255, 120, 255), (0, 160, 160),
)
BOX_COLOURS: tuple[tuple[int, int, int], ...] = (
    (40, 40, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255), (0, 140, 255),
    (255, 80, 80), (120, 255, 120), (200, 200, 255),
)


def mask_colour(index: int) -> tuple[int, int, int]:
    return MASK_COLOURS[index % len(MASK_COLOURS)]


def box_colour(index: int) -> tuple[int, int, int]:
    return BOX_COLOURS[index % len(BOX_COLOURS)]


def is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def css(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True, slots=True)
class Legend:
    """The page's legend: class names with their colours (CSS hex)."""

    mask: tuple[tuple[str, str], ...]  # (name, colour); background classes left out
    boxes: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, result: Result) -> Legend:
        return cls(tuple((n, css(mask_colour(i))) for i, n in enumerate(result.mask_classes)
                         if not is_background(n)),
                   tuple((n, css(box_colour(i))) for i, n in enumerate(result.class_names)))

    def to_json(self) -> dict[str, list[list[str]]]:
        return {"mask": [list(p) for p in self.mask], "boxes": [list(p) for p in self.boxes]}


class Overlay:
    """Draws results onto their frames; keeps a colour table per set of mask classes."""

    def __init__(self) -> None:
        self._lut_for: tuple[str, ...] | None = None
        self._lut = np.zeros((256, 3), np.uint8)
        self._paint = np.zeros(256, np.uint8)  # 1 where the class gets a colour

    def _tables(self, classes: tuple[str, ...]) -> None:
        if classes == self._lut_for:
            return
        self._lut[:] = 0
        self._paint[:] = 0
        for i, name in enumerate(classes[:256]):
            if not is_background(name):
                self._lut[i] = mask_colour(i)
                self._paint[i] = 1
        self._lut_for = classes

    def colour_mask_rgb(self, mask: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
        """HxWx3 RGB: each pixel of a class-index mask in its class's colour (background
        classes black), for the colourised mask topics of Foxglove and ROS 2."""
        self._tables(classes)
        return np.ascontiguousarray(self._lut[mask][..., ::-1])

    def draw(self, frame: Frame, result: Result) -> np.ndarray:
        """A new BGR image: `frame` with `result` drawn on it (the frame is not changed)."""
        img = frame.image
        out = img.copy()
        h, w = img.shape[:2]
        mask = result.mask_camera()
        if mask is not None and mask.shape == (h, w):
            self._tables(result.mask_classes)
            paint = self._paint[mask]
            if paint.any():
                colour = self._lut[mask]
                blended = cv2.addWeighted(img, 1.0 - MASK_ALPHA, colour, MASK_ALPHA, 0.0)
                cv2.copyTo(blended, paint, out)
        det = result.detections
        boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
        ids = np.asarray(det.class_ids).reshape(-1)
        if det.instance_masks is not None and len(boxes):
            for (x0, y0, x1, y1), m, c in zip(instance_extents(boxes), det.instance_masks, ids):
                x0c, y0c, x1c, y1c = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
                if x1c <= x0c or y1c <= y0c:
                    continue
                sub = m[y0c - y0:y1c - y0, x0c - x0:x1c - x0]
                roi = out[y0c:y1c, x0c:x1c]
                tint = np.empty_like(roi)
                tint[:] = box_colour(int(c))
                cv2.copyTo(cv2.addWeighted(roi, 1.0 - MASK_ALPHA, tint, MASK_ALPHA, 0.0),
                           sub, roi)
        scale, thick = label_style(w, h)
        tids = track_ids(result)
        if result.tracks is not None:
            for trail, c in zip(result.tracks.trails, ids):
                if len(trail) > 1:
                    cv2.polylines(out, [np.round(trail).astype(np.int32)], False,
                                  box_colour(int(c)), max(1, thick - 1), cv2.LINE_AA)
        for (x1, y1, x2, y2), c, s, tid in zip(boxes, ids, np.asarray(det.scores).reshape(-1),
                                               tids):
            col = box_colour(int(c))
            p1 = (int(round(x1)), int(round(y1)))
            p2 = (int(round(x2)), int(round(y2)))
            cv2.rectangle(out, p1, p2, col, thick, cv2.LINE_AA)
            label = box_label(result, int(c), float(s), tid)
            lb = label_box(label, p1[0], p1[1], p2[1], scale)
            cv2.rectangle(out, (lb.left, lb.top), (lb.right, lb.bottom), col, cv2.FILLED)
            cv2.putText(out, label, (lb.left + 2, lb.baseline), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
        return out

    def palette_rgb(self, classes: tuple[str, ...]) -> bytes:
        """256 RGB triples: class index -> its colour (background classes and indices
        past the classes black), the PLTE of a palette PNG of the class mask."""
        self._tables(classes)
        return self._lut[:, ::-1].tobytes()


def box_label(result: Result, class_id: int, score: float, track_id: int = 0) -> str:
    """A box's label text, as the view and Foxglove's annotations write it: `robot #7
    0.93` (the track id where the detection has one)."""
    name = result.class_names[class_id] if 0 <= class_id < len(result.class_names) \
        else str(class_id)
    return f"{name} #{track_id} {score:.2f}" if track_id else f"{name} {score:.2f}"


def track_ids(result: Result) -> list[int]:
    """Per detection its track id, 0 for none (all 0 when tracking is off)."""
    if result.tracks is None:
        return [0] * len(result.detections)
    return [int(t) for t in result.tracks.ids.tolist()]


def label_style(w: int, h: int) -> tuple[float, int]:
    """(font scale, line thickness in pixels) of box labels and outlines on a w x h
    image: both grow with the image, so labels stay readable at 1080p."""
    return max(0.4, min(w, h) / 800), max(2, round(min(w, h) / 240))


@dataclass(frozen=True, slots=True)
class LabelBox:
    """Where a box's label is drawn: its filled background, pixels left..right and
    top..bottom inclusive, and the text's baseline row."""

    left: int
    top: int
    right: int
    bottom: int
    baseline: int


def label_box(text: str, x1: int, y1: int, y2: int, scale: float) -> LabelBox:
    """A label above its box's top-left corner, or below the box where there is no room
    above it (a box touching the image's top)."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = y1 - 3 if y1 - th - base - 3 >= 0 else y2 + th + 3
    return LabelBox(x1, ty - th - 2, x1 + tw + 4, ty + base - 1, ty - 1)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
