"""SparseInst exports: a fixed set of N instance queries, no boxes, no NMS.

Outputs, matched by shape:

- `masks` [1, N, H, W] (or [N, H, W]): per-query mask probabilities over the whole
  input, at any resolution (1/4 of the input in the reference export); manifest option
  `mask_activation: "sigmoid"` if the export gives logits instead;
- `scores` [1, N] (or [N]) with `labels` [1, N] (int), or scores [1, N, C]
  (per-class probabilities; the best class is taken).

Every query above `conf_threshold` is a detection (best first, at most max_detections;
no NMS: the model's one-to-one matching already makes queries distinct). Its box is the
extent of its mask (cells above `mask_threshold`, default 0.5) in input pixels, mapped to
the camera; queries whose mask is empty are dropped. Pre-processing default: ImageNet
mean/std as the reference export expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.inference.formats._common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Decoded,
    FormatError,
    Hints,
    TensorInfo,
    batch1,
    dims,
    finite_candidates,
    generic_classes,
    image_input,
    is_float,
    is_int,
    logit,
    mask_classes,
    output_index,
    preprocess_for,
)
from edged.inference.formats._instances import query_masks
from edged.inference.manifest import Manifest
from edged.results import Detections, Letterbox


@dataclass(frozen=True, slots=True)
class Roles:
    masks: TensorInfo
    scores: TensorInfo
    labels: TensorInfo | None
    classes: int | None  # from a [1, N, C] score table


def roles(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Roles | None:
    if image_input(inputs) is None or len(inputs[0].shape) != 4 or len(outputs) not in (2, 3):
        return None
    fours = [o for o in outputs if is_float(o) and len(o.shape) == 4 and batch1(o.shape[0])]
    threes = [o for o in outputs if is_float(o) and len(o.shape) == 3]
    if len(fours) == 1:
        masks, batched = fours[0], True
    elif not fours and len(threes) == 1 and all(len(o.shape) == 1 for o in outputs
                                                 if o is not threes[0]):
        masks, batched = threes[0], False  # an export that dropped the batch axis
    else:
        return None
    n = masks.shape[1] if batched else masks.shape[0]
    rest = [o for o in outputs if o is not masks]

    def queries(o: TensorInfo) -> object:  # the query axis of a score/label tensor
        return o.shape[1] if batched else o.shape[0]

    if batched and not all(len(o.shape) >= 2 and batch1(o.shape[0]) for o in rest):
        return None
    if not all(queries(o) == n for o in rest):
        return None
    if len(rest) == 2:
        flat = [o for o in rest if len(o.shape) == (2 if batched else 1)]
        scores = [o for o in flat if is_float(o)]
        labels = [o for o in flat if not is_float(o)]
        if len(scores) != 1 or len(labels) != 1:
            return None
        return Roles(masks, scores[0], labels[0], None)
    s = rest[0]
    if not is_float(s):
        return None
    if len(s.shape) == (2 if batched else 1):
        return Roles(masks, s, None, 1)
    if batched and len(s.shape) == 3 and is_int(s.shape[2]):
        return Roles(masks, s, None, int(s.shape[2]))
    return None


# transformers' names for a MaskFormer / Mask2Former / OneFormer head's outputs (its
# models' output fields, which its ONNX configs and torch.onnx users keep)
MASKFORMER_NAMES = frozenset({"class_queries_logits", "masks_queries_logits"})


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    r = roles(inputs, outputs)
    if r is None:
        return None
    if {o.name for o in outputs} >= MASKFORMER_NAMES:
        # the same shapes as SparseInst's, other values: class logits with a trailing
        # no-object class (a softmax, not sigmoid scores) and mask logits combined with
        # them per pixel; read as SparseInst they would be served wrong without a word
        raise FormatError(
            "outputs class_queries_logits and masks_queries_logits are a MaskFormer / "
            "Mask2Former head (transformers), which edged does not serve: export the "
            "model with its post-processing in the graph (a semantic class map, "
            "[1,H,W] from post_process_semantic_segmentation) and serve that as "
            "format: semantic")
    lab = f", labels {r.labels.name} {dims(r.labels)}" if r.labels is not None else ""
    return (f"SparseInst: per-query masks {r.masks.name} {dims(r.masks)} with scores "
            f"{r.scores.name} {dims(r.scores)}{lab} for the same queries; no boxes")


def names_match(outputs: list[TensorInfo]) -> bool:
    names = {o.name for o in outputs}
    return names in ({"masks", "scores"}, {"masks", "scores", "labels"})


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    r = roles(inputs, outputs)
    if r is None:
        raise ValueError("outputs do not follow the sparseinst layout")
    outs = {"masks": r.masks.name, "scores": r.scores.name}
    if r.labels is not None:
        outs["labels"] = r.labels.name
    return Manifest(format="sparseinst", input_name=inputs[0].name, outputs=outs,
                    preprocess=preprocess_for(inputs, 640, mean=IMAGENET_MEAN,
                                              std=IMAGENET_STD),
                    classes=generic_classes(r.classes) if r.classes else (),
                    conf_threshold=0.4, max_detections=100,
                    options={"mask_threshold": 0.5, "mask_activation": "none"})


class Adapter:
    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        self.masks_index = output_index(manifest, output_names, "masks")
        self.scores_index = output_index(manifest, output_names, "scores")
        self.labels_index = (output_index(manifest, output_names, "labels")
                             if "labels" in manifest.outputs else None)
        opts = manifest.options
        t = float(opts.get("mask_threshold", 0.5))
        act = opts.get("mask_activation", "none")
        if act not in ("none", "sigmoid"):
            raise ValueError(f"sparseinst: option mask_activation must be 'none' "
                             f"(probabilities) or 'sigmoid' (logits), got {act!r}")
        self.threshold = logit(t) if act == "sigmoid" else t
        self.mask_classes = mask_classes(manifest)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> Decoded:
        m = self.manifest
        maps = outputs[self.masks_index]
        maps = maps.reshape(-1, maps.shape[-2], maps.shape[-1])
        n, mh, mw = maps.shape
        s = outputs[self.scores_index].reshape(n, -1)
        if self.labels_index is not None:
            scores, ids = s[:, 0], outputs[self.labels_index].reshape(n)
        elif s.shape[1] == 1:
            scores, ids = s[:, 0], np.zeros(n, np.int64)
        else:
            ids = s.argmax(1)
            scores = s[np.arange(n), ids]
        cand = np.flatnonzero(scores > m.conf_threshold)
        ok, bad = finite_candidates(scores[cand])  # an Inf score passes the threshold
        cand = cand[ok]
        cand = cand[np.argsort(-scores[cand], kind="stable")][:m.max_detections]
        # boxes: the extent of each mask's cells above the threshold (vectorised over
        # the kept queries)
        on = maps[cand] > self.threshold
        # np.any, not on.any: numpy's stubs type the method's result as maybe a scalar
        rows: np.ndarray = np.any(on, axis=2)
        cols: np.ndarray = np.any(on, axis=1)
        found = rows.any(axis=1)
        cand, rows, cols = cand[found], rows[found], cols[found]
        r0, r1 = rows.argmax(1), mh - rows[:, ::-1].argmax(1)
        c0, c1 = cols.argmax(1), mw - cols[:, ::-1].argmax(1)
        fx, fy = letterbox.input_w / mw, letterbox.input_h / mh
        boxes_in = np.stack([c0 * fx, r0 * fy, c1 * fx, r1 * fy], axis=1).astype(np.float32)
        boxes = letterbox.boxes_to_camera(boxes_in.reshape(-1, 4), frame_w, frame_h)
        sc = scores[cand].astype(np.float32)
        cls = ids[cand].astype(np.int32)
        inst, class_mask = query_masks(maps, cand, boxes, cls, sc, letterbox, frame_w,
                                       frame_h, self.threshold)
        return Decoded(Detections(boxes, sc, cls, instance_masks=inst), class_mask, bad)
