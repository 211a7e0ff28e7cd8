"""Mask R-CNN exports, with detection and NMS done in the graph.

Two layouts (manifest option `layout`), recognised by shape:

- `torchvision`: input [3, H, W] (torchvision's export takes one un-batched image; its
  own transform, inside the graph, normalises and resizes it), outputs `boxes` [N, 4]
  (x1, y1, x2, y2, input pixels), `labels` [N] (int; torchvision's COCO ids count the
  background as 0), `scores` [N], `masks` [N, 1, h, w];
- `mmdeploy`: input [1, 3, H, W] (normalised outside: ImageNet mean/std on 0..255),
  outputs `dets` [1, N, 5] (x1, y1, x2, y2, score), `labels` [1, N], `masks` [1, N, h, w].

Masks are probabilities. Where h x w is the input size they are already pasted into the
image (torchvision does that in the graph); otherwise they are RoI masks (28 x 28
typically) covering their box, which edged samples at the camera pixels of the box.
Either way a pixel is in the instance where the probability > `mask_threshold` (0.5).
Class ids are the graph's labels as they are; name them with the manifest's classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.inference.formats._common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Decoded,
    Hints,
    TensorInfo,
    batch1,
    dims,
    finite_candidates,
    image_input,
    is_float,
    mask_classes,
    output_index,
    preprocess_for,
)
from edged.inference.formats._instances import paint, render
from edged.inference.manifest import Manifest
from edged.results import Detections, Letterbox


@dataclass(frozen=True, slots=True)
class Roles:
    layout: str
    tensors: dict[str, TensorInfo]  # role -> tensor


def _same_n(ts: list[TensorInfo], axis: int) -> bool:
    return len({t.shape[axis] for t in ts}) == 1


def roles(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Roles | None:
    img = image_input(inputs)
    if img is None:
        return None
    ints = [o for o in outputs if not is_float(o)]
    floats = [o for o in outputs if is_float(o)]
    if len(outputs) == 4 and len(img.shape) == 3:
        boxes = [o for o in floats if len(o.shape) == 2 and o.shape[1] == 4]
        scores = [o for o in floats if len(o.shape) == 1]
        masks = [o for o in floats if len(o.shape) == 4 and o.shape[1] == 1]
        labels = [o for o in ints if len(o.shape) == 1]
        if all(len(x) == 1 for x in (boxes, scores, masks, labels)):
            t = {"boxes": boxes[0], "labels": labels[0], "scores": scores[0], "masks": masks[0]}
            if _same_n(list(t.values()), 0):
                return Roles("torchvision", t)
    if len(outputs) == 3 and len(img.shape) == 4:
        dets = [o for o in floats if len(o.shape) == 3 and o.shape[2] == 5]
        masks = [o for o in floats if len(o.shape) == 4]
        labels = [o for o in outputs if len(o.shape) == 2]
        if all(len(x) == 1 for x in (dets, masks, labels)):
            t = {"dets": dets[0], "labels": labels[0], "masks": masks[0]}
            if _same_n(list(t.values()), 1) and all(batch1(v.shape[0]) for v in t.values()):
                return Roles("mmdeploy", t)
    return None


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    r = roles(inputs, outputs)
    if r is None:
        return None
    parts = ", ".join(f"{role} {t.name} {dims(t)}" for role, t in r.tensors.items())
    return f"Mask R-CNN, {r.layout} layout: {parts}"


def names_match(outputs: list[TensorInfo]) -> bool:
    names = {o.name for o in outputs}
    return names in ({"boxes", "labels", "scores", "masks"}, {"dets", "labels", "masks"})


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    r = roles(inputs, outputs)
    if r is None:
        raise ValueError("outputs do not follow the mask-rcnn layout")
    if r.layout == "torchvision":
        pre = preprocess_for(inputs, 640)  # the graph normalises and resizes itself
    else:
        pre = preprocess_for(inputs, 640, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return Manifest(format="mask-rcnn", input_name=inputs[0].name,
                    outputs={role: t.name for role, t in r.tensors.items()}, preprocess=pre,
                    conf_threshold=0.5, max_detections=100,
                    options={"layout": r.layout, "mask_threshold": 0.5})


class Adapter:
    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        layout = manifest.options.get("layout", "torchvision")
        roles_ = {"torchvision": ("boxes", "labels", "scores", "masks"),
                  "mmdeploy": ("dets", "labels", "masks")}.get(layout)
        if roles_ is None:
            raise ValueError(f"mask-rcnn: option layout must be 'torchvision' or 'mmdeploy', "
                             f"got {layout!r}")
        self.layout = layout
        self.idx = {role: output_index(manifest, output_names, role) for role in roles_}
        self.threshold = float(manifest.options.get("mask_threshold", 0.5))
        self.mask_classes = mask_classes(manifest)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> Decoded:
        m = self.manifest
        if self.layout == "torchvision":
            xyxy = outputs[self.idx["boxes"]].reshape(-1, 4)
            scores = outputs[self.idx["scores"]].reshape(-1)
        else:
            dets = outputs[self.idx["dets"]].reshape(-1, 5)
            xyxy, scores = dets[:, :4], dets[:, 4]
        labels = outputs[self.idx["labels"]].reshape(-1)
        masks = outputs[self.idx["masks"]]
        masks = masks.reshape(len(scores), masks.shape[-2], masks.shape[-1])
        # the graph did NMS; keep the best max_detections above the threshold
        cand = np.flatnonzero(scores > m.conf_threshold)
        keep = cand[np.argsort(-scores[cand], kind="stable")]
        # an Inf corner would be clipped to the frame's edge: a box from nothing
        ok, bad = finite_candidates(xyxy[keep], scores[keep])
        keep = keep[ok][:m.max_detections]
        boxes_in = xyxy[keep].astype(np.float32)
        boxes = letterbox.boxes_to_camera(boxes_in, frame_w, frame_h)
        sc = scores[keep].astype(np.float32)
        ids = labels[keep].astype(np.int32)
        mh, mw = masks.shape[1:]
        if (mh, mw) == (letterbox.input_h, letterbox.input_w):
            # already pasted: one map over the whole input per instance
            to_field = np.tile([1.0, 0.0, 1.0, 0.0], (len(keep), 1))
        else:
            # RoI masks: field x = (input x - box x1) * mw / box width
            bw = np.maximum(boxes_in[:, 2] - boxes_in[:, 0], 1e-6).astype(np.float64)
            bh = np.maximum(boxes_in[:, 3] - boxes_in[:, 1], 1e-6).astype(np.float64)
            to_field = np.stack([mw / bw, -boxes_in[:, 0] * mw / bw,
                                 mh / bh, -boxes_in[:, 1] * mh / bh], axis=1)
        kept = masks[keep]

        def field(i: int, rs: slice, cs: slice) -> np.ndarray:
            return kept[i, rs, cs]

        inst = render(boxes, letterbox, (mh, mw), to_field, field, self.threshold)
        class_mask = paint(inst, boxes, ids, sc, letterbox, frame_w, frame_h)
        return Decoded(Detections(boxes, sc, ids, instance_masks=inst), class_mask, bad)
