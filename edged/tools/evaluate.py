"""Accuracy on synthetic scenes: segmentation IoU and detection AP@0.5.

Used by `edged eval`, the model card and the tests. Scenes come from `edged.synth`;
the model runs through edged's own `ModelRunner`, so what is measured is what the
daemon publishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edged.inference.nms import box_iou
from edged.synth import CLASS_NAMES, SEG_CLASS_NAMES


@dataclass(slots=True)
class SegMeter:
    """Confusion matrix over all pixels of all frames."""

    num_classes: int
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        n = self.num_classes
        idx = truth.astype(np.int64).ravel() * n + np.minimum(pred.ravel(), n - 1)
        self.confusion += np.bincount(idx, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        tp = np.diag(self.confusion).astype(np.float64)
        denom = self.confusion.sum(0) + self.confusion.sum(1) - tp
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)

    def pixel_accuracy(self) -> float:
        return float(np.diag(self.confusion).sum() / max(self.confusion.sum(), 1))


@dataclass(slots=True)
class DetMeter:
    """Per-class AP at one IoU threshold (all-point interpolation, VOC 2010+)."""

    num_classes: int
    iou_threshold: float = 0.5
    records: list[list[tuple[float, bool]]] = field(init=False)
    n_truth: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.records = [[] for _ in range(self.num_classes)]
        self.n_truth = np.zeros(self.num_classes, np.int64)

    def add(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
            gt_boxes: np.ndarray, gt_classes: np.ndarray) -> None:
        for c in range(self.num_classes):
            gt = gt_boxes[gt_classes == c]
            self.n_truth[c] += len(gt)
            sel = classes == c
            b, s = boxes[sel], scores[sel]
            order = np.argsort(-s)
            b, s = b[order], s[order]
            taken = np.zeros(len(gt), bool)
            iou = box_iou(b, gt)
            for i in range(len(b)):
                hit = False
                if len(gt):
                    cand = np.where(taken, -1.0, iou[i])
                    j = int(cand.argmax())
                    if cand[j] >= self.iou_threshold:
                        taken[j] = True
                        hit = True
                self.records[c].append((float(s[i]), hit))

    def ap(self) -> np.ndarray:
        out = np.full(self.num_classes, np.nan)
        for c in range(self.num_classes):
            if self.n_truth[c] == 0:
                continue
            rec = sorted(self.records[c], key=lambda r: -r[0])
            hits = np.array([h for _, h in rec], bool)
            tp = np.cumsum(hits)
            fp = np.cumsum(~hits)
            recall = tp / self.n_truth[c] if len(rec) else np.zeros(0)
            precision = tp / np.maximum(tp + fp, 1) if len(rec) else np.zeros(0)
            mrec = np.concatenate([[0.0], recall, [1.0]])
            mpre = np.concatenate([[1.0], precision, [0.0]])
            mpre = np.maximum.accumulate(mpre[::-1])[::-1]
            idx = np.flatnonzero(mrec[1:] != mrec[:-1])
            out[c] = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
        return out


def scene_ids(scenes: int, seed: int, per_sequence: int = 4) -> list[tuple[int, int]]:
    """(sequence seed, frame index) pairs: `per_sequence` frames spread over each sequence."""
    out = []
    for i in range(scenes):
        seq = seed + i // per_sequence
        out.append((seq, (i % per_sequence) * 241 + 13))
    return out


def evaluate(runner, scenes: int, seed: int, width: int = 640, height: int = 480,
             progress=None) -> dict:
    """Render `scenes` fresh frames and score the runner's results against the truth."""
    from edged.results import Frame
    from edged.synth import render

    seg = SegMeter(len(SEG_CLASS_NAMES))
    det = DetMeter(len(CLASS_NAMES))
    ms: list[float] = []
    t0 = time.perf_counter()
    for k, (seq, index) in enumerate(scene_ids(scenes, seed)):
        scene = render(seq, index, width, height)
        result = runner.infer(Frame("eval", k, scene.image, 0, 0))
        ms.append(result.timings_ms["inference"])
        mask = result.mask_camera()
        if mask is not None:
            seg.add(mask, scene.segmentation)
        d = result.detections
        det.add(d.boxes, d.scores, d.class_ids, scene.boxes, scene.classes)
        if progress is not None:
            progress(k + 1, scenes)
    ious = seg.iou()
    aps = det.ap()
    return {
        "scenes": scenes, "seed": seed, "size": [width, height],
        "miou": float(np.nanmean(ious)),
        "iou": {n: float(v) for n, v in zip(SEG_CLASS_NAMES, ious)},
        "pixel_accuracy": seg.pixel_accuracy(),
        "map50": float(np.nanmean(aps)),
        "ap50": {n: float(v) for n, v in zip(CLASS_NAMES, aps)},
        "objects": {n: int(v) for n, v in zip(CLASS_NAMES, det.n_truth)},
        "inference_ms_p50": float(np.median(ms)) if ms else float("nan"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
