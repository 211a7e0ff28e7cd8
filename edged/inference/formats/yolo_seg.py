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

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from edged.inference.formats._common import (
    Decoded,
    FormatError,
    Hints,
    TensorInfo,
    batch1,
    class_group_ids,
    class_nms,
    dims,
    finite_rows,
    from_ultralytics,
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
    ultralytics_end2end,
    ultralytics_imgsz,
    xywh_to_xyxy,
    yolo_anchor_counts,
)
from edged.inference.formats._instances import UltralyticsMasks, paint, render
from edged.inference.manifest import Manifest
from edged.results import Detections, Letterbox

Layout = Literal["anchors_last", "rows", "end2end"]
LAYOUTS: tuple[Layout, ...] = ("anchors_last", "rows", "end2end")
MaskMode = Literal["ultralytics", "yolov5", "direct"]
ULTRALYTICS_NAMES = ("output0", "output1")


@dataclass(frozen=True, slots=True)
class Roles:
    det: TensorInfo
    protos: TensorInfo | None
    layout: Layout
    classes: int  # 0 for end2end: the class is an id column, the count is not in the shape
    masks: int
    why: str


def detection_readings(inputs: list[TensorInfo], det: TensorInfo, masks: int,
                       strict: bool = True) -> list[Roles]:
    """Every way a [1, a, b] detections tensor reads with M = `masks` coefficients.

    Strict (format: auto): with a fixed input size the anchor count must be one a YOLO
    head gives at that size (the evidence that tells YOLO rows from other [1, N, K]
    tables), and an end-to-end table must not have such a count. Otherwise, and with
    dynamic axes, the longer axis is the anchors. More than one reading means the
    shapes cannot tell; the caller asks for `model.layout` unless metadata tells.
    """
    if len(det.shape) != 3 or not is_float(det) or not batch1(det.shape[0]):
        return []
    a, b = det.shape[1], det.shape[2]
    hw = input_hw(inputs) if strict else None
    counts = yolo_anchor_counts(*hw) if hw is not None else {}
    out: list[Roles] = []
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
        out.append(Roles(det, None, layout, n_cls, masks,
                         f"{det.name} {dims(det)} = {layout} layout ({what}), {evidence}"))
    # end-to-end (ultralytics nms=True, YOLO26): [1, N, 6+M] rows x1 y1 x2 y2 score class
    if b == 6 + masks and (not is_int(a) or (a > b and a not in counts)):
        what = "x1 y1 x2 y2 score class" + (f" + {masks} mask coefficients" if masks else "")
        n = f"{a} detections" if is_int(a) else "a dynamic number of detections"
        out.append(Roles(det, None, "end2end", 0, masks,
                         f"{det.name} {dims(det)} = end2end layout ({what}; {n}, NMS done "
                         f"in the graph)"))
    return out


def choose(readings: list[Roles], hints: Hints | None, fmt: str) -> Roles | None:
    """The one reading the evidence allows (the config's model.layout first, then the
    exporter's metadata); FormatError when the shapes fit several and nothing tells
    them apart."""
    if hints is not None and hints.layout is not None:
        if hints.layout not in LAYOUTS:
            raise FormatError(f"model.layout must be one of {', '.join(LAYOUTS)}, "
                              f"got {hints.layout!r}")
        readings = [r for r in readings if r.layout == hints.layout]
        return readings[0] if readings else None
    if len(readings) <= 1:
        return readings[0] if readings else None
    e2e = None if hints is None else ultralytics_end2end(hints.metadata)
    if e2e is not None:
        told = [r for r in readings if (r.layout == "end2end") == e2e]
        if len(told) == 1:
            r = told[0]
            return Roles(r.det, r.protos, r.layout, r.classes, r.masks,
                         f"{r.why}; the ultralytics metadata says end2end={e2e}")
    raise FormatError(
        f"the {fmt} outputs read in more than one way: "
        + "; or ".join(r.why for r in readings)
        + f"; set model.layout to one of {', '.join(r.layout for r in readings)}")


