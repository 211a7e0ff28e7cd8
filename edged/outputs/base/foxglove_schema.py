"""Foxglove schema messages for one result (camera image, class mask, colour mask,
boxes and labels), stamped with the frame's capture time; shared by Foxglove live and
the MCAP recorder.

Conventions (Foxglove's): the class mask is `foxglove.RawImage` mono8 holding class ids
at camera resolution, for machines (no mask primitive exists, and a viewer shows ids
0-2 as near-black); the colour mask is a `foxglove.CompressedImage` PNG in the view's
colours, for people; boxes and labels are `foxglove.ImageAnnotations` in camera pixels,
drawn where edged's own view draws them; `frame_id` is the camera name.
"""

from __future__ import annotations

from typing import Any

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

from edged.outputs.base.draw import (
    Overlay,
    box_colour,
    box_label,
    encode_jpeg,
    label_box,
    label_style,
    track_ids,
)
from edged.outputs.base.png import with_palette
from edged.results import Frame, Result
from edged.telemetry import StatsReport

STATS_TOPIC = "/edged/stats"  # the daemon's statistics, live and in recordings


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


def colour_mask(result: Result, png: bytes, overlay: Overlay) -> CompressedImage:
    """PNG: each class in the view's colour (background classes black), what a person
    looks at; `png` is the class ids' grey PNG (`SharedMask.png()`, encoded once for
    every sink), given the view's palette here."""
    return CompressedImage(timestamp=stamp(result.t_capture_wall_ns), frame_id=result.camera,
                           data=with_palette(png, overlay.palette_rgb(result.mask_classes)),
                           format="png")


def image_annotations(result: Result) -> ImageAnnotations:
    """One closed outline and one label per detection, in the class's view colour, as
    edged's view draws them: the outline as thick, the label's background band at the
    same place (above the box's top-left corner, or below the box at the image's top)
    and as tall; a tracked detection's label has its track id, and its trail (the
    track's recent box centres) is a line strip. Foxglove's `TextAnnotation.position` is
    the label's bottom-left corner (pixel edges: the view fills rows top..bottom, so it
    is bottom + 1)."""
    ts = stamp(result.t_capture_wall_ns)
    det = result.detections
    boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
    scale, thick = label_style(result.frame_w, result.frame_h)
    points, texts = [], []
    classes = np.asarray(det.class_ids).tolist()
    if result.tracks is not None:
        for trail, c in zip(result.tracks.trails, classes):
            if len(trail) > 1:
                points.append(PointsAnnotation(
                    timestamp=ts, type=PointsAnnotationType.LineStrip,
                    points=[Point2(x=x, y=y) for x, y in trail.tolist()],
                    outline_color=_colour(box_colour(int(c))),
                    thickness=float(max(1, thick - 1))))
    for (x1, y1, x2, y2), c, s, tid in zip(boxes.tolist(), classes,
                                           np.asarray(det.scores).tolist(), track_ids(result)):
        col = box_colour(int(c))
        points.append(PointsAnnotation(
            timestamp=ts, type=PointsAnnotationType.LineLoop,
            points=[Point2(x=x1, y=y1), Point2(x=x2, y=y1), Point2(x=x2, y=y2),
                    Point2(x=x1, y=y2)],
            outline_color=_colour(col), thickness=float(thick)))
        text = box_label(result, int(c), float(s), tid)
        lb = label_box(text, int(round(x1)), int(round(y1)), int(round(y2)), scale)
        texts.append(TextAnnotation(timestamp=ts, position=Point2(x=lb.left, y=lb.bottom + 1),
                                    text=text, font_size=float(lb.bottom + 1 - lb.top),
                                    text_color=Color(r=0, g=0, b=0, a=1),
                                    background_color=_colour(col)))
    return ImageAnnotations(timestamp=ts, points=points, texts=texts)


# The `/edged/stats` channel (JSON): one schema, named alike live and in recordings, so
# a viewer's plots and message paths know every field (docs/protocol.md, "Statistics").
STATS_SCHEMA_NAME = "edged.Stats"
_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}
_MS = {"type": ["number", "null"]}


def _counts(*keys: str) -> dict[str, Any]:
    return {"type": "object", "properties": dict.fromkeys(keys, _COUNT)}


CAMERA_STATS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "one camera's figures: rates over the window, counts since start",
    "properties": {
        "state": {"type": "string",
                  "enum": ["starting", "running", "reconnecting", "stopped", "failed"]},
        "capture_fps": _NUMBER,
        "processed_fps": _NUMBER,
        "published": _COUNT,
        "late": _COUNT,
        "drops": _counts("overwritten", "stale", "late", "errors"),
        "e2e_ms": {"type": "object", "description": "capture to send, last 512 results",
                   "properties": {"p50": _MS, "p90": _MS, "p99": _MS}},
        "stages_ms_p50": {"type": "object",
                          "properties": dict.fromkeys(("queue", "preprocess", "inference",
                                                       "postprocess", "encode"), _NUMBER),
                          "additionalProperties": _NUMBER},
        "budget_ms": _NUMBER,
        "variant": {"type": "string"},
        "budget_misses": _COUNT,
        "capture": _counts("corrupt", "reconnects", "stalls", "crashes", "stuck_readers"),
        "providers": {"type": "string"},
    },
}


def stats_message(report: StatsReport) -> dict[str, Any]:
    """The `STATS_TOPIC` message (JSON, `stats_schema`) of one stats window."""
    return {"interval_s": report.snapshot.interval_s, "cameras": report.snapshot.to_wire()}


def stats_schema(cameras: list[str]) -> dict[str, Any]:
    """JSON schema of the stats message: `cameras` maps each camera name to its figures.
    The configured names are listed as properties (so a viewer offers
    `cameras.front.processed_fps`); any other name has the same item schema."""
    return {
        "type": "object",
        "title": STATS_SCHEMA_NAME,
        "properties": {
            "interval_s": {"type": "number", "description": "the window the rates cover"},
            "cameras": {"type": "object",
                        "properties": dict.fromkeys(cameras, CAMERA_STATS_SCHEMA),
                        "additionalProperties": CAMERA_STATS_SCHEMA},
        },
    }
