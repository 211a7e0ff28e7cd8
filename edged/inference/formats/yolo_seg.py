"""YOLO-seg: ultralytics YOLOv8/11-seg and YOLOv5-seg ONNX exports.

Outputs, no NMS in the graph:

- detections, one of two layouts (manifest option `layout`):
  - `anchors_last` (v8/11): [1, 4+C+M, A]: per anchor cx, cy, w, h in input pixels, C
    class scores (sigmoid applied), M mask coefficients;
  - `rows` (v5): [1, A, 5+C+M]: cx, cy, w, h, objectness, C class scores (multiplied by
    the objectness here), M coefficients.
  A is one prediction per cell of the stride 8/16/32 grids (3549 at 416x416) for
  v8/11, three per cell for v5.
- prototypes [1, M, H/4, W/4] over the whole model input.

Instance mask = sigmoid(coefficients . prototypes) > mask_threshold (manifest option,
default 0.5), sampled at camera pixels inside the box (see `_instances`). The threshold
is applied to the logit (no sigmoid over maps); the logit field is interpolated, which
differs from ultralytics' interpolated probabilities only by sub-pixel amounts at edges.

Plain YOLO detection exports (the same detections output, no prototypes) are the `yolo`
format (`edged.inference.formats.yolo`), served by this adapter with M = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edged.inference.formats._common import (
    TensorInfo,
    batch1,
    class_group_ids,
    class_nms,
    dims,
    generic_classes,
    image_input,
    input_hw,
    is_float,
    is_int,
    logit,
    mask_classes,
    output_index,
    pick,
    preprocess_for,
    xywh_to_xyxy,
    yolo_anchor_counts,
)
from edged.inference.formats._instances import paint, render
from edged.inference.manifest import Manifest
from edged.inference.preprocess import Letterbox
from edged.results import Detections

Layout = Literal["anchors_last", "rows"]
ULTRALYTICS_NAMES = ("output0", "output1")


@dataclass(frozen=True, slots=True)
class Roles:
    det: TensorInfo
    protos: TensorInfo | None
    layout: Layout
    classes: int
    masks: int
    why: str


def detection_roles(inputs: list[TensorInfo], det: TensorInfo, masks: int,
                    strict: bool = True) -> Roles | None:
    """How a [1, a, b] detections tensor reads with M = `masks` coefficients, or None.

    Strict (format: auto): with a fixed input size the anchor count must be one a YOLO
    head gives at that size (the evidence that tells YOLO rows from other [1, N, K]
    tables). Otherwise, and with dynamic axes, the longer axis is the anchors.
    """
    if len(det.shape) != 3 or not is_float(det) or not batch1(det.shape[0]):
        return None
    a, b = det.shape[1], det.shape[2]
    hw = input_hw(inputs) if strict else None
    counts = yolo_anchor_counts(*hw) if hw is not None else {}
    layouts: list[tuple[Layout, object, object]] = [("anchors_last", a, b), ("rows", b, a)]
    for layout, per_anchor, anchors in layouts:
        extra = 4 if layout == "anchors_last" else 5
        if not is_int(per_anchor) or per_anchor - extra - masks < 1:
            continue
        if hw is not None and is_int(anchors):
            head = counts.get(anchors)
            if head is None or (layout == "anchors_last") != head.startswith("1 per"):
                continue
            evidence = f"{anchors} anchors = {head} at {hw[1]}x{hw[0]}"
        elif is_int(anchors):
            if anchors <= per_anchor:
                continue
            evidence = f"{anchors} anchors (not checked against the strides)"
        else:
            evidence = "dynamic anchor count"
        n_cls = per_anchor - extra - masks
        what = ("4 box + {c} classes" if layout == "anchors_last"
                else "4 box + objectness + {c} classes").format(c=n_cls)
        if masks:
            what += f" + {masks} mask coefficients"
        return Roles(det, None, layout, n_cls, masks,
                     f"{det.name} {dims(det)} = {layout} layout ({what}), {evidence}")
    return None


def _proto_ok(inputs: list[TensorInfo], p: TensorInfo) -> bool:
    if len(p.shape) != 4 or not is_float(p) or not is_int(p.shape[1]) or p.shape[0] not in (
            1, None):
        return False
    hw = input_hw(inputs)
    ph, pw = p.shape[2], p.shape[3]
    if hw is None or not (is_int(ph) and is_int(pw)):
        return True
    # ultralytics prototypes are the stride-4 map of the whole input
    return (ph, pw) == (-(-hw[0] // 4), -(-hw[1] // 4))


def roles(inputs: list[TensorInfo], outputs: list[TensorInfo], strict: bool = True
          ) -> Roles | None:
    if image_input(inputs) is None or len(inputs[0].shape) != 4 or len(outputs) != 2:
        return None
    for det, p in ((outputs[0], outputs[1]), (outputs[1], outputs[0])):
        if not _proto_ok(inputs, p):
            continue
        n_masks = p.shape[1]
        assert is_int(n_masks)  # _proto_ok checked it
        r = detection_roles(inputs, det, n_masks, strict)
        if r is not None:
            return Roles(det, p, r.layout, r.classes, r.masks,
                         f"{r.why}; prototypes {p.name} {dims(p)} at 1/4 input resolution")
    return None


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> str | None:
    r = roles(inputs, outputs)
    return None if r is None else f"YOLO-seg: {r.why}"


def fits(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> str | None:
    """For `format: yolo-seg` in the config: any anchor count."""
    r = roles(inputs, outputs, strict=False)
    return None if r is None else f"YOLO-seg: {r.why}"


def names_match(outputs: list[TensorInfo]) -> bool:
    return tuple(o.name for o in outputs) == ULTRALYTICS_NAMES


def manifest_for(inputs: list[TensorInfo], r: Roles, fmt: str) -> Manifest:
    outs = {"detections": r.det.name}
    if r.protos is not None:
        outs["protos"] = r.protos.name
    options: dict[str, object] = {"layout": r.layout}
    if r.protos is not None:
        options["mask_threshold"] = 0.5
    # ultralytics letterboxes with grey 114 padding, RGB, 0..1; conf/iou are its defaults
    return Manifest(format=fmt, input_name=inputs[0].name, outputs=outs,
                    preprocess=preprocess_for(inputs, pad_value=114),
                    classes=generic_classes(r.classes), conf_threshold=0.25, iou_threshold=0.7,
                    max_detections=300, multi_label=False, options=options)


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Manifest:
    r = roles(inputs, outputs) or roles(inputs, outputs, strict=False)
    if r is None:
        raise ValueError("outputs do not follow the yolo-seg layout")
    return manifest_for(inputs, r, "yolo-seg")


class Adapter:
    """Scores -> class-aware NMS -> boxes, and for kept boxes the instance masks."""

    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        self.det_index = output_index(manifest, output_names, "detections", output_names[0])
        self.proto_index = (output_index(manifest, output_names, "protos")
                            if "protos" in manifest.outputs else None)
        layout = manifest.options.get("layout", "anchors_last")
        if layout not in ("anchors_last", "rows"):
            raise ValueError(f"manifest option layout must be 'anchors_last' (YOLOv8/11) or "
                             f"'rows' (YOLOv5), got {layout!r}")
        self.layout: Layout = layout
        self.threshold = logit(float(manifest.options.get("mask_threshold", 0.5)))
        self.group_ids = class_group_ids(manifest)
        self.mask_classes = mask_classes(manifest)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> tuple[Detections, np.ndarray | None]:
        m = self.manifest
        det = outputs[self.det_index]
        protos = None if self.proto_index is None else outputs[self.proto_index][0]
        n_masks = 0 if protos is None else protos.shape[0]
        table = det[0]
        conf = m.conf_threshold
        if self.layout == "anchors_last":
            # [4+C+M, A]: the class rows are contiguous, so max/argmax over them is fast
            n_cls = table.shape[0] - 4 - n_masks
            if n_cls < 1:
                raise ValueError(f"detections {list(det.shape)} leave no class scores with "
                                 f"{n_masks} mask coefficients")
            best = table[4:4 + n_cls].max(0)
            cand = np.flatnonzero(best > conf)
            rows = table[:, cand].T  # [n, 4+C+M], only the candidates are transposed
            scores = rows[:, 4:4 + n_cls]
        else:
            n_cls = table.shape[1] - 5 - n_masks
            if n_cls < 1:
                raise ValueError(f"detections {list(det.shape)} leave no class scores with "
                                 f"{n_masks} mask coefficients")
            cand = np.flatnonzero(table[:, 4] > conf)
            rows = table[cand]
            scores = rows[:, 5:5 + n_cls] * rows[:, 4:5]
        ri, ci, sc = pick(scores, conf, m.multi_label)
        if protos is None and ri.size == 0:
            return Detections.empty(), None
        xyxy = xywh_to_xyxy(rows[ri, :4])
        keep = class_nms(xyxy, sc, ci, self.group_ids, m)
        boxes_in = xyxy[keep]
        boxes = letterbox.boxes_to_camera(boxes_in, frame_w, frame_h)
        scores_k = sc[keep].astype(np.float32)
        ids = ci[keep].astype(np.int32)
        if protos is None:
            return Detections(boxes, scores_k, ids), None
        coefs = rows[ri[keep], rows.shape[1] - n_masks:].astype(np.float32)
        ph, pw = protos.shape[1:]
        # prototypes cover the whole model input
        scale = np.array([pw / letterbox.input_w, 0.0, ph / letterbox.input_h, 0.0], np.float64)
        to_field = np.broadcast_to(scale, (len(keep), 4))

        def field(i: int, rs: slice, cs: slice) -> np.ndarray:
            # only the window under the box; einsum, not a BLAS product: multi-threaded
            # OpenBLAS would fight ONNX Runtime's threads for the cores (one product for
            # all instances measured 2 ms -> 8-16 ms median on a busy 2-core machine)
            return np.einsum("m,mhw->hw", coefs[i], protos[:, rs, cs])

        masks = render(boxes, letterbox, (ph, pw), to_field, field, self.threshold)
        class_mask = paint(masks, boxes, ids, scores_k, letterbox, frame_w, frame_h)
        return Detections(boxes, scores_k, ids, instance_masks=masks), class_mask
