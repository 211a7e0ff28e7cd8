"""Seeded, reproducible training of the demo model on synthetic scenes.

    pip install -e '.[train]'
    python -m edged.training.train --out models/train-run --iters 5000

Training scenes come from seeds below `EVAL_SEED_BASE` (the model card evaluates on
seeds at or above it, never seen in training). Each sample is a fresh render, so there
is no fixed dataset to overfit. Frames go through the daemon's own letterbox code, so
the network is trained on exactly the tensors the daemon will feed it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from edged.inference.preprocess import PreprocessSpec, letterbox_image, letterbox_labels
from edged.synth import render
from edged.training.model import ANCHORS, NUM_CLASSES, STRIDES, DemoYOEO, decode_level

EVAL_SEED_BASE = 1_000_000
SPEC = PreprocessSpec()
FRAME_SIZES = ((640, 480), (640, 480), (640, 480), (640, 360), (480, 480), (800, 600))
# box max side per level (input px); the ranges overlap so that objects near a boundary
# train both levels
LEVEL_RANGES = ((0.0, 48.0), (32.0, 144.0), (96.0, 1e9))
OBJ_BALANCE = (4.0, 1.0, 0.4)
FRAMES_PER_SEQUENCE = 24
SEQUENCE_POOL = 6  # sequences drawn from at once, so one batch mixes several scenes


class SceneStream(IterableDataset):
    """Endless stream of (image CHW uint8 RGB, seg HxW, boxes Kx5 [cls, x1, y1, x2, y2])."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __iter__(self):
        info = get_worker_info()
        wid = 0 if info is None else info.id
        rng = np.random.default_rng([self.seed, wid])
        cv2.setNumThreads(1)
        # several frames per sequence: building a sequence's layout costs far more than
        # rendering one of its frames (the renderer caches the last 8 layouts)
        pool = [[int(rng.integers(0, EVAL_SEED_BASE)), FRAMES_PER_SEQUENCE]
                for _ in range(SEQUENCE_POOL)]
        while True:
            slot = pool[int(rng.integers(SEQUENCE_POOL))]
            if slot[1] == 0:
                slot[:] = [int(rng.integers(0, EVAL_SEED_BASE)), FRAMES_PER_SEQUENCE]
            slot[1] -= 1
            seq = slot[0]
            w, h = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
            scene = render(seq, int(rng.integers(0, 20000)), w, h)
            img, box = letterbox_image(scene.image, SPEC)
            seg = letterbox_labels(scene.segmentation, box)
            boxes = box.boxes_to_input(scene.boxes) if len(scene.boxes) else np.zeros((0, 4),
                                                                                         np.float32)
            if rng.uniform() < 0.5:  # horizontal flip
                img = img[:, ::-1]
                seg = seg[:, ::-1]
                boxes = boxes.copy()
                boxes[:, [0, 2]] = SPEC.input_w - boxes[:, [2, 0]]
            rgb = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))
            lab = np.concatenate([scene.classes[:, None].astype(np.float32), boxes], 1)
            yield torch.from_numpy(rgb), torch.from_numpy(np.ascontiguousarray(seg)), \
                torch.from_numpy(lab)


def collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    segs = torch.stack([b[1] for b in batch]).long()
    labels = [torch.cat([torch.full((len(b[2]), 1), float(i)), b[2]], 1) for i, b in
              enumerate(batch)]
    return imgs, segs, torch.cat(labels, 0) if labels else torch.zeros((0, 6))


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of cxcywh boxes, elementwise."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter + 1e-7
    hull = (torch.max(a2, b2) - torch.min(a1, b1)).prod(1) + 1e-7
    iou = inter / union
    return iou - (hull - union) / hull


