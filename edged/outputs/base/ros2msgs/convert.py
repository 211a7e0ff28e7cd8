"""Results and statistics as ROS 2 messages (vision_msgs, diagnostic_msgs): the same
conversion for the live ROS 2 output and for rosbag2 recordings."""

from __future__ import annotations

import numpy as np

from edged.outputs.base.ros2msgs import msgs
from edged.results import Result, instance_extents
from edged.telemetry import CameraSnapshot, CameraState


def detections(r: Result, header: msgs.Header) -> msgs.Detection2DArray:
    """One Detection2D per box: bbox centre and size in camera pixels, one hypothesis
    (class id as text, score); `id` is the detection's track id as text, "" when it has
    none (vision_msgs: the id that stays with an object across messages, may be empty).
    The track's velocity has no field in vision_msgs and is not carried."""
    det = r.detections
    boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    tids = [0] * len(boxes) if r.tracks is None else r.tracks.ids.tolist()
    out = []
    for i, ((x1, y1, x2, y2), c, s) in enumerate(zip(boxes.tolist(),
                                                     np.asarray(det.class_ids).tolist(),
                                                     np.asarray(det.scores).tolist())):
        out.append(msgs.Detection2D(
            header=header,
            results=[msgs.ObjectHypothesisWithPose(
                hypothesis=msgs.ObjectHypothesis(class_id=str(int(c)), score=float(s)))],
            bbox=msgs.BoundingBox2D(center=msgs.Pose2D(
                position=msgs.Point2D((x1 + x2) / 2, (y1 + y2) / 2)),
                size_x=x2 - x1, size_y=y2 - y1),
            id=str(tids[i]) if tids[i] else ""))
    return msgs.Detection2DArray(header=header, detections=out)


def instance_ids(r: Result) -> np.ndarray:
    """uint16 at camera resolution: 0 nowhere, i + 1 where detection i's mask is (a later
    detection over an earlier one)."""
    ids = np.zeros((r.frame_h, r.frame_w), np.uint16)
    masks = r.detections.instance_masks or []
    boxes = np.asarray(r.detections.boxes, np.float32).reshape(-1, 4)
    for i, ((x0, y0, x1, y1), m) in enumerate(zip(instance_extents(boxes), masks)):
        x0c, y0c = max(int(x0), 0), max(int(y0), 0)
        x1c, y1c = min(int(x1), r.frame_w), min(int(y1), r.frame_h)
        if x1c > x0c and y1c > y0c:
            sub = m[y0c - y0:y1c - y0, x0c - x0:x1c - x0].astype(bool)
            ids[y0c:y1c, x0c:x1c][sub] = i + 1
    return ids


def diagnostic_status(camera: str, s: CameraSnapshot) -> msgs.DiagnosticStatus:
    ok = s.state is CameraState.RUNNING
    level = 0 if ok else (2 if s.state is CameraState.FAILED else 1)
    e = s.e2e_ms
    values = {"state": s.state.value, "capture_fps": f"{s.capture_fps:.2f}",
              "processed_fps": f"{s.processed_fps:.2f}",
              "e2e_ms_p50": "" if e.p50 is None else f"{e.p50:.2f}",
              "e2e_ms_p99": "" if e.p99 is None else f"{e.p99:.2f}",
              "budget_ms": f"{s.budget_ms:g}", "published": str(s.published),
              "late": str(s.late), "variant": s.variant, "providers": s.providers,
              **{f"dropped_{k}": str(v) for k, v in s.drops.to_wire().items()}}
    return msgs.DiagnosticStatus(
        level=level, name=f"edged: {camera}", hardware_id=camera,
        message=f"{s.state.value}, {s.processed_fps:.1f} fps",
        values=[msgs.KeyValue(k, v) for k, v in values.items()])
