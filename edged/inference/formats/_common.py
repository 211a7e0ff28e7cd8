"""What the format adapters share: tensor descriptions, class names, scoring, NMS set-up.

Kept free of imports from the adapter modules so that every adapter can use it while
`edged.inference.formats` is still being imported.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np

from edged.inference.manifest import Manifest
from edged.inference.nms import nms
from edged.inference.preprocess import PreprocessSpec
from edged.results import Detections

# torchvision's, timm's and transformers' normalisation: the ImageNet statistics
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class Decoded:
    """What an adapter makes of one frame's outputs: the detections (camera pixels), the
    class mask over the camera frame (None without one), and how many candidate rows it
    dropped for NaN/Inf values (counted per camera in the stats)."""

    detections: Detections
    mask: np.ndarray | None = None
    nonfinite: int = 0


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str  # numpy dtype name


@dataclass(frozen=True, slots=True)
class Hints:
    """What besides the shapes tells a graph's layout: the exporter's ONNX metadata, the
    ops that make each output (`edged.inference.graph.output_ops`: last first), and the
    config's `model.layout` / `model.output_values` (the user's answer where the graph
    reads two ways)."""

    metadata: dict[str, str]
    layout: str | None = None
    ops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    output_values: str | None = None


class FormatError(ValueError):
    """The graph does not fit the requested format, or fits none."""


def describe(tensors: list[TensorInfo]) -> str:
    return ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in tensors)


def dims(t: TensorInfo) -> str:
    return "[" + ",".join(str(d) for d in t.shape) + "]"


def is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def batch1(d: object) -> bool:
    """A batch axis edged can feed: 1, or dynamic (a name or None)."""
    return d == 1 or not is_int(d)


def is_float(t: TensorInfo) -> bool:
    return t.dtype.startswith("float")


def image_input(inputs: list[TensorInfo]) -> TensorInfo | None:
    """The single image input, [1,3,H,W] (or [3,H,W] as torchvision detection exports)."""
    if len(inputs) != 1:
        return None
    t = inputs[0]
    if len(t.shape) == 4 and t.shape[1] in (3, None) and batch1(t.shape[0]):
        return t
    if len(t.shape) == 3 and t.shape[0] == 3:
        return t
    return None


def input_hw(inputs: list[TensorInfo]) -> tuple[int, int] | None:
    """(H, W) of the image input when the graph fixes them, else None (dynamic axes)."""
    t = image_input(inputs)
    if t is None:
        return None
    h, w = t.shape[-2], t.shape[-1]
    return (h, w) if is_int(h) and is_int(w) else None


def preprocess_for(inputs: list[TensorInfo], default: int = 640, **kw: Any) -> PreprocessSpec:
    """The input geometry the graph fixes, or `default` square for dynamic axes."""
    hw = input_hw(inputs)
    h, w = hw if hw is not None else (default, default)
    return PreprocessSpec(input_w=w, input_h=h, **kw)


def generic_classes(n: int) -> tuple[str, ...]:
    return tuple(f"class{i}" for i in range(n))


def yolo_anchor_counts(h: int, w: int) -> dict[int, str]:
    """Anchor counts of YOLO heads at this input size -> which head gives them.

    Anchor-free heads (ultralytics v8/11) have one prediction per cell of the stride
    8/16/32 grids (and 64 for the P6 models); anchor-based heads (v5) three per cell.
    """
    out: dict[int, str] = {}
    for strides in ((8, 16, 32), (8, 16, 32, 64)):
        cells = sum(math.ceil(h / s) * math.ceil(w / s) for s in strides)
        tag = "P3-P5" if len(strides) == 3 else "P3-P6"
        out.setdefault(cells, f"1 per cell of the stride {'/'.join(map(str, strides))} grids "
                              f"({tag})")
        out.setdefault(3 * cells, f"3 per cell of the stride {'/'.join(map(str, strides))} "
                                  f"grids ({tag})")
    return out


def parse_names(value: str) -> tuple[str, ...] | None:
    """Class names from an exporter's metadata string, or None if it is not one.

    ultralytics writes `names` as a Python dict literal ("{0: 'person', 1: 'bicycle'}");
    others write a list. Parsed with ast.literal_eval (literals only, never code).
    """
    try:
        v = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if isinstance(v, dict):
        if not v or not all(is_int(k) for k in v) or sorted(v) != list(range(len(v))):
            return None
        names = [v[i] for i in range(len(v))]
    elif isinstance(v, list | tuple):
        names = list(v)
    else:
        return None
    if not names or not all(isinstance(n, str) for n in names):
        return None
    return tuple(names)


def from_ultralytics(meta: dict[str, str]) -> bool:
    """The ONNX metadata is ultralytics' exporter's (it signs its exports as author)."""
    return bool(meta) and meta.get("author", "").lower() == "ultralytics"


def ultralytics_end2end(meta: dict[str, str]) -> bool | None:
    """Whether an ultralytics export says its graph ends in its own NMS / one-to-one head
    (YOLO26 `end2end`, or `nms=True` in its export args); None for other exporters."""
    if not from_ultralytics(meta):
        return None
    if meta.get("end2end", "").strip().lower() == "true":
        return True
    try:
        args = ast.literal_eval(meta.get("args", "{}"))
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        args = {}
    return isinstance(args, dict) and args.get("nms") is True


def ultralytics_imgsz(meta: dict[str, str]) -> tuple[int, int] | None:
    """(H, W) an ultralytics export was made for (its `imgsz` metadata), or None."""
    if not from_ultralytics(meta):
        return None
    try:
        v = ast.literal_eval(meta.get("imgsz", ""))
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if is_int(v):
        v = [v, v]
    if (isinstance(v, list | tuple) and len(v) == 2 and all(is_int(x) and 0 < x <= 8192
                                                              for x in v)):
        return int(v[0]), int(v[1])
    return None


def classes_from_metadata(meta: dict[str, str]) -> tuple[str, ...] | None:
    for key in ("names", "classes", "labels"):
        if key in meta and (names := parse_names(meta[key])) is not None:
            return names
    return None


def class_group_ids(manifest: Manifest) -> np.ndarray:
    """NMS group per class id: its own index, or a shared one for `class_groups` members."""
    names = list(manifest.classes)
    group_of = {c: i for i, c in enumerate(names)}
    for gi, group in enumerate(manifest.class_groups):
        for c in group:
            if c not in group_of:
                raise ValueError(f"class group {list(group)} names unknown class {c!r}; "
                                 f"classes are {names}")
            group_of[c] = len(names) + gi
    return np.array([group_of[c] for c in names], np.int64)


def pick(scores: np.ndarray, conf: float, multi_label: bool
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, class, score) of every candidate above `conf` in a [N, C] score table.

    Multi-label keeps each class above the threshold (a row may give several
    detections); otherwise the best class per row.
    """
    if multi_label:
        ri, ci = np.nonzero(scores > conf)
    else:
        ci = scores.argmax(1)
        best = scores[np.arange(len(ci)), ci]
        ri = np.flatnonzero(best > conf)
        ci = ci[ri]
    return ri, ci, scores[ri, ci]


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    out = np.empty_like(xywh, dtype=np.float32)
    out[:, :2] = xywh[:, :2] - xywh[:, 2:4] / 2
    out[:, 2:] = xywh[:, :2] + xywh[:, 2:4] / 2
    return out


