"""Non-maximum suppression on xyxy boxes, vectorised per kept box."""

from __future__ import annotations

import numpy as np

# the class offset ultralytics and yolov5 add to boxes for class-aware NMS (max_wh)
ULTRALYTICS_MAX_WH = 7680.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        groups: np.ndarray | None = None, max_keep: int | None = None,
        float32_offsets: bool = False) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first.

    Boxes only suppress boxes of the same group (class-aware NMS; several classes may
    share a group, e.g. robot_red/robot_blue/robot_unknown). Each step compares one kept
    box with all remaining ones in numpy: the Python loop runs once per *kept* box,
    never per candidate.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, np.int64)
    if float32_offsets:
        # exactly as ultralytics' and yolov5's NMS: boxes + group * 7680 in float32, IoU
        # in float32. The offset costs precision (float32 steps of 1/32 px at class 37),
        # which decides borderline IoUs; serving their models, edged decides them alike
        off = np.zeros(n, np.float32) if groups is None else (
            groups.astype(np.float32) * np.float32(ULTRALYTICS_MAX_WH))
        b32 = boxes.astype(np.float32) + off[:, None]
        return _greedy(b32[:, 0], b32[:, 1], b32[:, 2], b32[:, 3], scores, iou_threshold,
                       n, max_keep, np.float32)
    if groups is not None and n > 1:
        # shift each group to its own region of the plane so that groups never overlap
        span = float(np.max(boxes[:, 2:]) - min(0.0, float(np.min(boxes[:, :2])))) + 1.0
        boxes = boxes + (groups.astype(np.float64) * span)[:, None]
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    return _greedy(x1, y1, x2, y2, scores, iou_threshold, n, max_keep, np.float64)


def _greedy(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray,
            scores: np.ndarray, iou_threshold: float, n: int, max_keep: int | None,
            dtype: type) -> np.ndarray:
    if dtype is np.float32:
        area = (x2 - x1) * (y2 - y1)  # torchvision's: no clamp
    else:
        area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    limit = n if max_keep is None else max_keep
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        if dtype is np.float32:
            # torchvision's test, `iou > threshold` suppresses: a NaN (two empty boxes)
            # does not
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = inter / (area[i] + area[rest] - inter)
            order = rest[~(iou > iou_threshold)]
        else:
            iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
            order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between xyxy boxes a (N) and b (M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), 1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), 1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
