"""Semantic-segmentation exports made from their reference implementations, and those
references' own pre- and post-processing (tests/test_seg_families.py).

Random weights with a fixed seed (trained ones cannot be fetched here): SegFormer-b0 from
`transformers` (a SegformerConfig, judged by SegformerImageProcessor and its
post_process_semantic_segmentation), and U-Net, FPN, DeepLabV3 and DeepLabV3+ from
`segmentation-models-pytorch` with timm's ResNet-18 (`tu-resnet18`, encoder_weights=None),
judged by smp's preprocessing function (ImageNet mean/std), Pillow's bilinear resize (what
torchvision's Resize does to a PIL image) and bilinear logits upsampling before the argmax.

Needs torch, transformers, timm and segmentation-models-pytorch: the `.venv-refs`
environment of .ci/run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

# PyPI's torchvision wheel links libtorch_cuda.so and libc10_cuda.so, which the CPU torch
# wheel lacks: its C++ ops (_C.so) do not load, and its import then fails on its one
# unguarded `register_fake`s (torchvision::nms and ::qnms). timm and smp need only
# torchvision's Python parts (FrozenBatchNorm2d, the ResNet classes): declaring those two
# ops' schemas (no kernel: calling them still fails) lets them import.
for _op, _schema in (("nms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
                     ("qnms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")):
    if not hasattr(torch.ops.torchvision, _op):
        torch.library.define(f"torchvision::{_op}", _schema)

CLASSES = 4
SEED = 0
SMP_FAMILIES = ("Unet", "FPN", "DeepLabV3", "DeepLabV3Plus")
SMP_INPUT = (256, 320)  # (H, W): every smp decoder wants sides divisible by 32 (or 16)


def _export(model: torch.nn.Module, path: Path, h: int, w: int) -> Path:
    model.eval()
    dummy = torch.zeros(1, 3, h, w)
    torch.onnx.export(model, (dummy,), str(path), input_names=["pixel_values"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    return path


class _LogitsOnly(torch.nn.Module):
    """transformers' models return an output object; the export wants the tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(pixel_values=x).logits
        return out


def segformer(out_dir: Path) -> tuple[Path, Any, Any]:
    """(export path, torch model, SegformerImageProcessor) of a random SegFormer-b0."""
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
    )

    torch.manual_seed(SEED)
    config = SegformerConfig(num_labels=CLASSES)  # the defaults are mit-b0's sizes
    model = SegformerForSemanticSegmentation(config).eval()
    processor = SegformerImageProcessor()  # 512x512, Pillow bilinear, ImageNet mean/std
    size = processor.size
    path = _export(_LogitsOnly(model), out_dir / "segformer-b0.onnx", size["height"],
                   size["width"])
    return path, model, processor


def segformer_reference(model: Any, processor: Any, rgb: np.ndarray) -> np.ndarray:
    inputs = processor(images=rgb, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    seg = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[rgb.shape[:2]])[0]
    return np.asarray(seg.numpy(), np.uint8)


def smp_model(family: str, out_dir: Path) -> tuple[Path, torch.nn.Module, Any]:
    """(export path, torch model, smp's preprocessing function) of a random smp net."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(SEED)
    model = getattr(smp, family)(encoder_name="tu-resnet18", encoder_weights=None,
                                 classes=CLASSES).eval()
    # random heads end in a bias that outweighs the features, giving one class nearly
    # everywhere: without it the class map follows the image, a test worth passing
    with torch.no_grad():
        for mod in model.segmentation_head.modules():
            if isinstance(mod, torch.nn.Conv2d) and mod.bias is not None:
                mod.bias.zero_()
    # the encoder's statistics (timm's pretrained config: ImageNet), as smp's docs prescribe
    prep = smp.encoders.get_preprocessing_fn("tu-resnet18")
    h, w = SMP_INPUT
    return _export(model, out_dir / f"smp-{family.lower()}.onnx", h, w), model, prep


def smp_reference(model: torch.nn.Module, prep: Any, rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = SMP_INPUT
    small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    x = torch.from_numpy(prep(small).astype(np.float32).transpose(2, 0, 1))[None]
    with torch.no_grad():
        logits = model(x)
    big = torch.nn.functional.interpolate(logits, size=rgb.shape[:2], mode="bilinear",
                                          align_corners=False)
    return np.asarray(big.argmax(dim=1)[0].numpy(), np.uint8)
