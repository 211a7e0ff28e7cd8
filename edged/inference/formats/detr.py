"""NMS-free query detectors (DETR family: RT-DETR, RF-DETR, D-FINE, DEIM, LW-DETR).

A fixed set of Q object queries, boxes as cx, cy, w, h normalised to the input (0..1),
no NMS (one-to-one matching already makes queries distinct). Layouts (manifest option
`layout`):

- `topk`: one output [1, Q, 6] = cx cy w h score class, the decoder's own top-k
  (ultralytics' RT-DETR export, 8.4): kept where score > conf, in order;
- `scores`: one output [1, Q, 4+C], C class probabilities (older ultralytics RT-DETR
  exports): each query's best class;
- `logits`: boxes [1, Q, 4] and class logits [1, Q, C] (RF-DETR's `dets`/`labels`,
  RT-DETR/D-FINE exports without their post-processor), optionally instance mask
  logits [1, Q, h, w] over the whole input (RF-DETR segmentation `masks`): sigmoid,
  then, like RF-DETR's and RT-DETR's own post-processors, the top max_detections
  (query, class) pairs over all queries and classes (a query may give two classes),
  kept above conf.

Pre-processing is a stretch (no letterbox) to the input size, as these models train;
RF-DETR and D-FINE also expect ImageNet mean/std, which the graph does not say (the
manifest or `model.preprocess` must). [1, Q, 6] also fits an end-to-end YOLO export
(x1 y1 x2 y2 in pixels): ultralytics' metadata (`head`) tells them apart, otherwise it
is an error that asks for model.format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from edged.inference.formats._common import (
    Decoded,
    Hints,
    TensorInfo,
    batch1,
    dims,
    finite_candidates,
    from_ultralytics,
    generic_classes,
    image_input,
    input_hw,
    is_float,
    is_int,
    logit,
    mask_classes,
    output_index,
    preprocess_for,
    ultralytics_imgsz,
    yolo_anchor_counts,
)
from edged.inference.formats._instances import query_masks
from edged.inference.manifest import Manifest
from edged.results import Detections, Letterbox

Layout = Literal["topk", "scores", "logits"]
LAYOUTS: tuple[Layout, ...] = ("topk", "scores", "logits")
RFDETR_NAMES = {"dets", "labels", "masks"}


@dataclass(frozen=True, slots=True)
class Roles:
    layout: Layout
    boxes: TensorInfo  # [1, Q, 4+...]
    logits: TensorInfo | None
    masks: TensorInfo | None
    classes: int  # 0: the class is an id column (topk)
    why: str


def _queries(t: TensorInfo, inputs: list[TensorInfo]) -> bool:
    """[1, Q, K] with Q a plausible query count: not a YOLO head's anchor count."""
    if len(t.shape) != 3 or not is_float(t) or not batch1(t.shape[0]):
        return False
    q = t.shape[1]
    if not is_int(q):
        return True
    hw = input_hw(inputs)
    return 1 <= q <= 5000 and (hw is None or q not in yolo_anchor_counts(*hw))


def roles(inputs: list[TensorInfo], outputs: list[TensorInfo],
          hints: Hints | None = None) -> Roles | None:
    if image_input(inputs) is None or len(inputs[0].shape) != 4:
        return None
    if hints is not None and hints.layout is not None and hints.layout not in LAYOUTS:
        return None
    if len(outputs) == 1:
        o = outputs[0]
        if not _queries(o, inputs) or not is_int(o.shape[2]) or o.shape[2] < 5:
            return None
        if o.shape[2] == 6:
            return Roles("topk", o, None, None, 0,
                         f"{o.name} {dims(o)} = topk layout (cx cy w h normalised, score, "
                         f"class; the decoder's own top-k)")
        if is_int(o.shape[1]) and o.shape[1] <= o.shape[2]:
            return None  # more columns than rows: a channels-first YOLO head, not queries
        n_scores = o.shape[2] - 4
        return Roles("scores", o, None, None, n_scores,
                     f"{o.name} {dims(o)} = scores layout (cx cy w h normalised + {n_scores} "
                     f"class probabilities per query)")
    if len(outputs) not in (2, 3):
        return None
    boxes = [o for o in outputs if _queries(o, inputs) and o.shape[2] == 4]
    logits = [o for o in outputs if _queries(o, inputs) and is_int(o.shape[2])
              and o.shape[2] != 4]
    masks = [o for o in outputs if len(o.shape) == 4 and is_float(o) and batch1(o.shape[0])]
    if len(boxes) != 1 or len(logits) != 1 or len(masks) != len(outputs) - 2:
        return None
    b, lg = boxes[0], logits[0]
    q = b.shape[1]
    if lg.shape[1] != q or (masks and masks[0].shape[1] != q):
        return None
    n_cls = lg.shape[2]
    assert is_int(n_cls)
    why = (f"boxes {b.name} {dims(b)} (cx cy w h normalised) and class logits {lg.name} "
           f"{dims(lg)}, one row per query")
    if masks:
        why += f", instance mask logits {masks[0].name} {dims(masks[0])}"
    return Roles("logits", b, lg, masks[0] if masks else None, n_cls,
                 f"logits layout: {why}")


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    r = roles(inputs, outputs, hints)
    return None if r is None else f"DETR-style query detector: {r.why}"


