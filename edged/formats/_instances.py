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

from edged.preprocess import Letterbox
from edged.results import instance_extents, nearest_indices

# (instance, rows, cols) -> that window of the instance's field, float
FieldFn = Callable[[int, slice, slice], np.ndarray]


def _axis(lo: int, hi: int, b_lo: float, b_hi: float, scale: float, pad: float, f_scale: float,
          f_off: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels lo..hi-1 along one axis: inside-the-box flags, field cells i0, i1, weight."""
    c = np.arange(lo, hi, dtype=np.float64) + 0.5
    inside = (c >= b_lo) & (c < b_hi)
    # camera -> model input -> field units, relative to cell centres
    f = (c * scale + pad) * f_scale + f_off - 0.5
    np.clip(f, 0.0, n - 1, out=f)
    i0 = f.astype(np.intp)  # f >= 0, so truncation is floor
    i1 = np.minimum(i0 + 1, n - 1)
    return inside, i0, i1, (f - i0).astype(np.float32)


def render(boxes_cam: np.ndarray, letterbox: Letterbox, field_hw: tuple[int, int],
           to_field: np.ndarray, field: FieldFn, threshold: float) -> list[np.ndarray]:
    """uint8 0/1 masks, one per camera box, each over `instance_extents(boxes_cam)`.

    `to_field` [k, 4]: per instance (sx, ox, sy, oy) with field_x = input_x * sx + ox,
    field_y = input_y * sy + oy (field units: cells of the `field_hw` map).
    """
    fh, fw = field_hw
    ext = instance_extents(boxes_cam)
    lb = letterbox
    masks: list[np.ndarray] = []
    for i in range(len(boxes_cam)):
        x0, y0, x1, y1 = (int(v) for v in ext[i])
        if x1 <= x0 or y1 <= y0:
            masks.append(np.zeros((y1 - y0, x1 - x0), np.uint8))
            continue
        bx1, by1, bx2, by2 = (float(v) for v in boxes_cam[i])
        sx, ox, sy, oy = (float(v) for v in to_field[i])
        inx, c0, c1, wx = _axis(x0, x1, bx1, bx2, lb.scale_x, lb.pad_x, sx, ox, fw)
        iny, r0, r1, wy = _axis(y0, y1, by1, by2, lb.scale_y, lb.pad_y, sy, oy, fh)
        rs = slice(int(r0[0]), int(r1[-1]) + 1)  # indices are monotonic in the pixel
        cs = slice(int(c0[0]), int(c1[-1]) + 1)
        f = np.asarray(field(i, rs, cs), np.float32)
        top, bottom = f[r0 - rs.start], f[r1 - rs.start]
        rows = top + (bottom - top) * wy[:, None]
        left, right = rows[:, c0 - cs.start], rows[:, c1 - cs.start]
        value = left + (right - left) * wx
        m = (value > threshold) & iny[:, None] & inx[None, :]
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
    values = np.clip(class_ids.astype(np.int64) + 1, 0, 255).astype(np.uint8)
    for i in np.argsort(scores, kind="stable"):
        x0, y0, x1, y1 = (int(v) for v in ext[i])
        ra, rb = np.searchsorted(ycam, (y0, y1))
        ca, cb = np.searchsorted(xcam, (x0, x1))
        if ra == rb or ca == cb:
            continue
        sub = masks[i][ycam[ra:rb] - y0][:, xcam[ca:cb] - x0].view(bool)
        out[ra:rb, ca:cb][sub] = values[i]
    return out
