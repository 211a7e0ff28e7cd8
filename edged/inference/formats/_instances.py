"""Instance masks: a model's mask field sampled at camera pixels, cropped to the box,
and painted into a class-index mask.

Every instance format ends here, so that all of them give the same masks:

- An instance mask covers the camera pixels of its box's extent
  (`edged.results.instance_extents`: x from floor(x1) to ceil(x2), end exclusive; y alike).
- Pixel (x, y) is 1 when its centre (x + 0.5, y + 0.5) lies in the box, [x1, x2) x [y1, y2),
  and the instance's field, sampled bilinearly at that centre, is above the threshold.
- A field is a 2-D map either over the whole model input (YOLO-seg and YOLACT prototypes
  combined with the instance's coefficients, SparseInst masks) or over the instance's
  box (Mask R-CNN RoI masks). Field cell (r, c) has its centre at (c + 0.5, r + 0.5) in
  field units; beyond the outermost centres the edge value holds (no fade to zero).

Sampling at camera pixels (not upsampling the field to the input and resizing again)
costs one bilinear lookup per box pixel and gives subscribers masks they can use without
any geometry of their own. The loop is over kept instances (at most max_detections);
everything per pixel is numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np

from edged.results import Letterbox, instance_extents, nearest_indices

# (instance, rows, cols) -> that window of the instance's field, float
FieldFn = Callable[[int, slice, slice], np.ndarray]


def _axes(lo: np.ndarray, hi: np.ndarray, b_lo: np.ndarray, b_hi: np.ndarray, scale: float,
          pad: float, f_scale: np.ndarray, f_off: np.ndarray, n: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every instance's pixels along one axis, concatenated (instance i's are
    offsets[i]:offsets[i + 1]): inside-the-box flags, field cells i0, i1 and weight.

    One pass for all instances, so the per-instance loop only slices.
    """
    lengths = np.maximum(hi - lo, 0)
    offsets = np.zeros(len(lo) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    owner = np.repeat(np.arange(len(lo)), lengths)
    c = (np.arange(offsets[-1]) - offsets[owner] + lo[owner]) + 0.5  # pixel centres
    inside = (c >= b_lo[owner]) & (c < b_hi[owner])
    # camera -> model input -> field units, relative to cell centres
    f = (c * scale + pad) * f_scale[owner] + f_off[owner] - 0.5
    np.clip(f, 0.0, n - 1, out=f)
    i0 = f.astype(np.intp)  # f >= 0, so truncation is floor
    i1 = np.minimum(i0 + 1, n - 1)
    return offsets, inside, i0, i1, (f - i0).astype(np.float32)


def render(boxes_cam: np.ndarray, letterbox: Letterbox, field_hw: tuple[int, int],
           to_field: np.ndarray, field: FieldFn, threshold: float) -> list[np.ndarray]:
    """uint8 0/1 masks, one per camera box, each over `instance_extents(boxes_cam)`.

    `to_field` [k, 4]: per instance (sx, ox, sy, oy) with field_x = input_x * sx + ox,
    field_y = input_y * sy + oy (field units: cells of the `field_hw` map).
    """
    fh, fw = field_hw
    ext = instance_extents(boxes_cam)
    lb = letterbox
    b = np.asarray(boxes_cam, np.float64).reshape(-1, 4)
    t = np.asarray(to_field, np.float64).reshape(-1, 4)
    xo, inx, c0, c1, wx = _axes(ext[:, 0], ext[:, 2], b[:, 0], b[:, 2], lb.scale_x, lb.pad_x,
                                t[:, 0], t[:, 1], fw)
    yo, iny, r0, r1, wy = _axes(ext[:, 1], ext[:, 3], b[:, 1], b[:, 3], lb.scale_y, lb.pad_y,
                                t[:, 2], t[:, 3], fh)
    masks: list[np.ndarray] = []
    for i in range(len(b)):
        xs, ys = slice(xo[i], xo[i + 1]), slice(yo[i], yo[i + 1])
        if xs.start == xs.stop or ys.start == ys.stop:
            masks.append(np.zeros((ys.stop - ys.start, xs.stop - xs.start), np.uint8))
            continue
        ir0, ir1, ic0, ic1 = r0[ys], r1[ys], c0[xs], c1[xs]
        # the window of the field these pixels read (indices grow with the pixel)
        rs, cs = slice(int(ir0[0]), int(ir1[-1]) + 1), slice(int(ic0[0]), int(ic1[-1]) + 1)
        f = np.asarray(field(i, rs, cs), np.float32)
        top, bottom = f[ir0 - rs.start], f[ir1 - rs.start]
        rows = top + (bottom - top) * wy[ys, None]
        left, right = rows[:, ic0 - cs.start], rows[:, ic1 - cs.start]
        value = left + (right - left) * wx[xs]
        m = (value > threshold) & iny[ys, None] & inx[None, xs]
        masks.append(m.view(np.uint8))
    return masks


def query_masks(maps: np.ndarray, picks: np.ndarray, boxes_cam: np.ndarray,
                class_ids: np.ndarray, scores: np.ndarray, letterbox: Letterbox,
                frame_w: int, frame_h: int, threshold: float
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Instance masks and the painted class mask from per-query maps [Q, h, w] over the
    whole model input (SparseInst, DETR-family mask heads): query picks[i] for box i."""
    mh, mw = maps.shape[1:]
    to_field = np.broadcast_to(np.array([mw / letterbox.input_w, 0.0,
                                         mh / letterbox.input_h, 0.0]), (len(picks), 4))

    def field(i: int, rs: slice, cs: slice) -> np.ndarray:
        return maps[picks[i], rs, cs]

    masks = render(boxes_cam, letterbox, (mh, mw), to_field, field, threshold)
    return masks, paint(masks, boxes_cam, class_ids, scores, letterbox, frame_w, frame_h)


def paint(masks: list[np.ndarray], boxes_cam: np.ndarray, class_ids: np.ndarray,
          scores: np.ndarray, letterbox: Letterbox, frame_w: int, frame_h: int) -> np.ndarray:
    """Class-index mask over the frame at the model's input resolution (the letterbox
    content, content_h x content_w): 0 background, class id + 1 where an instance is.

    Each cell takes the camera pixel under its centre (the protocol's nearest rule run
    backwards), so the painted mask is a subsample of the instance masks, never a
    different opinion. Higher scores are painted last and win overlaps. Class ids above
    254 are painted as 255.
    """
    mh, mw = letterbox.content_h, letterbox.content_w
    out = np.zeros((mh, mw), np.uint8)
    if not masks:
        return out
    ycam = nearest_indices(frame_h, mh)
    xcam = nearest_indices(frame_w, mw)
    ext = instance_extents(boxes_cam)
    # the cells whose camera pixel lies in each extent, for all instances at once
    rr = np.searchsorted(ycam, ext[:, 1::2]).tolist()
    cc = np.searchsorted(xcam, ext[:, 0::2]).tolist()
    x0s, y0s = ext[:, 0].tolist(), ext[:, 1].tolist()
    values = np.clip(class_ids.astype(np.int64) + 1, 0, 255).astype(np.uint8).tolist()
    for i in np.argsort(scores, kind="stable").tolist():
        (ra, rb), (ca, cb) = rr[i], cc[i]
        if ra == rb or ca == cb:
            continue
        sub = masks[i][ycam[ra:rb] - y0s[i]][:, xcam[ca:cb] - x0s[i]].view(bool)
        out[ra:rb, ca:cb][sub] = values[i]
    return out


class UltralyticsMasks:
    """Instance masks from prototypes the way ultralytics' `process_mask_native` makes
    them (its `retina_masks` path, the one that gives masks at the camera frame's size),
    so that edged serves the masks its users validated with ultralytics:

    1. the prototype logits are upsampled bilinearly by f = 1, 2 or 4 (the smallest
       factor that puts the letterbox padding on whole cells);
    2. the padding is cropped and the rest resized bilinearly to the frame;
    3. a pixel is set where that value is > 0 and its *index* (not its centre) lies in
       the box: x1 <= x < x2, y1 <= y < y2.

    Both resizes are linear and separable, so they fold into one matrix per axis
    (frame rows x prototype rows, frame columns x prototype columns), built once per
    frame size; an instance costs the two small products over its box's window. A
    row of the folded matrix has at most 3 non-zero taps, so the window is the box's
    rows plus a cell or two.
    """

    def __init__(self, rule: Literal["ultralytics", "yolov5"] = "ultralytics") -> None:
        # "ultralytics" (8.x process_mask_native) or "yolov5" (the yolov5 repository's
        # v7.0 process_mask_native: sigmoid first, the padding cropped on prototype cells
        # by int(), one bilinear resize of the probabilities, > 0.5)
        self.rule = rule
        self._axes: dict[tuple[int, int, int, int], tuple[_Axis, _Axis]] = {}

    def axes(self, frame_h: int, frame_w: int, mh: int, mw: int) -> tuple[_Axis, _Axis]:
        key = (frame_h, frame_w, mh, mw)
        found = self._axes.get(key)
        if found is None:
            if len(self._axes) > 16:  # a camera changing size now and then: keep it small
                self._axes.clear()
            make = _yolov5_axes if self.rule == "yolov5" else _ultralytics_axes
            found = self._axes[key] = make(frame_h, frame_w, mh, mw)
        return found

    def render(self, boxes_cam: np.ndarray, coefs: np.ndarray, protos: np.ndarray,
               frame_w: int, frame_h: int, threshold: float = 0.0) -> list[np.ndarray]:
        """uint8 0/1 masks, one per box, each over `instance_extents(boxes_cam)`;
        `threshold` on the logit (0: ultralytics' sigmoid > 0.5)."""
        mh, mw = protos.shape[1:]
        ay, ax = self.axes(frame_h, frame_w, mh, mw)
        ext = instance_extents(boxes_cam)
        b = np.asarray(boxes_cam, np.float32).reshape(-1, 4)
        # yolov5 compares probabilities, ultralytics logits
        cut = 1.0 / (1.0 + math.exp(-threshold)) if self.rule == "yolov5" else threshold
        masks: list[np.ndarray] = []
        for i in range(len(b)):
            ex0, ey0, ex1, ey1 = (int(v) for v in ext[i])
            out = np.zeros((ey1 - ey0, ex1 - ex0), np.uint8)
            # the pixels whose index lies in the box, as ultralytics' crop_mask tests it
            x0, x1 = ax.span(b[i, 0], b[i, 2])
            y0, y1 = ay.span(b[i, 1], b[i, 3])
            if x0 < x1 and y0 < y1:
                ra, rb = ay.window(y0, y1)
                ca, cb = ax.window(x0, x1)
                field = np.einsum("m,mhw->hw", coefs[i], protos[:, ra:rb, ca:cb])
                if self.rule == "yolov5":  # probabilities are resized, not logits
                    field = 0.5 * (1.0 + np.tanh(0.5 * field))  # sigmoid, no overflow
                value = ay.matrix[y0:y1, ra:rb] @ field @ ax.matrix[x0:x1, ca:cb].T
                out[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0] = value > cut
            masks.append(out)
        return masks


class _Axis:
    """One axis of the folded resize: `matrix` [frame pixels, prototype cells] and,
    per frame pixel, the first and last cell it reads."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.ascontiguousarray(matrix, np.float32)
        nz = matrix != 0
        n = matrix.shape[1]
        self.first = np.where(nz.any(1), nz.argmax(1), 0)
        self.last = np.where(nz.any(1), n - 1 - nz[:, ::-1].argmax(1), 0)
        self.size = matrix.shape[0]

    def span(self, lo: np.floating, hi: np.floating) -> tuple[int, int]:
        """Indices i with lo <= i < hi, clipped to the frame (lo, hi float32)."""
        a = max(int(np.ceil(lo)), 0)
        b = min(int(np.ceil(hi)), self.size)
        return a, max(a, b)

    def window(self, a: int, b: int) -> tuple[int, int]:
        return int(self.first[a]), int(self.last[b - 1]) + 1


def _torch_bilinear(n_out: int, n_in: int, scale: float) -> np.ndarray:
    """[n_out, n_in] weights of torch's bilinear resize along one axis
    (align_corners=False): source = (dst + 0.5) * scale - 0.5, clamped at 0."""
    m = np.zeros((n_out, n_in), np.float64)
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def _yolov5_axes(h: int, w: int, mh: int, mw: int) -> tuple[_Axis, _Axis]:
    """yolov5 v7.0's process_mask_native: the letterbox padding cropped on prototype
    cells (int() of the fractional padding), the rest resized bilinearly to h x w."""
    gain = min(mh / h, mw / w)
    pad_w, pad_h = (mw - w * gain) / 2, (mh - h * gain) / 2
    top, left = int(pad_h), int(pad_w)
    bottom, right = int(mh - pad_h), int(mw - pad_w)
    ry = np.zeros((h, mh))
    ry[:, top:bottom] = _torch_bilinear(h, bottom - top, (bottom - top) / h)
    rx = np.zeros((w, mw))
    rx[:, left:right] = _torch_bilinear(w, right - left, (right - left) / w)
    return _Axis(ry), _Axis(rx)


def _ultralytics_axes(h: int, w: int, mh: int, mw: int) -> tuple[_Axis, _Axis]:
    """The folded (upsample by f, crop the padding, resize to h x w) matrices of
    ultralytics' process_mask_native and scale_masks, Python rounding included."""
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    uh, uw = f * mh, f * mw
    up_y = _torch_bilinear(uh, mh, 1 / f) if f > 1 else np.eye(mh)
    up_x = _torch_bilinear(uw, mw, 1 / f) if f > 1 else np.eye(mw)
    if (uh, uw) == (h, w):  # scale_masks returns such masks as they are
        return _Axis(up_y), _Axis(up_x)
    g = min(uh / h, uw / w)
    ch, cw = max(round(h * g), 1), max(round(w * g), 1)
    top, left = round((uh - ch) / 2 - 0.1), round((uw - cw) / 2 - 0.1)
    ry = np.zeros((h, uh))
    ry[:, top:top + ch] = _torch_bilinear(h, ch, ch / h)
    rx = np.zeros((w, uw))
    rx[:, left:left + cw] = _torch_bilinear(w, cw, cw / w)
    return _Axis(ry @ up_y), _Axis(rx @ up_x)
