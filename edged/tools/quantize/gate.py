"""Measuring a candidate: agreement with the fp32 results (and the truth, when known),
alternating timing, and the gate it must pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edged.inference.nms import box_iou
from edged.inference.runner import ModelRunner, time_interleaved
from edged.results import Result
from edged.synth import CLASS_NAMES, SEG_CLASS_NAMES
from edged.tools.evaluate import DetMeter, SegMeter


@dataclass
class Agreement:
    """int8 results against fp32 results (and against the truth when there is one)."""

    pixels: int = 0
    equal: int = 0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((256, 256), np.int64))
    fp32_boxes: int = 0
    int8_boxes: int = 0
    matched: int = 0
    score_delta: float = 0.0
    seg_truth: SegMeter | None = None
    det_truth: DetMeter | None = None

    def add(self, ref: Result, res: Result, truth: Any | None = None) -> None:
        a, b = ref.mask_camera(), res.mask_camera()
        if a is not None and b is not None:
            a64 = np.minimum(a.astype(np.int64), 255).ravel()
            b64 = np.minimum(b.astype(np.int64), 255).ravel()
            self.pixels += a64.size
            self.equal += int(np.count_nonzero(a64 == b64))
            self.confusion += np.bincount(a64 * 256 + b64, minlength=65536).reshape(256, 256)
        da, db = ref.detections, res.detections
        self.fp32_boxes += len(da.scores)
        self.int8_boxes += len(db.scores)
        if len(da.scores) and len(db.scores):
            iou = box_iou(da.boxes, db.boxes)
            iou[da.class_ids[:, None] != db.class_ids[None, :]] = 0.0
            taken = np.zeros(len(db.scores), bool)
            for i in np.argsort(-da.scores):
                cand = np.where(taken, -1.0, iou[i])
                j = int(cand.argmax())
                if cand[j] >= 0.5:
                    taken[j] = True
                    self.matched += 1
                    self.score_delta += abs(float(da.scores[i]) - float(db.scores[j]))
        if truth is not None:
            if self.seg_truth is None:
                self.seg_truth = SegMeter(len(SEG_CLASS_NAMES))
                self.det_truth = DetMeter(len(CLASS_NAMES))
            if b is not None:
                self.seg_truth.add(b, truth.segmentation)
            assert self.det_truth is not None
            self.det_truth.add(db.boxes, db.scores, db.class_ids, truth.boxes, truth.classes)

    def summary(self) -> dict[str, Any]:
        c = self.confusion
        tp = np.diag(c).astype(np.float64)
        denom = c.sum(0) + c.sum(1) - tp
        ious = tp[denom > 0] / denom[denom > 0]
        boxes = max(self.fp32_boxes, self.int8_boxes)
        out: dict[str, Any] = {
            "pixel_agreement": self.equal / self.pixels if self.pixels else None,
            "miou_vs_fp32": float(ious.mean()) if len(ious) else None,
            # matched pairs over the larger of the two box counts: extra boxes count too
            "det_agreement": self.matched / boxes if boxes else None,
            "det_boxes": {"fp32": self.fp32_boxes, "int8": self.int8_boxes,
                          "matched": self.matched},
            "score_delta": self.score_delta / self.matched if self.matched else None,
        }
        if self.seg_truth is not None and self.det_truth is not None:
            out["miou"] = float(np.nanmean(self.seg_truth.iou()))
            aps = self.det_truth.ap()
            out["map50"] = float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else None
        return out


def truth_metrics(results: list[Result], truth: list[Any]) -> dict[str, Any]:
    seg = SegMeter(len(SEG_CLASS_NAMES))
    det = DetMeter(len(CLASS_NAMES))
    for r, t in zip(results, truth):
        m = r.mask_camera()
        if m is not None:
            seg.add(m, t.segmentation)
        d = r.detections
        det.add(d.boxes, d.scores, d.class_ids, t.boxes, t.classes)
    aps = det.ap()
    return {"miou": float(np.nanmean(seg.iou())),
            "map50": float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else None}


def time_alternating(runners: list[ModelRunner], tensor: np.ndarray, runs: int
                     ) -> list[float]:
    """Median ms of each runner on one tensor, runs interleaved (same machine load)."""
    times = time_interleaved(runners, [[tensor]] * len(runners), runs)
    return [float(np.median(t)) for t in times]


@dataclass(frozen=True)
class Gate:
    min_agreement: float = 0.98
    max_miou_drop: float = 0.01  # mIoU points / 100
    # boxes of int8 matched to fp32's (IoU >= 0.5, same class) over the larger count
    min_det_agreement: float = 0.9


# what a candidate keeps in float and how its session runs; the table's `variant` column


DEFAULT_GATE = Gate()  # frozen: one instance serves every search
