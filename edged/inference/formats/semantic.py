"""Semantic segmentation: FCN, U-Net, SegNet, DeepLab, BiSeNet, SegFormer exports.

One output, at any resolution with the input's aspect ratio (scaled back to the camera
by the protocol's mask mapping; the letterbox padding is cropped away):

- logits or probabilities [1, C, H, W], C >= 2: edged takes the argmax;
- class ids [1, H, W] or [1, 1, H, W] (integer; float only where the graph casts an
  ArgMax);
- a single-channel score map [1, 1, H, W] (DBNet text maps, binary U-Nets): a binary
  mask, class 1 ("foreground") where the probability > `mask_threshold` (default 0.5).
  What the float values are is read from the op that makes them (Sigmoid:
  probabilities; Conv, Add, ...: logits, thresholded at logit(mask_threshold); Cast of
  an ArgMax: class ids), or told by manifest option / `model.output_values`
  (`probability`, `logit`, `class_ids`); without either it is an error that asks.
  The older manifest option `binary_threshold` compares the raw values.

Option `upsample`: `class_ids` (default) takes the argmax at the model's output size and
enlarges the class map (nearest neighbour) to the camera; `logits` enlarges the logits
to the camera frame first (bilinear, half-pixel centres: torch's interpolate with
align_corners=False, as transformers' post_process_semantic_segmentation and the
torchvision / smp examples do) and takes the argmax there, which is what those
references' class maps are (docs/benchmarks.md has its cost). No detections.

The manifest a graph implies (`edged inspect --write-manifest`) proposes what the
semantic families users bring are trained with (SegFormer from transformers, FCN /
DeepLabV3 / LR-ASPP from torchvision, U-Net / FPN / DeepLabV3+ from
segmentation-models-pytorch, all ImageNet-normalised): `mean` [0.485, 0.456, 0.406] and
`std` [0.229, 0.224, 0.225] (units after `scale`, RGB), the frame stretched onto the
input, Pillow's antialiased bilinear resize, and for logits `upsample: logits`. A model
trained otherwise (DBNet maps, YOEO-style class ids) gets its own values in its manifest.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
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
    generic_classes,
    image_input,
    input_hw,
    is_float,
    is_int,
    logit,
    output_index,
    preprocess_for,
)
from edged.inference.graph import VALUE_PRESERVING
from edged.inference.manifest import Manifest
from edged.results import Detections, Letterbox


def _kind(o: TensorInfo) -> str | None:
    s = o.shape
    if len(s) == 4 and batch1(s[0]):
        if is_int(s[1]) and s[1] >= 2:
            return "logits" if is_float(o) else None
        if s[1] == 1:
            return "class ids"
        # a symbolic class count: torch.onnx names the dims its shape inference lost
        # behind a Resize (torchvision's heads end in one) "Resizeout_dim_1"
        return "logits" if is_float(o) and not is_int(s[1]) else None
    if len(s) == 3 and batch1(s[0]):
        return "class ids"
    return None


OUTPUT_VALUES = ("probability", "logit", "class_ids")
UPSAMPLE = ("class_ids", "logits")
# ops whose output is a linear function of features: logits, not probabilities
_LINEAR = {"Conv", "ConvTranspose", "Add", "Sub", "MatMul", "Gemm", "BatchNormalization",
           "InstanceNormalization", "Einsum"}


def output_values(o: TensorInfo, hints: Hints | None) -> tuple[str, str] | None:
    """What a one-channel float map holds, and the evidence; None when nothing tells."""
    if hints is not None and hints.output_values is not None:
        if hints.output_values not in OUTPUT_VALUES:
            raise FormatError(f"model.output_values must be one of "
                              f"{', '.join(OUTPUT_VALUES)}, got {hints.output_values!r}")
        return hints.output_values, "model.output_values in the config"
    chain = () if hints is None else hints.ops.get(o.name, ())
    if "ArgMax" in chain:
        return "class_ids", f"{o.name} is made by {' <- '.join(chain)}"
    decisive = next((op for op in chain if op not in VALUE_PRESERVING), None)
    if decisive == "Sigmoid":
        return "probability", f"{o.name} is made by {' <- '.join(chain)}"
    if decisive in _LINEAR:
        return "logit", f"{o.name} is made by {' <- '.join(chain)} (no sigmoid)"
    return None


def _fits(inputs: list[TensorInfo], outputs: list[TensorInfo], strict: bool,
          hints: Hints | None = None) -> str | None:
    if image_input(inputs) is None or len(inputs[0].shape) != 4 or len(outputs) != 1:
        return None
    o = outputs[0]
    kind = _kind(o)
    if kind == "class ids" and len(o.shape) == 4 and is_float(o):
        values = output_values(o, hints)
        if values is None:
            if strict:
                return None  # no evidence what the map holds: not claimed by auto
            raise FormatError(
                f"{o.name} {o.dtype}{dims(o)} is a one-channel float map and nothing in the "
                f"graph says whether it holds probabilities, logits or class ids; set "
                f"model.output_values to probability, logit or class_ids (and "
                f"model.mask_threshold, default 0.5, for a binary mask)")
        if values[0] != "class_ids":
            kind = f"binary {values[0]} map ({values[1]})"
    if kind is None or o.dtype == "bool":
        return None
    hw = input_hw(inputs)
    h, w = o.shape[-2], o.shape[-1]
    if hw is not None and is_int(h) and is_int(w):
        ih, iw = hw
        # same aspect ratio as the input, to within one cell (strided heads round up)
        if abs(h - ih * w / iw) > 1.0 or h < 2 or w < 2:
            return None
        where = f"{h}x{w} map of the {ih}x{iw} input"
        if strict and kind == "logits" and tuple(o.shape) == tuple(inputs[0].shape):
            # an output shaped exactly like the image is as likely an image-to-image
            # model as a 3-class segmenter: do not claim it without `format: semantic`
            return None
    elif strict and not (kind == "logits" or kind.startswith("binary") or not is_float(o)):
        return None  # a float [1,H,W] of unknown size is no evidence of a class map
    elif (strict and kind == "logits" and not is_int(o.shape[1])
          and tuple(o.shape[-2:]) != tuple(inputs[0].shape[-2:])):
        return None  # nothing fixed at all: not evidence enough for auto
    else:
        where = ("map the size of the input (dynamic)"
                 if tuple(o.shape[-2:]) == tuple(inputs[0].shape[-2:]) else
                 "map, size dynamic")
    if kind == "logits" and not is_int(o.shape[1]):
        what = "logits [1,C,H,W], C not fixed by the graph (argmax by edged; name the " \
               "classes in seg_classes)"
    elif kind == "logits":
        what = f"logits [1,{o.shape[1]},H,W] (argmax by edged)"
    elif kind.startswith("binary"):
        what = f"{kind} {dims(o)}"
    else:
        what = f"{o.dtype} class ids {dims(o)}"
    return f"semantic segmentation: one output {o.name} = {what}, {where}"


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    return _fits(inputs, outputs, strict=True, hints=hints)


def fits(inputs: list[TensorInfo], outputs: list[TensorInfo],
         hints: Hints | None = None) -> str | None:
    """For `format: semantic` in the config: also shapes too generic for auto."""
    return _fits(inputs, outputs, strict=False, hints=hints)


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    if fits(inputs, outputs, hints) is None:
        raise ValueError("outputs do not follow the semantic layout")
    o = outputs[0]
    n = o.shape[1] if len(o.shape) == 4 and is_int(o.shape[1]) else None
    seg = generic_classes(n) if n is not None and n >= 2 else ()
    options: dict[str, object] = {}
    if n == 1 and is_float(o):
        values = output_values(o, hints)
        assert values is not None  # fits() raised otherwise
        options["output_values"] = values[0]
        if values[0] != "class_ids":
            options["mask_threshold"] = 0.5
            seg = ("background", "foreground")
    return Manifest(format="semantic", input_name=inputs[0].name,
                    outputs={"segmentation": o.name}, preprocess=preprocess_for(inputs, 512),
                    seg_classes=seg, options=options)


def propose(m: Manifest, inputs: list[TensorInfo], outputs: list[TensorInfo],
            hints: Hints | None = None) -> tuple[Manifest, list[str]]:
    """What `edged inspect` proposes over the graph's plain reading `m` for the semantic
    families users bring (module docstring), each with its reason. Binary maps and class
    ids are left as they are: their pipelines (DBNet, YOEO) are not these families'."""
    o = outputs[0]
    if _kind(o) != "logits":
        return m, []
    pre = replace(m.preprocess, resize="stretch", interpolation="pil_bilinear",
                  mean=IMAGENET_MEAN, std=IMAGENET_STD)
    why = ["ImageNet mean/std, the frame stretched onto the input with Pillow's bilinear "
           "resize: the pre-processing of the semantic families' references (transformers' "
           "image processors, torchvision, segmentation-models-pytorch)"]
    hw = input_hw(inputs)
    if hw is None:
        pre = replace(pre, size="keep_ratio", limit_type="min", limit_side=520, multiple=1)
        why.append("input size following the frame, its shorter side 520: the graph's H and "
                   "W are dynamic, as in torchvision's exports, whose weights' transforms "
                   "resize so (set limit_side to your model's training size)")
    h = o.shape[2]
    coarse = (f" (this head is at 1/{hw[0] // h} of the input)"
              if hw is not None and is_int(h) and 0 < h < hw[0] else "")
    why.append("upsample logits: the references enlarge the logits to the frame before "
               "the argmax" + coarse)
    return replace(m, preprocess=pre, options={**m.options, "upsample": "logits"}), why