def names_match(outputs: list[TensorInfo]) -> bool:
    return {o.name for o in outputs} <= RFDETR_NAMES and len(outputs) >= 2


def metadata_match(hints: Hints | None) -> bool | None:
    """ultralytics writes its head's class: True for its RT-DETR decoder, False for any
    other ultralytics head, None when the metadata says nothing."""
    if hints is None or not from_ultralytics(hints.metadata):
        return None
    return "rtdetr" in hints.metadata.get("head", "").lower()


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    r = roles(inputs, outputs, hints)
    if r is None:
        raise ValueError("outputs do not follow a DETR layout")
    outs = {"boxes": r.boxes.name}
    if r.logits is not None:
        outs["logits"] = r.logits.name
    if r.masks is not None:
        outs["masks"] = r.masks.name
    options: dict[str, object] = {"layout": r.layout}
    if r.masks is not None:
        options["mask_threshold"] = 0.5
    pre = preprocess_for(inputs, resize="stretch")
    size = None if hints is None else ultralytics_imgsz(hints.metadata)
    if input_hw(inputs) is None and size is not None:
        pre = replace(pre, input_h=size[0], input_w=size[1])
    # ultralytics' predictor defaults (conf 0.25, max_det 300); RF-DETR's own are alike
    return Manifest(format="detr", input_name=inputs[0].name, outputs=outs, preprocess=pre,
                    classes=generic_classes(r.classes), conf_threshold=0.25,
                    max_detections=300, multi_label=r.layout == "logits", options=options)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # the tanh form: 1 / (1 + exp(-x)) overflows (and warns) for x below about -88
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float32)))
    return out


class Adapter:
    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        layout = manifest.options.get("layout", "topk")
        if layout not in LAYOUTS:
            raise ValueError(f"detr: layout must be one of {', '.join(LAYOUTS)}, "
                             f"got {layout!r}")
        self.layout: Layout = layout
        self.boxes_index = output_index(manifest, output_names, "boxes", output_names[0])
        self.logits_index = (output_index(manifest, output_names, "logits")
                             if layout == "logits" else None)
        self.masks_index = (output_index(manifest, output_names, "masks")
                            if "masks" in manifest.outputs else None)
        self.threshold = logit(float(manifest.options.get("mask_threshold", 0.5)))
        self.mask_classes = mask_classes(manifest)

    def _select(self, outputs: list[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query index, cx cy w h normalised, score, class) of the kept detections."""
        m = self.manifest
        table = outputs[self.boxes_index][0]
        if self.layout == "topk":
            keep = np.flatnonzero(table[:, 4] > m.conf_threshold)[:m.max_detections]
            return keep, table[keep, :4], table[keep, 4], table[keep, 5].astype(np.int32)
        if self.layout == "scores":
            scores = table[:, 4:]
            ids = scores.argmax(1)
            best = scores[np.arange(len(ids)), ids]
            keep = np.flatnonzero(best > m.conf_threshold)
            keep = keep[np.argsort(-best[keep], kind="stable")][:m.max_detections]
            return keep, table[keep, :4], best[keep], ids[keep].astype(np.int32)
        assert self.logits_index is not None
        probs = _sigmoid(outputs[self.logits_index][0])
        n_q, n_c = probs.shape
        if m.multi_label:
            flat = probs.reshape(-1)
            k = min(m.max_detections, flat.size)
            top = np.argpartition(-flat, k - 1)[:k]
            top = top[np.argsort(-flat[top], kind="stable")]
            top = top[flat[top] > m.conf_threshold]
            q, c = np.divmod(top, n_c)
            return q, table[q, :4], flat[top], c.astype(np.int32)
        ids = probs.argmax(1)
        best = probs[np.arange(n_q), ids]
        keep = np.flatnonzero(best > m.conf_threshold)
        keep = keep[np.argsort(-best[keep], kind="stable")][:m.max_detections]
        return keep, table[keep, :4], best[keep], ids[keep].astype(np.int32)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> Decoded:
        q, cxcywh, scores, ids = self._select(outputs)
        ok, bad = finite_candidates(cxcywh, scores)  # before the box arithmetic
        q, cxcywh, scores, ids = q[ok], cxcywh[ok], scores[ok], ids[ok]
        norm = cxcywh.astype(np.float32)
        xyxy = np.empty_like(norm)
        xyxy[:, :2] = norm[:, :2] - norm[:, 2:] / 2
        xyxy[:, 2:] = norm[:, :2] + norm[:, 2:] / 2
        xyxy[:, 0::2] *= letterbox.input_w  # normalised to the whole input
        xyxy[:, 1::2] *= letterbox.input_h
        boxes = letterbox.boxes_to_camera(xyxy, frame_w, frame_h)
        dets_scores = scores.astype(np.float32)
        if self.masks_index is None:
            return Decoded(Detections(boxes, dets_scores, ids), None, bad)
        masks, class_mask = query_masks(outputs[self.masks_index][0], q, boxes, ids,
                                        dets_scores, letterbox, frame_w, frame_h,
                                        self.threshold)
        return Decoded(Detections(boxes, dets_scores, ids, instance_masks=masks), class_mask,
                       bad)
