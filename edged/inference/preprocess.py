"""Pre-processing: camera frame (BGR uint8) -> model input tensor, without needless copies.

The geometry of the letterbox is kept in a `Letterbox` so that boxes and masks can be
mapped back to camera pixels exactly, and travels in the wire protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edged.results import Letterbox, Resize

Interpolation = Literal["linear", "area", "nearest", "pil_bilinear", "pil_bicubic"]
INTERPOLATIONS: tuple[str, ...] = ("linear", "area", "nearest", "pil_bilinear", "pil_bicubic")


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """The model's pre-processing, from its manifest: never a hidden constant."""

    input_w: int = 416
    input_h: int = 416
    color: Literal["rgb", "bgr"] = "rgb"
    resize: Resize = "letterbox"
    align: Literal["center", "topleft"] = "center"
    pad_value: int = 0
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] | None = None  # in scaled units, per input channel
    std: tuple[float, float, float] | None = None
    # linear, area, nearest: OpenCV's resize. pil_bilinear, pil_bicubic: Pillow's
    # Image.resize (what transformers' image processors and torchvision on PIL images
    # do), which widens its filter when it shrinks (antialiasing); `resample`.
    interpolation: Interpolation = "linear"
    # "fixed": every frame goes into input_w x input_h (letterbox or stretch).
    # "keep_ratio": the input follows the frame (a graph with dynamic H and W, e.g.
    # PP-OCR's DBNet): scaled so that its longer side ("max") is at most limit_side, or
    # its shorter side ("min") at least limit_side, each side then rounded to a multiple
    # of `multiple`, and the frame stretched onto that (a sliver of aspect change, no
    # padding), as PP-OCR's DetResizeForTest does.
    size: Literal["fixed", "keep_ratio"] = "fixed"
    limit_side: int = 960
    limit_type: Literal["max", "min"] = "max"
    multiple: int = 32

    def size_rule(self) -> str:
        """How the input size is chosen, in words (for reports and error messages)."""
        if self.size != "keep_ratio":
            return f"{self.input_w}x{self.input_h}"
        return (f"keep_ratio, {self.limit_type} side {self.limit_side}, multiple of "
                f"{self.multiple}")

    def input_size(self, frame_w: int, frame_h: int) -> tuple[int, int]:
        """(width, height) of the model input for a frame of this size."""
        if self.size != "keep_ratio":
            return self.input_w, self.input_h
        long, short = max(frame_w, frame_h), min(frame_w, frame_h)
        ratio = 1.0
        if self.limit_type == "max" and long > self.limit_side:
            ratio = self.limit_side / long
        elif self.limit_type == "min" and short < self.limit_side:
            ratio = self.limit_side / short
        k = self.multiple
        # PaddleOCR's order: truncate the scaled side, then round it to the multiple
        return (max(int(round(int(frame_w * ratio) / k) * k), k),
                max(int(round(int(frame_h * ratio) / k) * k), k))


_INTERP = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}

# Pillow's fixed-point resampling (libImaging/Resample.c): coefficients scaled by 2**22,
# a half added before the shift, each pass rounded and clipped to uint8
_PIL_BITS = 22


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_PIL_FILTERS = {"pil_bilinear": (_triangle, 1.0), "pil_bicubic": (_bicubic, 2.0)}