class Adapter:
    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        self.index = output_index(manifest, output_names, "segmentation", output_names[0])
        opts = manifest.options
        values = opts.get("output_values")
        if values is not None and values not in OUTPUT_VALUES:
            raise ValueError(f"output_values must be one of {', '.join(OUTPUT_VALUES)}, "
                             f"got {values!r}")
        t = opts.get("binary_threshold")
        if t is None and values in ("probability", "logit"):
            p = float(opts.get("mask_threshold", 0.5))
            t = logit(p) if values == "logit" else p
            if values == "probability" and not 0.0 < p < 1.0:
                raise ValueError(f"mask_threshold must be in (0, 1), got {p}")
        self.binary_threshold = None if t is None else float(t)
        upsample = opts.get("upsample", "class_ids")
        if upsample not in UPSAMPLE:
            raise ValueError(f"options.upsample must be one of {', '.join(UPSAMPLE)}, "
                             f"got {upsample!r}")
        self.upsample_logits = upsample == "logits"

    def class_map(self, out: np.ndarray, letterbox: Letterbox,
                  frame: tuple[int, int] | None = None) -> np.ndarray:
        """HxW uint8 class ids of the part of the map that covers the frame; with
        `upsample: logits` and `frame` (width, height), at the frame's size."""
        if out.ndim == 4:
            out = out[0]
        elif out.ndim == 3:
            out = out[None, 0]
        else:
            raise ValueError(f"segmentation output has shape {list(out.shape)}, "
                             f"expected [1,C,H,W] or [1,H,W]")
        # crop first: no argmax over the letterbox padding. crop_mask slices the first
        # two axes, hence the (view-only) channel-last transpose
        crop = letterbox.crop_mask(out.transpose(1, 2, 0))
        if crop.shape[2] >= 2:
            if self.upsample_logits and frame is not None:
                return upsampled_argmax(crop, frame)
            return crop.argmax(axis=2).astype(np.uint8)
        plane = crop[:, :, 0]
        if self.binary_threshold is not None:
            return (plane > self.binary_threshold).view(np.uint8)
        if plane.dtype == np.uint8:
            return plane
        if np.issubdtype(plane.dtype, np.floating):
            # a NaN class id has no uint8 value (the cast warns): class 0 there
            plane = np.nan_to_num(np.rint(plane), nan=0.0)
        return np.clip(plane, 0, 255).astype(np.uint8)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> Decoded:
        return Decoded(Detections.empty(), self.class_map(outputs[self.index], letterbox,
                                                          (frame_w, frame_h)))