def class_nms(xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
              group_ids: np.ndarray, manifest: Manifest,
              float32_offsets: bool = False) -> np.ndarray:
    """edged's class-aware NMS with the manifest's class groups; kept indices, best first.
    `float32_offsets`: ultralytics'/yolov5's arithmetic (see edged.inference.nms)."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    if len(group_ids):
        named = group_ids[np.clip(class_ids, 0, len(group_ids) - 1)]
        # ids beyond the named classes (a graph with more classes than names) each get
        # a group of their own, numbered after every named group
        groups = np.where((class_ids >= 0) & (class_ids < len(group_ids)), named,
                          class_ids + int(group_ids.max()) + 1)
    else:
        groups = class_ids
    return nms(xyxy, scores, manifest.iou_threshold, groups=groups,
               max_keep=manifest.max_detections, float32_offsets=float32_offsets)


def mask_classes(manifest: Manifest) -> tuple[str, ...]:
    """Classes of the class-index mask painted from instances: 0 background, id + 1."""
    if manifest.seg_classes:
        return manifest.seg_classes
    return ("background", *manifest.classes)


def logit(p: float) -> float:
    """Threshold on logits equivalent to `sigmoid(x) > p` (no sigmoid over whole maps)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1), got {p}")
    return math.log(p / (1.0 - p))


def output_index(manifest: Manifest, output_names: list[str], role: str,
                 default: str | None = None) -> int:
    name = manifest.outputs.get(role, default)
    if name is None:
        raise ValueError(f"manifest names no output for {role!r} "
                         f"(outputs: {', '.join(output_names)})")
    if name not in output_names:
        raise ValueError(f"manifest output {role!r} = {name!r} is not a graph output "
                         f"({', '.join(output_names)})")
    return output_names.index(name)


def finite_rows(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """The candidate rows [n, k] whose every value is finite, and how many were not
    (for `Decoded.nonfinite`). A NaN score already fails every threshold; an Inf one
    passes it, and an Inf size makes a NaN box (inf - inf): both are dropped here,
    before any arithmetic, so none reaches the wire or numpy's overflow warnings."""
    ok = np.isfinite(rows).all(axis=1)
    if ok.all():
        return rows, 0
    return rows[ok], int(ok.size - np.count_nonzero(ok))


def finite_candidates(*columns: np.ndarray) -> tuple[np.ndarray, int]:
    """A boolean mask over candidate rows, True where every value of that row in each of
    `columns` (same length) is finite, and how many were not, as in `finite_rows`.
    For formats whose candidates come in several arrays (boxes, scores, labels)."""
    ok = np.ones(len(columns[0]), bool)
    if not ok.size:
        return ok, 0
    for col in columns:
        ok &= np.isfinite(col.reshape(len(col), -1)).all(axis=1)
    return ok, int(ok.size - np.count_nonzero(ok))
