"""Foxglove schema messages for one result (camera image, class mask, colourised mask,
boxes and labels), stamped with the frame's capture time.

Conventions (Foxglove's, docs/foxglove.md): the class mask is `foxglove.RawImage` mono8
holding class ids at camera resolution (no mask primitive exists), boxes and labels
are `foxglove.ImageAnnotations` in camera pixels, `frame_id` is the camera name.
"""

from __future__ import annotations

import numpy as np
from foxglove.messages import (
    Color,
    CompressedImage,
    ImageAnnotations,
    Point2,
    PointsAnnotation,
    PointsAnnotationType,
    RawImage,
    TextAnnotation,
    Timestamp,
)

from edged.results import Frame, Result
from edged.view.overlay import Overlay, box_colour, encode_jpeg


def stamp(t_ns: int) -> Timestamp:
    return Timestamp(t_ns // 1_000_000_000, t_ns % 1_000_000_000)


def _colour(bgr: tuple[int, int, int], a: float = 1.0) -> Color:
    b, g, r = bgr
    return Color(r=r / 255, g=g / 255, b=b / 255, a=a)


def image(frame: Frame, quality: int) -> CompressedImage:
    return CompressedImage(timestamp=stamp(frame.t_wall_ns), frame_id=frame.camera,
                           data=encode_jpeg(frame.image, quality), format="jpeg")


def class_mask(result: Result, mask: np.ndarray) -> RawImage:
    """mono8 class ids; `mask` is `result.mask_camera()` (camera resolution, the wire
    protocol's nearest-neighbour rule), computed once by the caller for every use."""
    m = np.ascontiguousarray(mask, np.uint8)
    h, w = m.shape
    return RawImage(timestamp=stamp(result.t_capture_wall_ns), frame_id=result.camera,
                    width=w, height=h, encoding="mono8", step=w, data=m.tobytes())


def colour_mask(result: Result, mask: np.ndarray, overlay: Overlay) -> RawImage:
    """rgb8: each class in the view's colour (background black)."""
    rgb = overlay.colour_mask_rgb(mask, result.mask_classes)
    h, w = mask.shape
    return RawImage(timestamp=stamp(result.t_capture_wall_ns), frame_id=result.camera,
                    width=w, height=h, encoding="rgb8", step=3 * w, data=rgb.tobytes())


def image_annotations(result: Result) -> ImageAnnotations:
    """One closed outline and one label per detection, in the class's view colour."""
    ts = stamp(result.t_capture_wall_ns)
    det = result.detections
    boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
    points, texts = [], []
    for (x1, y1, x2, y2), c, s in zip(boxes.tolist(), np.asarray(det.class_ids).tolist(),
                                      np.asarray(det.scores).tolist()):
        col = box_colour(int(c))
        points.append(PointsAnnotation(
            timestamp=ts, type=PointsAnnotationType.LineLoop,
            points=[Point2(x=x1, y=y1), Point2(x=x2, y=y1), Point2(x=x2, y=y2),
                    Point2(x=x1, y=y2)],
            outline_color=_colour(col), thickness=2.0))
        name = result.class_names[int(c)] if 0 <= int(c) < len(result.class_names) \
            else str(int(c))
        texts.append(TextAnnotation(timestamp=ts, position=Point2(x=x1, y=y1),
                                    text=f"{name} {s:.2f}", font_size=14.0,
                                    text_color=Color(r=0, g=0, b=0, a=1),
                                    background_color=_colour(col)))
    return ImageAnnotations(timestamp=ts, points=points, texts=texts)