def detection_roles(inputs: list[TensorInfo], det: TensorInfo, masks: int,
                    strict: bool = True, hints: Hints | None = None,
                    fmt: str = "yolo") -> Roles | None:
    return choose(detection_readings(inputs, det, masks, strict), hints, fmt)


def _proto_ok(inputs: list[TensorInfo], p: TensorInfo) -> bool:
    if len(p.shape) != 4 or not is_float(p) or not is_int(p.shape[1]) or not batch1(
            p.shape[0]):
        return False
    hw = input_hw(inputs)
    ph, pw = p.shape[2], p.shape[3]
    if hw is None or not (is_int(ph) and is_int(pw)):
        return True
    # ultralytics prototypes are the stride-4 map of the whole input
    return (ph, pw) == (-(-hw[0] // 4), -(-hw[1] // 4))


def roles(inputs: list[TensorInfo], outputs: list[TensorInfo], strict: bool = True,
          hints: Hints | None = None) -> Roles | None:
    if image_input(inputs) is None or len(inputs[0].shape) != 4 or len(outputs) != 2:
        return None
    for det, p in ((outputs[0], outputs[1]), (outputs[1], outputs[0])):
        if not _proto_ok(inputs, p):
            continue
        n_masks = p.shape[1]
        assert is_int(n_masks)  # _proto_ok checked it
        r = detection_roles(inputs, det, n_masks, strict, hints, "yolo-seg")
        if r is not None:
            return Roles(det, p, r.layout, r.classes, r.masks,
                         f"{r.why}; prototypes {p.name} {dims(p)} at 1/4 input resolution")
    return None


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    r = roles(inputs, outputs, hints=hints)
    return None if r is None else f"YOLO-seg: {r.why}"


def fits(inputs: list[TensorInfo], outputs: list[TensorInfo],
         hints: Hints | None = None) -> str | None:
    """For `format: yolo-seg` in the config: any anchor count."""
    r = roles(inputs, outputs, strict=False, hints=hints)
    return None if r is None else f"YOLO-seg: {r.why}"


def names_match(outputs: list[TensorInfo]) -> bool:
    return tuple(o.name for o in outputs) == ULTRALYTICS_NAMES


def metadata_match(hints: Hints | None) -> bool | None:
    """An ultralytics export of a YOLO head (not its RT-DETR decoder)."""
    if hints is None or not from_ultralytics(hints.metadata):
        return None
    return "rtdetr" not in hints.metadata.get("head", "").lower()


def manifest_for(inputs: list[TensorInfo], r: Roles, fmt: str,
                 hints: Hints | None = None) -> Manifest:
    outs = {"detections": r.det.name}
    if r.protos is not None:
        outs["protos"] = r.protos.name
    options: dict[str, object] = {"layout": r.layout}
    if r.protos is not None:
        options["mask_threshold"] = 0.5
        # a v5 table comes from the yolov5 repository, whose masks follow its own rule
        options["mask_mode"] = "yolov5" if r.layout == "rows" else "ultralytics"
    # ultralytics letterboxes with grey 114 padding, RGB, 0..1; conf/iou are its defaults.
    # A dynamic-size export is served at the size it was exported for (metadata imgsz).
    default = None if hints is None else ultralytics_imgsz(hints.metadata)
    pre = preprocess_for(inputs, pad_value=114)
    if input_hw(inputs) is None and default is not None:
        pre = replace(pre, input_h=default[0], input_w=default[1])
    # the yolov5 repository's predict defaults for its tables: IoU 0.45, max_det 1000
    v5 = r.layout == "rows"
    return Manifest(format=fmt, input_name=inputs[0].name, outputs=outs, preprocess=pre,
                    classes=generic_classes(r.classes), conf_threshold=0.25,
                    iou_threshold=0.45 if v5 else 0.7, max_detections=1000 if v5 else 300,
                    multi_label=False, options=options)


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    r = roles(inputs, outputs, hints=hints) or roles(inputs, outputs, strict=False, hints=hints)
    if r is None:
        raise ValueError("outputs do not follow the yolo-seg layout")
    return manifest_for(inputs, r, "yolo-seg", hints)


def yolov5_boxes_to_camera(xyxy: np.ndarray, letterbox: Letterbox, frame_w: int,
                           frame_h: int) -> np.ndarray:
    """The yolov5 repository's scale_boxes: input pixels -> frame pixels with the exact
    (unrounded) gain and padding, where ultralytics 8 (and edged's letterbox) use the
    rounded ones its LetterBox placed; then rounded to whole pixels, as its predict.py
    does before it crops the masks."""
    gain = min(letterbox.input_h / frame_h, letterbox.input_w / frame_w)
    pad_x = (letterbox.input_w - frame_w * gain) / 2
    pad_y = (letterbox.input_h - frame_h * gain) / 2
    out = np.empty_like(xyxy, dtype=np.float32)
    out[:, 0::2] = (xyxy[:, 0::2] - pad_x) / gain
    out[:, 1::2] = (xyxy[:, 1::2] - pad_y) / gain
    np.clip(out[:, 0::2], 0, frame_w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, frame_h, out=out[:, 1::2])
    return np.round(out)


class Adapter:
    """Scores -> class-aware NMS -> boxes (or the graph's own NMS: end2end), and for the
    kept boxes the instance masks."""

    def __init__(self, manifest: Manifest, output_names: list[str]) -> None:
        self.manifest = manifest
        self.det_index = output_index(manifest, output_names, "detections", output_names[0])
        self.proto_index = (output_index(manifest, output_names, "protos")
                            if "protos" in manifest.outputs else None)
        layout = manifest.options.get("layout", "anchors_last")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'anchors_last' (YOLOv8/11), 'rows' (YOLOv5) or "
                             f"'end2end' (NMS in the graph: nms=True, YOLO26), got {layout!r}")
        self.layout: Layout = layout
        mode = manifest.options.get("mask_mode", "ultralytics")
        if mode not in get_args(MaskMode):
            raise ValueError(f"mask_mode must be 'ultralytics' (its retina_masks rule, the "
                             f"default), 'yolov5' (the yolov5 repository's) or 'direct' (one "
                             f"bilinear sample per camera pixel), got {mode!r}")
        self.mask_mode: MaskMode = mode
        self.threshold = logit(float(manifest.options.get("mask_threshold", 0.5)))
        self.group_ids = class_group_ids(manifest)
        self.mask_classes = mask_classes(manifest)
        self._ultralytics = UltralyticsMasks("yolov5" if mode == "yolov5" else "ultralytics")

    def _candidates(self, table: np.ndarray, n_masks: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """(input-pixel xyxy boxes, scores, class ids, mask coefficients) of the kept
        detections, best first, and how many candidate rows were dropped for NaN/Inf."""
        m = self.manifest
        conf = m.conf_threshold
        if self.layout == "end2end":
            # [N, 6+M], sorted by score; ultralytics keeps score > conf, then max_det
            if table.shape[1] != 6 + n_masks:
                raise ValueError(f"end2end detections have {table.shape[1]} columns, not "
                                 f"6 + {n_masks} mask coefficients")
            rows, bad = finite_rows(table[table[:, 4] > conf])
            rows = rows[:m.max_detections]
            ids = rows[:, 5].astype(np.int32)
            return (rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), ids,
                    rows[:, 6:].astype(np.float32), bad)
        if self.layout == "anchors_last":
            # [4+C+M, A]: the class rows are contiguous, so max/argmax over them is fast
            n_cls = table.shape[0] - 4 - n_masks
            if n_cls < 1:
                raise ValueError(f"detections {list(table.shape)} leave no class scores with "
                                 f"{n_masks} mask coefficients")
            best = table[4:4 + n_cls].max(0)
            cand = np.flatnonzero(best > conf)
            # [n, 4+C+M], only the candidates are transposed
            rows, bad = finite_rows(table[:, cand].T)
            scores = rows[:, 4:4 + n_cls]
        else:
            n_cls = table.shape[1] - 5 - n_masks
            if n_cls < 1:
                raise ValueError(f"detections {list(table.shape)} leave no class scores with "
                                 f"{n_masks} mask coefficients")
            cand = np.flatnonzero(table[:, 4] > conf)
            rows, bad = finite_rows(table[cand])
            scores = rows[:, 5:5 + n_cls] * rows[:, 4:5]
        ri, ci, sc = pick(scores, conf, m.multi_label)
        xyxy = xywh_to_xyxy(rows[ri, :4])
        # the reference NMS arithmetic, unless the masks follow edged's own rule
        keep = class_nms(xyxy, sc, ci, self.group_ids, m,
                         float32_offsets=self.mask_mode != "direct")
        coefs = rows[ri[keep], rows.shape[1] - n_masks:].astype(np.float32)
        return (xyxy[keep], sc[keep].astype(np.float32), ci[keep].astype(np.int32), coefs,
                bad)

    def postprocess(self, outputs: list[np.ndarray], letterbox: Letterbox, frame_w: int,
                    frame_h: int) -> Decoded:
        det = outputs[self.det_index]
        protos = None if self.proto_index is None else outputs[self.proto_index][0]
        n_masks = 0 if protos is None else protos.shape[0]
        boxes_in, scores, ids, coefs, bad = self._candidates(det[0], n_masks)
        if protos is None and len(scores) == 0:
            return Decoded(Detections.empty(), None, bad)
        if self.mask_mode == "yolov5" and protos is not None:
            boxes = yolov5_boxes_to_camera(boxes_in, letterbox, frame_w, frame_h)
        else:
            boxes = letterbox.boxes_to_camera(boxes_in, frame_w, frame_h)
        if protos is None:
            return Decoded(Detections(boxes, scores, ids), None, bad)
        if self.mask_mode in ("ultralytics", "yolov5"):
            masks = self._ultralytics.render(boxes, coefs, protos, frame_w, frame_h,
                                             self.threshold)
            # ultralytics 8 drops a detection whose mask came out empty, and so does
            # edged then; the yolov5 repository keeps it
            keep = [i for i, mk in enumerate(masks) if self.mask_mode == "yolov5" or mk.any()]
            if len(keep) < len(masks):
                boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
                masks = [masks[i] for i in keep]
        else:
            masks = self._direct(boxes, coefs, protos, letterbox)
        class_mask = paint(masks, boxes, ids, scores, letterbox, frame_w, frame_h)
        return Decoded(Detections(boxes, scores, ids, instance_masks=masks), class_mask, bad)

    def _direct(self, boxes: np.ndarray, coefs: np.ndarray, protos: np.ndarray,
                letterbox: Letterbox) -> list[np.ndarray]:
        ph, pw = protos.shape[1:]
        # prototypes cover the whole model input
        scale = np.array([pw / letterbox.input_w, 0.0, ph / letterbox.input_h, 0.0], np.float64)
        to_field = np.broadcast_to(scale, (len(boxes), 4))

        def field(i: int, rs: slice, cs: slice) -> np.ndarray:
            # only the window under the box; einsum, not a BLAS product: multi-threaded
            # OpenBLAS would fight ONNX Runtime's threads for the cores (one product for
            # all instances measured 2 ms -> 8-16 ms median on a busy 2-core machine)
            return np.einsum("m,mhw->hw", coefs[i], protos[:, rs, cs])

        return render(boxes, letterbox, (ph, pw), to_field, field, self.threshold)
