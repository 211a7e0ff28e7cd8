"""YOLACT exports (dbolya/yolact without its `Detect` step, as ONNX exports leave it).

Outputs, matched by shape (names only break ties):

- `loc` [1, P, 4]: box offsets from the priors (SSD encoding, variances 0.1/0.2);
- `conf` [1, P, C+1]: softmax class scores, column 0 background;
- `mask` [1, P, M]: mask coefficients (tanh applied in the graph);
- `proto` [1, h, w, M] (YOLACT's channel-last) or [1, M, h, w], over the whole input;
- `priors` [P, 4] or [1, P, 4], optional: cx, cy, w, h normalised to the input.

Without a priors output the priors come from the manifest option `priors`
({"max_size", "scales" per level, "aspect_ratios", "square", optional "feature_maps"});
the default is yolact_base's (5 levels, scales 24..384, ratios 1, 1/2, 2, square
anchors), accepted only when its count equals P. Instance mask = sigmoid(proto . coef)
> `mask_threshold` (default 0.5), cropped to the box, sampled at camera pixels.
Pre-processing default: YOLACT's stretch resize and its BGR means/stds, RGB order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.inference.formats._common import (
    Decoded,
    Hints,
    TensorInfo,
    batch1,
    class_group_ids,
    class_nms,
    dims,
    finite_candidates,
    generic_classes,
    image_input,
    input_hw,
    is_float,
    is_int,
    logit,
    mask_classes,
    output_index,
    pick,
)
from edged.inference.formats._instances import paint, render
from edged.inference.manifest import Manifest
from edged.inference.preprocess import PreprocessSpec
from edged.results import Detections, Letterbox

DEFAULT_PRIORS: dict[str, Any] = {
    "scales": [[24], [48], [96], [192], [384]],
    "aspect_ratios": [1.0, 0.5, 2.0],
    "square": True,
}
# YOLACT normalises BGR pixels with these (0..255 units), then feeds RGB
_MEAN_BGR, _STD_BGR = (103.94, 116.78, 123.68), (57.38, 57.12, 58.40)


def _rgb_unit(bgr: tuple[float, float, float]) -> tuple[float, float, float]:
    """BGR pixel values -> RGB in the 0..1 units PreprocessSpec takes."""
    b, g, r = bgr
    return r / 255, g / 255, b / 255


@dataclass(frozen=True, slots=True)
class Roles:
    loc: TensorInfo
    conf: TensorInfo
    mask: TensorInfo
    proto: TensorInfo
    priors: TensorInfo | None
    proto_layout: str  # "nhwc" or "nchw"


def _named(ts: list[TensorInfo], word: str) -> list[TensorInfo]:
    return [t for t in ts if word in t.name.lower()]


def roles(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Roles | None:
    if image_input(inputs) is None or len(inputs[0].shape) != 4 or len(outputs) not in (4, 5):
        return None
    if not all(is_float(o) for o in outputs):
        return None
    fours = [o for o in outputs if len(o.shape) == 4]
    if len(fours) != 1:
        return None
    proto = fours[0]
    rest = [o for o in outputs if o is not proto]
    priors = [o for o in rest if len(o.shape) == 2 and o.shape[1] == 4]
    threes = [o for o in rest if len(o.shape) == 3 and batch1(o.shape[0])]
    if not priors and len(outputs) == 5:
        priors = _named([o for o in threes if o.shape[2] == 4], "prior")
    if len(priors) > 1 or len(priors) + len(threes) != len(rest):
        return None
    threes = [o for o in threes if o not in priors]
    if len(threes) != 3:
        return None
    locs = [o for o in threes if o.shape[2] == 4]
    if len(locs) > 1:
        locs = _named(locs, "loc")
    if len(locs) != 1:
        return None
    pair = [o for o in threes if o is not locs[0]]
    channel_axes = {proto.shape[3]: "nhwc", proto.shape[1]: "nchw"}
    masks = [o for o in pair if is_int(o.shape[2]) and o.shape[2] in channel_axes]
    if len(masks) == 2:
        masks = _named(masks, "mask")
    if len(masks) != 1:
        return None
    mask = masks[0]
    conf = pair[0] if pair[1] is mask else pair[1]
    if not is_int(conf.shape[2]) or conf.shape[2] < 2:
        return None
    p = {o.shape[1] for o in threes} | {o.shape[-2] for o in priors}
    if len(p) != 1:
        return None
    return Roles(locs[0], conf, mask, proto, priors[0] if priors else None,
                 channel_axes[mask.shape[2]])


def make_priors(cfg: dict[str, Any], input_h: int, input_w: int) -> np.ndarray:
    """[P, 4] priors (cx, cy, w, h, normalised), ordered level, row, column, scale, ratio."""
    scales = cfg.get("scales", DEFAULT_PRIORS["scales"])
    ratios = [float(r) for r in cfg.get("aspect_ratios", DEFAULT_PRIORS["aspect_ratios"])]
    square = bool(cfg.get("square", DEFAULT_PRIORS["square"]))
    max_size = float(cfg.get("max_size", max(input_h, input_w)))
    maps = cfg.get("feature_maps")
    if maps is None:  # stride 8 first, each level half the last, rounded up like the convs
        fh, fw = math.ceil(input_h / 8), math.ceil(input_w / 8)
        maps = []
        for _ in scales:
            maps.append((fh, fw))
            fh, fw = math.ceil(fh / 2), math.ceil(fw / 2)
    if len(maps) != len(scales):
        raise ValueError(f"yolact priors: {len(maps)} feature maps but {len(scales)} "
                         f"scale lists")
    levels = []
    for (fh, fw), level_scales in zip(maps, scales):
        sizes = []
        for s in level_scales:
            for r in ratios:
                w = s * math.sqrt(r) / max_size
                sizes.append((w, w if square else s / math.sqrt(r) / max_size))
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) / fh, (np.arange(fw) + 0.5) / fw,
                             indexing="ij")
        grid = np.empty((fh, fw, len(sizes), 4), np.float32)
        grid[..., 0] = cx[:, :, None]
        grid[..., 1] = cy[:, :, None]
        grid[..., 2:] = np.asarray(sizes, np.float32)
        levels.append(grid.reshape(-1, 4))
    return np.concatenate(levels)


def _prior_count(inputs: list[TensorInfo], r: Roles) -> tuple[int | None, int | None]:
    """(P in the graph, P of the default priors) where both are known."""
    hw = input_hw(inputs)
    p = r.loc.shape[1]
    default = len(make_priors({}, *hw)) if hw is not None else None
    return (p if is_int(p) else None), default


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    r = roles(inputs, outputs)
    if r is None:
        return None
    p, default = _prior_count(inputs, r)
    if r.priors is not None:
        priors = f"priors {r.priors.name} {dims(r.priors)} from the graph"
    elif p is not None and p == default:
        priors = f"{p} predictions = yolact_base's default priors"
    else:
        priors = "no priors output: give them in the manifest option 'priors'"
    n_conf = r.conf.shape[2]
    assert is_int(n_conf)  # roles checked it
    return (f"YOLACT: loc {r.loc.name} {dims(r.loc)}, conf {r.conf.name} {dims(r.conf)} "
            f"({n_conf} = background + {n_conf - 1} classes), mask "
            f"coefficients {r.mask.name} {dims(r.mask)}, prototypes {r.proto.name} "
            f"{dims(r.proto)} ({r.proto_layout}); {priors}")


def names_match(outputs: list[TensorInfo]) -> bool:
    names = {o.name for o in outputs}
    return {"loc", "conf", "mask", "proto"} <= names


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    r = roles(inputs, outputs)
    if r is None:
        raise ValueError("outputs do not follow the yolact layout")
    hw = input_hw(inputs) or (550, 550)
    options: dict[str, Any] = {"proto_layout": r.proto_layout, "variances": [0.1, 0.2],
                               "mask_threshold": 0.5}
    if r.priors is None:
        p, default = _prior_count(inputs, r)
        if p is not None and p != default:
            raise ValueError(
                f"yolact: the graph has no priors output and its {p} predictions do not "
                f"match the default YOLACT priors for a {hw[1]}x{hw[0]} input ({default}); "
                f"write a manifest with option 'priors' (see edged/inference/formats/yolact.py)")
        options["priors"] = {"max_size": max(hw), **DEFAULT_PRIORS}
    outs = {"loc": r.loc.name, "conf": r.conf.name, "mask": r.mask.name, "proto": r.proto.name}
    if r.priors is not None:
        outs["priors"] = r.priors.name
    n_conf = r.conf.shape[2]
    assert is_int(n_conf)  # roles checked it
    n_cls = n_conf - 1
    pre = PreprocessSpec(input_w=hw[1], input_h=hw[0], resize="stretch",
                         mean=_rgb_unit(_MEAN_BGR), std=_rgb_unit(_STD_BGR))
    return Manifest(format="yolact", input_name=inputs[0].name, outputs=outs, preprocess=pre,
                    classes=generic_classes(n_cls), conf_threshold=0.3, iou_threshold=0.5,
                    max_detections=100, multi_label=False, options=options)


BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class Adapter:
    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        opts = manifest.options
        self.idx = {role: output_index(manifest, output_names, role)
                    for role in ("loc", "conf", "mask", "proto")}
        self.priors_index = (output_index(manifest, output_names, "priors")
                             if "priors" in manifest.outputs else None)
        self.priors: np.ndarray | None = None
        if self.priors_index is None:
            if "priors" not in opts:
                raise ValueError("yolact: no priors output in the manifest's outputs and no "
                                 "option 'priors' to generate them")
            pre = manifest.preprocess
            self.priors = make_priors(opts["priors"], pre.input_h, pre.input_w)
        layout = opts.get("proto_layout", "nhwc")
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"yolact: option proto_layout must be 'nhwc' or 'nchw', "
                             f"got {layout!r}")
        self.channels_last = layout == "nhwc"
        v = opts.get("variances", [0.1, 0.2])
        self.variances = (float(v[0]), float(v[1]))
        self.threshold = logit(float(opts.get("mask_threshold", 0.5)))
        self.group_ids = class_group_ids(manifest)
        self.mask_classes = mask_classes(manifest)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> Decoded:
        m = self.manifest
        loc = outputs[self.idx["loc"]].reshape(-1, 4)
        conf = outputs[self.idx["conf"]].reshape(loc.shape[0], -1)
        coef = outputs[self.idx["mask"]].reshape(loc.shape[0], -1)
        if self.priors_index is None:
            assert self.priors is not None  # generated in __init__ when there is no output
            priors = self.priors
        else:
            priors = outputs[self.priors_index].reshape(-1, 4)
        if len(priors) != len(loc):
            raise ValueError(f"yolact: {len(priors)} priors for {len(loc)} predictions")
        proto = outputs[self.idx["proto"]][0]
        cls_scores = conf[:, 1:]  # column 0 is background
        cand = np.flatnonzero(cls_scores.max(1) > m.conf_threshold)
        # before the SSD decoding: an Inf offset or score must not reach the arithmetic
        ok, bad = finite_candidates(cls_scores[cand], loc[cand])
        cand = cand[ok]
        ri, ci, sc = pick(cls_scores[cand], m.conf_threshold, m.multi_label)
        cand = cand[ri]
        # SSD decoding, normalised coordinates, then input pixels
        pr, lo = priors[cand].astype(np.float64), loc[cand].astype(np.float64)
        v0, v1 = self.variances
        cxcy = pr[:, :2] + lo[:, :2] * v0 * pr[:, 2:]
        # exp of a large offset overflows to inf (and warns): clamp it as torchvision's
        # box decoding does (bbox_xform_clip = log(1000 / 16))
        wh = pr[:, 2:] * np.exp(np.minimum(lo[:, 2:] * v1, BBOX_XFORM_CLIP))
        size = np.array([letterbox.input_w, letterbox.input_h] * 2, np.float64)
        xyxy = (np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1) * size).astype(np.float32)
        keep = class_nms(xyxy, sc, ci, self.group_ids, m)
        boxes = letterbox.boxes_to_camera(xyxy[keep], frame_w, frame_h)
        scores = sc[keep].astype(np.float32)
        ids = ci[keep].astype(np.int32)
        coefs = coef[cand[keep]].astype(np.float32)
        if self.channels_last:
            ph, pw = proto.shape[:2]
            spec = "hwm,m->hw"
        else:
            ph, pw = proto.shape[1:]
            spec = "mhw,m->hw"
        scale = np.array([pw / letterbox.input_w, 0.0, ph / letterbox.input_h, 0.0])
        to_field = np.broadcast_to(scale, (len(keep), 4))

        def field(i: int, rs: slice, cs: slice) -> np.ndarray:
            # the window under the box only; einsum rather than BLAS (see yolo_seg)
            window = proto[rs, cs] if self.channels_last else proto[:, rs, cs]
            return np.einsum(spec, window, coefs[i])

        masks = render(boxes, letterbox, (ph, pw), to_field, field, self.threshold)
        class_mask = paint(masks, boxes, ids, scores, letterbox, frame_w, frame_h)
        return Decoded(Detections(boxes, scores, ids, instance_masks=masks), class_mask, bad)
