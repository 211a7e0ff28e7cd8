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
        self.seg = nn.Conv2d(d4, NUM_SEG * 16, 1)
        for h in self.head:  # prior: objects are rare (p ~ 0.01)
            nn.init.constant_(h.bias[4], -4.6)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
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
        return raw, F.pixel_shuffle(self.seg(d4), 4)

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
        raw, seg = self.net(x)
        dets = torch.cat([decode_level(r, s, a) for r, s, a in zip(raw, STRIDES, ANCHORS)], 1)
        mask = seg.argmax(1).to(torch.uint8)
        return dets, mask
