"""YOEO: one encoder, YOLO boxes + semantic segmentation (Hamburg Bit-Bots contract).

Outputs: `Detections` float32 [1, N, 5+C] rows (cx, cy, w, h in input pixels,
objectness, C per-class sigmoid scores not yet multiplied by objectness) and
`Segmentations`: uint8 class ids [1, H, W], a float mask of class ids, or logits
[1, C, H, W] (argmax done here). No NMS in the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edged.inference.formats._common import (
    Decoded,
    Hints,
    class_group_ids,
    class_nms,
    finite_rows,
    output_index,
    pick,
    xywh_to_xyxy,
)
from edged.inference.manifest import Manifest
from edged.inference.preprocess import PreprocessSpec
from edged.results import Detections, Letterbox

if TYPE_CHECKING:
    from edged.inference.formats import TensorInfo

DEFAULT_CLASSES = ("ball", "goalpost", "robot")
DEFAULT_SEG_CLASSES = ("background", "lines", "field")


def _is_mask(o: TensorInfo, in_h: object, in_w: object) -> bool:
    """[1,H,W] or [1,C,H,W] whose H:W is the input's (a full- or reduced-size map)."""
    if len(o.shape) not in (3, 4):
        return False
    h, w = o.shape[-2], o.shape[-1]
    if not (isinstance(h, int) and isinstance(w, int)
            and isinstance(in_h, int) and isinstance(in_w, int)):
        return len(o.shape) == 4 or o.dtype == "uint8"
    return h * in_w == w * in_h


def _roles(inputs: list[TensorInfo], outputs: list[TensorInfo]
           ) -> tuple[TensorInfo, TensorInfo] | None:
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 2:
        return None
    in_h, in_w = inputs[0].shape[2], inputs[0].shape[3]
    masks = [o for o in outputs if _is_mask(o, in_h, in_w)]
    dets = [o for o in outputs if o not in masks and len(o.shape) == 3
            and o.dtype.startswith("float") and isinstance(o.shape[2], int) and o.shape[2] >= 6]
    if len(dets) != 1 or len(masks) != 1:
        return None
    det, mask = dets[0], masks[0]
    n_rows, n_cols = det.shape[1], det.shape[2]
    # n_cols is an int: dets keeps only heads with a fixed width
    if isinstance(n_rows, int) and isinstance(n_cols, int) and n_rows <= n_cols:
        return None  # more columns than rows: a channels-first head (YOLOv8-seg), not rows
    if len(mask.shape) == 4 and mask.shape[1] == n_rows:
        return None  # one map per detection row: per-query instance masks (SparseInst)
    return det, mask


def names_match(outputs: list[TensorInfo]) -> bool:
    return {o.name for o in outputs} == {"Detections", "Segmentations"}


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    roles = _roles(inputs, outputs)
    if roles is None:
        return None
    det, mask = roles
    n_cols = det.shape[2]
    assert isinstance(n_cols, int)  # _roles keeps only heads with a fixed width
    kind = "logits [1,C,H,W]" if len(mask.shape) == 4 else f"{mask.dtype} class map [1,H,W]"
    return (f"one image input, box rows {det.name} [1,N,{n_cols}] = 5 + "
            f"{n_cols - 5} classes, and segmentation {mask.name} as {kind}")


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    roles = _roles(inputs, outputs)
    if roles is None:
        raise ValueError("outputs do not follow the yoeo layout")
    det, mask = roles
    n_cols = det.shape[2]
    assert isinstance(n_cols, int)  # _roles keeps only heads with a fixed width
    n_cls = n_cols - 5
    h, w = inputs[0].shape[2], inputs[0].shape[3]
    pre = PreprocessSpec(input_w=w if isinstance(w, int) else 416,
                         input_h=h if isinstance(h, int) else 416)
    classes = DEFAULT_CLASSES if n_cls == 3 else tuple(f"class{i}" for i in range(n_cls))
    return Manifest(format="yoeo", input_name=inputs[0].name,
                    outputs={"detections": det.name, "segmentation": mask.name},
                    preprocess=pre, classes=classes, seg_classes=DEFAULT_SEG_CLASSES)


class Adapter:
    """Post-processing of YOEO outputs: multi-label scoring, class-aware NMS, mapping back."""

    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        self.det_index = output_index(manifest, output_names, "detections", "Detections")
        self.seg_index = output_index(manifest, output_names, "segmentation", "Segmentations")
        self.group_ids = class_group_ids(manifest)

    def detections(self, rows: np.ndarray, letterbox: Letterbox, frame_w: int,
                   frame_h: int) -> tuple[Detections, int]:
        """The detections, and how many candidate rows were dropped for NaN/Inf values."""
        m = self.manifest
        conf = m.conf_threshold
        rows = rows.reshape(-1, rows.shape[-1])
        obj = rows[:, 4]
        cand = np.flatnonzero(obj > conf)
        if cand.size == 0:
            return Detections.empty(), 0
        sel, bad = finite_rows(rows[cand])
        if not len(sel):
            return Detections.empty(), bad
        # scores = class x objectness, each class above the threshold (multi-label)
        ri, ci, sc = pick(sel[:, 5:] * sel[:, 4:5], conf, m.multi_label)
        if ri.size == 0:
            return Detections.empty(), bad
        xyxy = xywh_to_xyxy(sel[ri, :4])
        keep = class_nms(xyxy, sc, ci, self.group_ids, m)
        return Detections(letterbox.boxes_to_camera(xyxy[keep], frame_w, frame_h),
                          sc[keep].astype(np.float32), ci[keep].astype(np.int32)), bad

    @staticmethod
    def class_map(seg: np.ndarray) -> np.ndarray:
        """Any accepted segmentation output -> HxW uint8 class ids."""
        if seg.ndim == 4:  # logits [1, C, H, W]
            return seg[0].argmax(0).astype(np.uint8)
        seg = seg[0] if seg.ndim == 3 else seg
        if seg.dtype == np.uint8:
            return seg
        if np.issubdtype(seg.dtype, np.floating):
            # float class ids (TensorRT-friendly export); NaN/Inf would make the cast
            # undefined (and warn): such pixels become class 0
            ids = np.nan_to_num(np.rint(seg), nan=0.0, posinf=0.0, neginf=0.0)
            return np.clip(ids, 0, 255).astype(np.uint8)
        return seg.astype(np.uint8)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> Decoded:
        dets, bad = self.detections(outputs[self.det_index], letterbox, frame_w, frame_h)
        mask = letterbox.crop_mask(self.class_map(outputs[self.seg_index]))
        return Decoded(dets, mask, bad)
