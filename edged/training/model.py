"""The demo YOEO-style network: one encoder, a YOLO detection head, a U-Net-like decoder.


Sized for an onboard CPU (about 1 GFLOP at 416x416). Detection is anchor-free at three
strides (8, 16, 32: 52x52 + 26x26 + 13x13 = 3549 rows); the box decode, the sigmoids and
the segmentation argmax are inside the exported graph so that its outputs follow the
YOEO contract exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDES = (8, 16, 32)
ANCHORS = (12.0, 64.0, 200.0)  # box-size prior per level, input pixels
NUM_CLASSES = 3
NUM_SEG = 3
SHUFFLE = 4  # each /4 cell of the decoder predicts its 4x4 pixels


def cbr(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DemoYOEO(nn.Module):
    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [max(8, int(round(v * width))) for v in (32, 32, 48, 96, 160)]
        # patchify stem straight to /4: a 3-channel conv at high resolution is slow in
        # int8, and the /2 level is not needed once the mask is predicted by pixel shuffle
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 4, 4, 0, bias=False), nn.BatchNorm2d(c[0]),
                                  nn.ReLU(inplace=True))
        self.s4 = cbr(c[0], c[1])  # /4
        self.s8 = nn.Sequential(cbr(c[1], c[2], s=2), cbr(c[2], c[2]))
        self.s16 = nn.Sequential(cbr(c[2], c[3], s=2), cbr(c[3], c[3]))
        self.s32 = nn.Sequential(cbr(c[3], c[4], s=2), cbr(c[4], c[4]))
        # FPN
        f = c[3]
        self.lat32 = cbr(c[4], f, k=1)
        self.lat16 = cbr(c[3], f, k=1)
        self.fuse16 = cbr(f, f)
        self.top8 = cbr(f, c[2], k=1)
        self.fuse8 = cbr(c[2], c[2])
        self.head = nn.ModuleList([nn.Conv2d(ch, 4 + 1 + NUM_CLASSES, 1) for ch in (c[2], f, f)])
        # segmentation decoder: /8 -> /4, then each /4 cell predicts its 4x4 pixels'
        # logits (pixel shuffle), so thin lines get full-resolution edges without any
        # full-resolution convolution
        d4 = 32
        self.up4_a = cbr(c[2], d4, k=1)
        self.up4_b = cbr(c[1], d4, k=1)
        self.dec4 = cbr(d4, d4)
        self.seg = nn.Conv2d(d4, NUM_SEG * SHUFFLE * SHUFFLE, 1)
        for h in self.head:  # prior: objects are rare (p ~ 0.01)
            nn.init.constant_(h.bias[4], -4.6)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        raw, cells = self.cell_logits(x)
        return raw, F.pixel_shuffle(cells, SHUFFLE)

    def cell_logits(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Raw head outputs and the segmentation logits before the pixel shuffle:
        [B, NUM_SEG * 16, H/4, W/4], channel c * 16 + 4 * dy + dx for class c at (dy, dx)."""
        x4 = self.s4(self.stem(x))
        x8 = self.s8(x4)
        x16 = self.s16(x8)
        x32 = self.s32(x16)
        p32 = self.lat32(x32)
        p16 = self.fuse16(self.lat16(x16) + F.interpolate(p32, scale_factor=2.0, mode="nearest"))
        p8 = self.fuse8(x8 + self.top8(F.interpolate(p16, scale_factor=2.0, mode="nearest")))
        raw = [h(p) for h, p in zip(self.head, (p8, p16, p32))]
        d4 = self.dec4(self.up4_b(x4) + F.interpolate(self.up4_a(p8), scale_factor=2.0,
                                                      mode="nearest"))
        return raw, self.seg(d4)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.features(x)


def decode_level(raw: torch.Tensor, stride: int, anchor: float) -> torch.Tensor:
    """[B, 8, H, W] raw head output -> [B, H*W, 8] rows (cx, cy, w, h, obj, classes...)."""
    b, _, h, w = raw.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=raw.dtype), torch.arange(w, dtype=raw.dtype),
                            indexing="ij")
    p = raw.permute(0, 2, 3, 1)
    cx = (p[..., 0].sigmoid() * 2 - 0.5 + gx) * stride
    cy = (p[..., 1].sigmoid() * 2 - 0.5 + gy) * stride
    bw = p[..., 2].clamp(-6, 4).exp() * anchor
    bh = p[..., 3].clamp(-6, 4).exp() * anchor
    rest = p[..., 4:].sigmoid()
    out = torch.cat([torch.stack([cx, cy, bw, bh], -1), rest], -1)
    return out.reshape(b, h * w, -1)


class ExportWrapper(nn.Module):
    """The graph as shipped: YOEO contract outputs `Detections` and `Segmentations`."""

    def __init__(self, net: DemoYOEO) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, cells = self.net.cell_logits(x)
        dets = torch.cat([decode_level(r, s, a) for r, s, a in zip(raw, STRIDES, ANCHORS)], 1)
        return dets, cell_argmax(cells)


def cell_argmax(cells: torch.Tensor) -> torch.Tensor:
    """argmax(pixel_shuffle(cells), 1) as uint8 [B, 4H, 4W], computed on the cells.

    The same mask (first maximum wins, as ArgMax) at a fraction of the cost: ArgMax over
    a channel axis is one of onnxruntime's slow generic reductions (0.7-1.2 ms on the
    [1, 3, 416, 416] logits on one core, plus 0.5-0.8 ms to pixel-shuffle them in float),
    while a running maximum over the NUM_SEG class planes is a few element-wise ops, and
    shuffling the uint8 class indices moves a quarter of the bytes of one plane.
    """
    planes = cells.split(SHUFFLE * SHUFFLE, dim=1)
    best = planes[0]
    index = torch.zeros_like(best, dtype=torch.uint8)
    for c, plane in enumerate(planes[1:], start=1):
        index = torch.where(plane > best, c, index)
        best = torch.maximum(best, plane)
    return F.pixel_shuffle(index, SHUFFLE).squeeze(1)
