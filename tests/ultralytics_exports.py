"""Real ultralytics exports for the parity tests, built here from the model YAMLs that
ultralytics ships (random weights; nothing is downloaded).

Freshly initialised YOLO weights give degenerate outputs: activations shrink through
the layers, so every anchor gets the same class score and thousands of exact ties
decide the detections (any two NMS implementations then keep different boxes). So the
convolutions are re-initialised with He-normal weights and the class heads' last
layers scaled and biased until about 3% of the anchors of a calibration frame score
above 0.25, with scores that differ from anchor to anchor. The box (DFL) and mask
coefficient layers are scaled the same way, so that boxes come in many sizes and masks
cover part of their box; the prototypes keep what that gives them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks, no downloads

import torch  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.data.augment import LetterBox  # noqa: E402
from ultralytics.utils import ASSETS  # noqa: E402

IMGSZ = 320


def asset(name: str = "bus.jpg") -> np.ndarray:
    """A BGR photo that ultralytics ships (bus.jpg 810x1080, zidane.jpg 1280x720)."""
    img = cv2.imread(str(Path(ASSETS) / name))
    assert img is not None, f"ultralytics asset {name} missing"
    return img


def letterbox_tensor(frame: np.ndarray, imgsz: tuple[int, int]) -> torch.Tensor:
    """ultralytics' own pre-processing of a BGR frame for an ONNX model of fixed size."""
    img = LetterBox(new_shape=imgsz, auto=False, stride=32)(image=frame)
    return torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255


def _last_convs(model: Any, names: tuple[str, ...]) -> list[torch.nn.Conv2d]:
    """The final convolution of each scale's branch `names` of the head (cv2 boxes,
    cv3 classes, cv4 mask coefficients, and YOLO26's one2one_ twins)."""
    head = model.model[-1]
    convs = []
    for name in names:
        for seq in getattr(head, name, None) or []:
            last = seq[-1]
            convs.append(last if isinstance(last, torch.nn.Conv2d) else last.conv)
    return convs


def _rescale(net: Any, x: torch.Tensor, convs: list[torch.nn.Conv2d], std: float) -> None:
    """Scale `convs` (biases zeroed) so that their outputs on `x` have this spread."""
    if not convs:
        return
    seen: list[torch.Tensor] = []
    hooks = [c.register_forward_hook(lambda _m, _i, o: seen.append(o.flatten()))
             for c in convs]
    for c in convs:
        if c.bias is not None:
            c.bias.zero_()
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    got = torch.cat(seen).std().item()
    for c in convs:
        c.weight.mul_(std / got)


