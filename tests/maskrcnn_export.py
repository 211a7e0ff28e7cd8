"""torchvision's Mask R-CNN, exported with torchvision's own ONNX path and judged by its
own forward (tests/e2e/test_seg_families.py).

PyPI's torchvision wheel cannot load its C++ ops beside the CPU torch wheel (see
tests/seg_exports.py), and Mask R-CNN needs two of them: `torchvision::nms` and
`torchvision::roi_align`. This module gives both CPU kernels written in torch (greedy IoU
NMS; torchvision's own pure-Python RoIAlign, `_roi_align`, transcribed from its CUDA
kernel), so that the model runs as torchvision wrote it (the reference) and
`torch.onnx.export` traces the ops, which torchvision's registered symbolics turn into
ONNX NonMaxSuppression and RoiAlign. Random weights with a fixed seed.

Needs torch and torchvision: the `.venv-refs` environment of .ci/run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import seg_exports  # noqa: F401  (declares torchvision::nms so that torchvision imports)
import torch

_LIB = torch.library.Library("torchvision", "FRAGMENT")
if not hasattr(torch.ops.torchvision, "roi_align"):
    _LIB.define("roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt "
                "pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) "
                "-> Tensor")


def _nms(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as torchvision's CPU kernel does it: by descending score, drop every
    later box whose IoU with a kept one is > iou_threshold; indices by score."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = dets[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64)]


def _roi_align(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float,
               pooled_height: int, pooled_width: int, sampling_ratio: int,
               aligned: bool) -> torch.Tensor:
    # the module (torchvision.ops.roi_align, the attribute, is the function)
    ra = importlib.import_module("torchvision.ops.roi_align")
    # the function itself, not the torch.compile wrapper (no compiler needed)
    fn = ra._roi_align.__wrapped__
    out: torch.Tensor = fn(input, rois, spatial_scale, pooled_height, pooled_width,
                           sampling_ratio, aligned)
    return out


torch.library.impl("torchvision::nms", "CPU", lib=_LIB)(_nms)
torch.library.impl("torchvision::roi_align", "CPU", lib=_LIB)(_roi_align)

# torchvision decides at import whether its ops exist (_C.so loaded); they now do
import torchvision.extension  # noqa: E402


def _has_ops() -> bool:  # a def, not a lambda: TorchScript compiles what calls it
    return True


torchvision.extension._has_ops = _has_ops
importlib.import_module("torchvision.ops.roi_align")._has_ops = _has_ops

CLASSES = 5  # with the background, torchvision's class 0
SEED = 0
# random heads score most boxes 0.7-0.98: at 0.9, 6-18 detections on the test frames
# (below it, torchvision's cap of 100 per image would cut the list instead)
SCORE_THRESH = 0.9
INPUT_HW = (480, 640)  # the synthetic frames' size: no resize outside the graph


def maskrcnn(out_dir: Path) -> tuple[Path, torch.nn.Module]:
    """(export path, torch model) of a random-weight maskrcnn_resnet50_fpn."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(SEED)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=CLASSES,
                                  box_score_thresh=SCORE_THRESH).eval()
    path = out_dir / "maskrcnn_resnet50_fpn.onnx"
    h, w = INPUT_HW
    torch.onnx.export(model, ([torch.rand(3, h, w)],), str(path), input_names=["image"],
                      output_names=["boxes", "labels", "scores", "masks"], opset_version=11,
                      dynamo=False, dynamic_axes={"boxes": {0: "n"}, "labels": {0: "n"},
                                                  "scores": {0: "n"}, "masks": {0: "n"}})
    return path, model


def maskrcnn_reference(model: torch.nn.Module, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """torchvision's detections of one RGB uint8 frame: boxes, labels, scores and masks
    pasted into the frame and thresholded at 0.5 (as its docs and references do)."""
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float() / 255.0
    with torch.no_grad():
        out = model([x])[0]
    return {"boxes": out["boxes"].numpy(), "labels": out["labels"].numpy(),
            "scores": out["scores"].numpy(),
            "masks": (out["masks"][:, 0] > 0.5).numpy().astype(np.uint8)}