def upsampled_argmax(logits: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """argmax over channels of HxWxC logits enlarged to `frame` (width, height) by
    bilinear interpolation with half-pixel centres (cv2's INTER_LINEAR; torch's
    interpolate(mode="bilinear", align_corners=False) up to float rounding).

    One channel plane at a time against a running maximum: memory of two frame-sized
    planes whatever the class count, and contiguous planes (the model's CHW layout)
    rather than a strided channel-last argmax."""
    fw, fh = frame
    planes = logits.transpose(2, 0, 1)  # the model's own C, H, W: each plane contiguous
    if planes.shape[1:] == (fh, fw):
        return planes.argmax(axis=0).astype(np.uint8)
    best = np.empty((fh, fw), np.float32)
    plane = np.empty((fh, fw), np.float32)
    out = np.zeros((fh, fw), np.uint8)
    better = np.empty((fh, fw), bool)
    for c in range(planes.shape[0]):
        src = np.ascontiguousarray(planes[c], dtype=np.float32)
        cv2.resize(src, (fw, fh), dst=best if c == 0 else plane,
                   interpolation=cv2.INTER_LINEAR)
        if c == 0:
            continue
        # strictly greater: a tie keeps the lower class, as argmax does
        np.greater(plane, best, out=better)
        np.maximum(best, plane, out=best)
        out[better] = c
    return out