def detection_loss(raw: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    bsz = raw[0].shape[0]
    total_obj = raw[0].new_zeros(())
    total_box = raw[0].new_zeros(())
    total_cls = raw[0].new_zeros(())
    npos = 0
    wh = labels[:, 4:6] - labels[:, 2:4]
    side = wh.max(1).values if len(labels) else wh.new_zeros(0)
    for lvl, (r, stride, anchor) in enumerate(zip(raw, STRIDES, ANCHORS)):
        _, _, gh, gw = r.shape
        dec = decode_level(r, stride, anchor).view(bsz, gh, gw, -1)
        obj_t = torch.zeros(bsz, gh, gw)
        lo, hi = LEVEL_RANGES[lvl]
        sel = labels[(side >= lo) & (side < hi)] if len(labels) else labels
        if len(sel):
            cxy = (sel[:, 2:4] + sel[:, 4:6]) / 2 / stride
            gxy = cxy.floor()
            frac = cxy - gxy
            # centre cell plus the two nearest neighbours (the decode reaches -0.5..1.5)
            zero = torch.zeros(len(sel))
            offs = [torch.zeros_like(gxy),
                    torch.stack([torch.where(frac[:, 0] < 0.5, -1.0, 1.0), zero], 1),
                    torch.stack([zero, torch.where(frac[:, 1] < 0.5, -1.0, 1.0)], 1)]
            cells = torch.cat([gxy + o for o in offs])
            rep = sel.repeat(3, 1)
            ok = (cells[:, 0] >= 0) & (cells[:, 0] < gw) & (cells[:, 1] >= 0) & (cells[:, 1] < gh)
            cells, rep = cells[ok].long(), rep[ok]
            bi = rep[:, 0].long()
            pred = dec[bi, cells[:, 1], cells[:, 0]]
            tbox = torch.cat([(rep[:, 2:4] + rep[:, 4:6]) / 2, rep[:, 4:6] - rep[:, 2:4]], 1)
            g = giou(pred[:, :4], tbox)
            total_box = total_box + (1 - g).sum()
            cls_t = F.one_hot(rep[:, 1].long(), NUM_CLASSES).float()
            logit_cls = r.permute(0, 2, 3, 1)[bi, cells[:, 1], cells[:, 0], 5:]
            total_cls = total_cls + F.binary_cross_entropy_with_logits(logit_cls, cls_t,
                                                                       reduction="sum")
            obj_t[bi, cells[:, 1], cells[:, 0]] = 1.0
            npos += len(rep)
        total_obj = total_obj + OBJ_BALANCE[lvl] * F.binary_cross_entropy_with_logits(
            r[:, 4], obj_t, reduction="sum")
    # every term is normalised by the number of positives (as in YOLOX): a mean over all
    # cells would give the few positive cells almost no gradient
    n = max(npos, 1)
    parts = {"box": total_box / n, "cls": total_cls / n, "obj": total_obj / n}
    return 5.0 * parts["box"] + 1.0 * parts["cls"] + 1.0 * parts["obj"], parts


SEG_WEIGHTS = torch.tensor([1.0, 2.0, 1.0])


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(logits, target, weight=SEG_WEIGHTS)
    # soft dice on the thin class keeps line pixels from being drowned by the field
    prob = logits.softmax(1)[:, 1]
    t = (target == 1).float()
    dice = 1 - (2 * (prob * t).sum() + 1) / (prob.sum() + t.sum() + 1)
    return ce + 0.5 * dice


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    net = DemoYOEO().to(memory_format=torch.channels_last)
    ema = DemoYOEO()
    ema.load_state_dict(net.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    warm = min(300, args.iters // 10)

    def lr_at(it: int) -> float:
        if it < warm:
            return args.lr * (it + 1) / warm
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (it - warm) /
                                                             max(1, args.iters - warm))))

    loader = DataLoader(SceneStream(args.seed), batch_size=args.batch, collate_fn=collate,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        prefetch_factor=4 if args.workers > 0 else None)
    log = open(args.out / "train.log", "a")  # noqa: SIM115 (open for the whole run)
    t0 = time.time()
    net.train()
    for it, (imgs, segs, labels) in enumerate(loader):
        if it >= args.iters:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        x = (imgs.float() / 255.0).contiguous(memory_format=torch.channels_last)
        raw, seg_logits = net(x)
        ldet, parts = detection_loss(raw, labels)
        lseg = segmentation_loss(seg_logits, segs)
        loss = ldet + 2.0 * lseg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        d = min(0.999, (1 + it) / (10 + it))
        with torch.no_grad():
            for pe, pn in zip(ema.state_dict().values(), net.state_dict().values()):
                if pe.dtype.is_floating_point:
                    pe.mul_(d).add_(pn.detach(), alpha=1 - d)
                else:
                    pe.copy_(pn)
        if it % 25 == 0 or it == args.iters - 1:
            rec = {"it": it, "t": round(time.time() - t0, 1), "loss": round(loss.item(), 4),
                   "seg": round(lseg.item(), 4),
                   **{k: round(v.item(), 4) for k, v in parts.items()},
                   "lr": round(lr_at(it), 6)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if (it + 1) % 500 == 0 or it == args.iters - 1:
            torch.save({"model": ema.state_dict(), "it": it + 1, "args": vars(args) | {"out": str(
                args.out)}, "seconds": time.time() - t0}, args.out / "checkpoint.pt")
    print(json.dumps({"done": True, "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
