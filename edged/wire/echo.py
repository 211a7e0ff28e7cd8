"""How `edged echo` (and `edged run --echo`) render one result: a text line, or a JSON
object per line. Here, beside the codec, so a subscriber can print the same."""

from __future__ import annotations

from typing import Any

import numpy as np

from edged.wire.codec import Message


def detection_json(msg: Message) -> list[dict[str, Any]]:
    """One map per detection: class, score, box (camera px); with track ids in the
    message, `track_id` (0: no confirmed track) and `velocity` [vx, vy] in px/s."""
    out: list[dict[str, Any]] = []
    for i, (c, s, b) in enumerate(zip(msg.labels(), msg.scores, msg.boxes)):
        d: dict[str, Any] = {"class": c, "score": round(float(s), 3),
                             "box": [round(float(v), 1) for v in b]}
        if msg.track_ids is not None and msg.velocities is not None:
            d["track_id"] = int(msg.track_ids[i])
            d["velocity"] = [round(float(v), 1) for v in msg.velocities[i]]
        out.append(d)
    return out


def message_json(msg: Message) -> dict[str, Any]:
    """`edged echo --json`'s object for one result."""
    present: list[str] = []
    if msg.mask is not None:
        n = len(msg.mask_classes)
        present = [msg.mask_classes[i] if i < n else str(i) for i in np.unique(msg.mask)]
    out: dict[str, Any] = {"camera": msg.camera, "seq": msg.seq,
                           "latency_ms": round(msg.latency_ms, 2),
                           "detections": detection_json(msg), "mask_classes": present,
                           "model": msg.model, "flags": list(msg.flags)}
    if msg.track_epoch is not None:
        out["track_epoch"] = msg.track_epoch
    return out


def detection_text(msg: Message) -> str:
    """`ball #12 0.91 (+80,-3 px/s), robot 0.55` (the id where it has one), or `-`."""
    parts = []
    for i, (c, s) in enumerate(zip(msg.labels(), msg.scores)):
        tid = 0 if msg.track_ids is None else int(msg.track_ids[i])
        if tid and msg.velocities is not None:
            vx, vy = msg.velocities[i]
            parts.append(f"{c} #{tid} {s:.2f} ({vx:+.0f},{vy:+.0f} px/s)")
        else:
            parts.append(f"{c} {s:.2f}")
    return ", ".join(parts) or "-"