def _pil_taps(in_size: int, out_size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(source index [out, k], int64 weight [out, k]) of Pillow's resampling of one
    axis: its filter, widened by the shrink factor, centred on each output pixel and
    normalised to sum 1 before the fixed-point rounding (precompute_coeffs)."""
    fn, support = _PIL_FILTERS[kind]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    # C's (int) truncates towards zero; the clamps make that floor here
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    j = np.arange(ksize)
    w = fn((j[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale)
    w = np.where(j[None, :] < xmax[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * (1 << _PIL_BITS)),
                     np.trunc(0.5 + w * (1 << _PIL_BITS))).astype(np.int64)
    idx = np.minimum(j[None, :] + xmin[:, None], in_size - 1)
    return idx, fixed


def _pil_rows(rows: np.ndarray, idx: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """One pass of Pillow's resampling over the first axis of a 2-D uint8 array: output
    row i = sum over taps k of rows[idx[i, k]] * fixed[i, k], rounded, clipped. Whole
    rows are gathered (contiguous copies), the cheap direction for numpy."""
    # int32 holds the sums: 255 * 2**22 * (the positive weights' sum, at most ~1.1 for
    # the bicubic filter) stays below 2**31
    weights = fixed.astype(np.int32)[:, :, None]
    acc = rows[idx[:, 0]].astype(np.int32)
    acc *= weights[:, 0]
    acc += 1 << (_PIL_BITS - 1)
    tap = np.empty_like(acc)
    for k in range(1, idx.shape[1]):
        np.copyto(tap, rows[idx[:, k]], casting="unsafe")
        tap *= weights[:, k]
        acc += tap
    acc >>= _PIL_BITS
    return np.clip(acc, 0, 255).astype(np.uint8)


class PilResize:
    """Pillow's Image.resize(size, BILINEAR or BICUBIC) of uint8 HxWxC images, bit-exact:
    the horizontal pass then the vertical one, each only where that side changes. The
    filter tables are kept per (input size, output size)."""

    def __init__(self, kind: str) -> None:
        if kind not in _PIL_FILTERS:
            raise ValueError(f"not a Pillow filter: {kind!r} (use {', '.join(_PIL_FILTERS)})")
        self.kind = kind
        self._taps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _table(self, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
        key = (in_size, out_size)
        taps = self._taps.get(key)
        if taps is None:
            if len(self._taps) > 16:  # frames of ever new sizes: keep it bounded
                self._taps.clear()
            taps = self._taps[key] = _pil_taps(in_size, out_size, self.kind)
        return taps

    def __call__(self, img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """`img` (HxWxC uint8) resized to `size` (width, height)."""
        w, h = size
        ih, iw, c = img.shape
        out = img
        if w != iw:  # along the width: on the transposed image, so that rows are gathered
            cols = np.ascontiguousarray(img.transpose(1, 0, 2)).reshape(iw, ih * c)
            out = _pil_rows(cols, *self._table(iw, w)).reshape(w, ih, c).transpose(1, 0, 2)
        if h != ih:
            rows = np.ascontiguousarray(out).reshape(ih, w * c)
            out = _pil_rows(rows, *self._table(ih, h)).reshape(h, w, c)
        return np.ascontiguousarray(out)


def resize_image(frame: np.ndarray, size: tuple[int, int], interpolation: str,
                 dst: np.ndarray | None = None, pil: PilResize | None = None) -> np.ndarray:
    """`frame` resized to `size` (width, height) by the spec's interpolation."""
    if interpolation in _PIL_FILTERS:
        out = (pil or PilResize(interpolation))(frame, size)
        if dst is None:
            return out
        dst[...] = out
        return dst
    if dst is None:
        return cv2.resize(frame, size, interpolation=_INTERP[interpolation])
    return cv2.resize(frame, size, dst=dst, interpolation=_INTERP[interpolation])


class Preprocessor:
    """Fills a preallocated NCHW float32 buffer from BGR frames.

    One instance per worker thread: the buffers are reused for every frame, so the
    hot path allocates nothing for frames of a size it has seen before.
    """

    def __init__(self, spec: PreprocessSpec, batch: int = 1) -> None:
        if spec.size == "keep_ratio" and batch != 1:
            raise ValueError("a size rule that follows the frame (keep_ratio) runs one frame "
                             "at a time")
        if spec.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"got {spec.interpolation!r}")
        self.spec = spec
        self._pil = PilResize(spec.interpolation) if spec.interpolation in _PIL_FILTERS \
            else None
        self.tensor = np.zeros((batch, 3, spec.input_h, spec.input_w), np.float32)
        # keep_ratio: one tensor per input size; `tensor` is the last one filled
        self._tensors: dict[tuple[int, int], np.ndarray] = {}
        self._resized: dict[tuple[int, int], np.ndarray] = {}
        self._planes: dict[tuple[int, int], list[np.ndarray]] = {}
        self._boxes: dict[tuple[int, int], Letterbox] = {}
        self._dirty = np.ones(batch, bool)  # padding must be (re)written for this slot
        self._last_box: list[Letterbox | None] = [None] * batch
        sc = spec.scale
        mean = np.zeros(3) if spec.mean is None else np.asarray(spec.mean, np.float64)
        std = np.ones(3) if spec.std is None else np.asarray(spec.std, np.float64)
        # out = (pixel * scale - mean) / std = pixel * mul + add, per input channel
        self._mul = (sc / std).astype(np.float32)
        self._add = (-mean / std).astype(np.float32)
        self._pad = (spec.pad_value * self._mul + self._add).astype(np.float32)
        # input channel c reads BGR channel order[c]
        self._order = (2, 1, 0) if spec.color == "rgb" else (0, 1, 2)

    def letterbox(self, frame_w: int, frame_h: int) -> Letterbox:
        key = (frame_w, frame_h)
        box = self._boxes.get(key)
        if box is None:
            s = self.spec
            if s.size == "keep_ratio":
                iw, ih = s.input_size(frame_w, frame_h)
                box = Letterbox.fit(frame_w, frame_h, iw, ih, "stretch")
            else:
                box = Letterbox.fit(frame_w, frame_h, s.input_w, s.input_h, s.resize, s.align)
            self._boxes[key] = box
        return box

    def __call__(self, frame: np.ndarray, slot: int = 0) -> Letterbox:
        """Write `frame` into batch slot `slot` of `self.tensor`; return its geometry."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        box = self.letterbox(w, h)
        key = (box.content_w, box.content_h)
        resized = self._resized.get(key)
        if resized is None:
            resized = np.empty((box.content_h, box.content_w, 3), np.uint8)
            self._resized[key] = resized
        if (w, h) == key:
            resized[...] = frame
        else:
            resize_image(frame, key, self.spec.interpolation, resized, self._pil)
        if self.spec.size == "keep_ratio":
            size = (box.input_w, box.input_h)
            tensor = self._tensors.get(size)
            if tensor is None:
                if len(self._tensors) > 8:  # frames of ever new sizes: keep it bounded
                    self._tensors.clear()
                tensor = self._tensors[size] = np.zeros((1, 3, box.input_h, box.input_w),
                                                        np.float32)
            if tensor is not self.tensor:
                self.tensor = tensor
                self._last_box[slot] = None
        out = self.tensor[slot]
        if self._last_box[slot] != box:
            for c in range(3):
                out[c].fill(self._pad[c])
            self._last_box[slot] = box
        ys = slice(box.pad_y, box.pad_y + box.content_h)
        xs = slice(box.pad_x, box.pad_x + box.content_w)
        # contiguous planes first: converting them is twice as fast as reading every
        # third byte of the interleaved image (0.06 vs 0.13 ms at 416x312)
        planes = self._planes.get(key)
        if planes is None:
            planes = self._planes[key] = [np.empty((box.content_h, box.content_w), np.uint8)
                                          for _ in range(3)]
        cv2.split(resized, planes)
        for c, src in enumerate(self._order):
            dst = out[c, ys, xs]
            np.multiply(planes[src], self._mul[c], out=dst, casting="unsafe")
            if self._add[c] != 0.0:
                dst += self._add[c]
        return box


def letterbox_image(frame: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, Letterbox]:
    """uint8 HxWx3 image in the model's input geometry (training and visualisation)."""
    h, w = frame.shape[:2]
    box = Letterbox.fit(w, h, spec.input_w, spec.input_h, spec.resize, spec.align)
    out = np.full((spec.input_h, spec.input_w, 3), spec.pad_value, np.uint8)
    out[box.pad_y:box.pad_y + box.content_h, box.pad_x:box.pad_x + box.content_w] = \
        resize_image(frame, (box.content_w, box.content_h), spec.interpolation)
    return out, box


def letterbox_labels(labels: np.ndarray, box: Letterbox, fill: int = 0) -> np.ndarray:
    """A label map placed like its frame, nearest neighbour, padding = `fill`."""
    out = np.full((box.input_h, box.input_w), fill, labels.dtype)
    out[box.pad_y:box.pad_y + box.content_h, box.pad_x:box.pad_x + box.content_w] = cv2.resize(
        labels, (box.content_w, box.content_h), interpolation=cv2.INTER_NEAREST)
    return out