def _calibrate(model: Any, nc: int, rate: float) -> None:
    frame = cv2.resize(asset(), (640, 480))
    x = letterbox_tensor(frame, (IMGSZ, IMGSZ))
    net = model.eval()
    heads = _last_convs(model, ("cv3", "one2one_cv3"))

    def logits() -> torch.Tensor:
        y = net(x)
        while isinstance(y, list | tuple):
            y = y[0]
        if y.shape[-1] != y.shape[1] and y.shape[1] >= 4 + nc:  # [1, 4+C(+M), A]
            scores = y[0, 4:4 + nc]
        else:  # end2end [1, N, 6(+M)]: rank by the one-to-one head's raw scores
            scores = y[0, :, 4][None]
        return torch.logit(scores.clamp(1e-7, 1 - 1e-7))

    with torch.no_grad():
        for mod in net.modules():
            # not the DFL's fixed conv (its weights are the bin indices 0..15)
            if isinstance(mod, torch.nn.Conv2d) and mod.weight.requires_grad:
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
        # YOLO26's one-to-one branches start as copies of the one-to-many ones (as in
        # ultralytics' own init), so the dense scores calibrate both
        head = model.model[-1]
        for name in ("cv2", "cv3", "cv4"):
            twin = getattr(head, f"one2one_{name}", None)
            if twin is not None:
                twin.load_state_dict(getattr(head, name).state_dict())
        # DFL logits with some spread give boxes of many sizes (saturated ones give
        # every box the same few pixels); coefficients of unit spread give masks that
        # cover part of their box, with edges
        boxes = _last_convs(model, ("cv2", "one2one_cv2"))
        _rescale(net, x, boxes, 1.0)
        if getattr(head, "reg_max", 16) == 1:
            # YOLO26 regresses the four distances directly (no DFL): keep them positive,
            # about 3 strides, or most boxes come out with x1 > x2
            for c in boxes:
                assert c.bias is not None
                c.bias.fill_(3.0)
        _rescale(net, x, _last_convs(model, ("cv4", "one2one_cv4")), 1.0)
        proto = getattr(model.model[-1], "proto", None)
        if proto is not None:
            # prototypes come out of a SiLU, nearly all positive, so a mask would be its
            # whole box or nothing; coefficients orthogonal to the prototypes' mean
            # give logits of both signs inside a box, so masks have edges there
            maps: list[torch.Tensor] = []
            hook = proto.register_forward_hook(lambda _m, _i, o: maps.append(o))
            try:
                net(x)
            finally:
                hook.remove()
            mu = maps[0][0].mean((1, 2))
            mu = mu / mu.norm()
            for c in _last_convs(model, ("cv4", "one2one_cv4")):
                w = c.weight.view(c.weight.shape[0], -1)
                w -= mu[:, None] * (mu[None, :] @ w)
        for c in heads:
            assert c.bias is not None
            c.bias.zero_()
        was = getattr(head, "end2end", False)
        head.end2end = False  # calibrate on the dense scores of every anchor
        try:
            std = logits().std().item()
            for c in heads:
                c.weight.mul_(1.5 / std)
            q = float(np.quantile(logits().max(0).values.numpy(), 1 - rate))
        finally:
            head.end2end = was
        for c in heads:
            assert c.bias is not None
            c.bias.fill_(float(np.log(0.25 / 0.75)) - q)


def export(cfg: str, out_dir: Path, name: str, *, rate: float = 0.03, **kw: Any) -> Path:
    """Export `cfg` (e.g. "yolov8n-seg.yaml") with calibrated random weights to
    `out_dir/name.onnx`; `kw` go to ultralytics' exporter (dynamic=True, nms=False...)."""
    torch.manual_seed(0)
    model = YOLO(cfg)
    nc = len(model.model.names)
    _calibrate(model.model, nc, rate)
    work = out_dir / f"{name}.export"
    work.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    os.chdir(work)  # a model built from a YAML is exported into the working directory
    try:
        # simplify (onnxslim) as ultralytics does by default: it also fixes the shapes
        # a dynamic export can state (116 = 4 + 80 + 32), which tell the format
        path = Path(model.export(format="onnx", imgsz=IMGSZ, **kw)).resolve()
    finally:
        os.chdir(cwd)
    target = out_dir / f"{name}.onnx"
    path.replace(target)
    return target


def export_rtdetr(out_dir: Path, name: str, *, rate: float = 0.05) -> Path:
    """ultralytics' RT-DETR (rtdetr-l.yaml, random weights) exported to ONNX, with the
    last decoder layer's class head scaled and biased (as `_calibrate` does for YOLO)
    so that about `rate` of the (query, class) logits of a calibration frame are above
    0.25 and differ from query to query: fresh weights score every query ~0.04."""
    from ultralytics import RTDETR

    torch.manual_seed(0)
    model = RTDETR("rtdetr-l.yaml")
    net = model.model.eval()
    head = net.model[-1]
    score = head.dec_score_head[-1]
    x = letterbox_tensor(cv2.resize(asset(), (640, 480)), (IMGSZ, IMGSZ))
    seen: list[torch.Tensor] = []
    hook = score.register_forward_hook(lambda _m, _i, o: seen.append(o.flatten()))
    with torch.no_grad():
        try:
            score.bias.zero_()
            net(x)
            score.weight.mul_(1.5 / torch.cat(seen).std().item())
            seen.clear()
            net(x)
        finally:
            hook.remove()
        q = float(np.quantile(torch.cat(seen).numpy(), 1 - rate))
        score.bias.fill_(float(np.log(0.25 / 0.75)) - q)
    work = out_dir / f"{name}.export"
    work.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    os.chdir(work)
    try:
        path = Path(model.export(format="onnx", imgsz=IMGSZ)).resolve()
    finally:
        os.chdir(cwd)
    target = out_dir / f"{name}.onnx"
    path.replace(target)
    return target
