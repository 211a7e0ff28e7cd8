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

from collections.abc import Callable

import numpy as np

from edged.inference.preprocess import Letterbox
from edged.results import instance_extents, nearest_indices

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
