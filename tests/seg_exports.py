"""Semantic-segmentation exports made from their reference implementations, and those
references' own pre- and post-processing (tests/e2e/test_seg_families.py).

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


# torchvision's semantic nets (pure PyTorch: none of its C++ ops), judged by the
# transforms of their weights (SemanticSegmentation: the shorter side to 520 with
# Pillow's bilinear resize for a PIL image, ImageNet mean/std); the graph keeps H and W
# dynamic, as those transforms keep the frame's aspect ratio
TV_FAMILIES = {"fcn_resnet50": "FCN_ResNet50_Weights",
               "deeplabv3_mobilenet_v3_large": "DeepLabV3_MobileNet_V3_Large_Weights",
               "lraspp_mobilenet_v3_large": "LRASPP_MobileNet_V3_Large_Weights"}


# seed 0's DeepLabV3-MobileNet maps every pixel of the test frames to one class, even
# calibrated (its pooled branch's offset wins): a test it would pass whatever edged did
TV_SEED = 1


class _Out(torch.nn.Module):
    """torchvision's segmentation models return {"out": ...}; the export wants the tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)["out"]
        return out


def torchvision_model(name: str, out_dir: Path) -> tuple[Path, torch.nn.Module, Any]:
    """(export path, torch model, the weights' preset transforms) of a random net."""
    from torchvision.models import segmentation

    torch.manual_seed(TV_SEED)
    model = getattr(segmentation, name)(weights=None, weights_backbone=None,
                                        num_classes=CLASSES).eval()
    preset = getattr(segmentation, TV_FAMILIES[name]).DEFAULT.transforms()
    _calibrate(model, preset)
    path = out_dir / f"tv-{name}.onnx"
    torch.onnx.export(_Out(model).eval(), (torch.zeros(1, 3, 520, 693),), str(path),
                      input_names=["input"], output_names=["out"], opset_version=17,
                      dynamo=False, dynamic_axes={"input": {2: "height", 3: "width"},
                                                  "out": {2: "height", 3: "width"}})
    return path, model, preset


def _calibrate(model: torch.nn.Module, preset: Any) -> None:
    """BatchNorm statistics from two synthetic frames (of another seed than the tests'):
    a random MobileNetV3 backbone with its initial statistics shrinks its features to
    ~1e-9, logits whose argmax is float noise; calibrated, the map follows the image
    (the tests check that the reference map has more than one class)."""
    from PIL import Image

    from edged.synth import render

    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # a plain average over the calibration batches
    model.train()
    batch = torch.stack([preset(Image.fromarray(render(99, i).image[:, :, ::-1].copy()))
                         for i in (0, 5)])  # a batch: ASPP's pooled 1x1 BatchNorm needs 2
    with torch.no_grad():
        model(batch)
        model.eval()
        # and each class's mean logit over those frames taken off its bias: a random
        # head's constant offsets (DeepLabV3's pooled branch) otherwise win everywhere
        last = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Conv2d)
                and m.out_channels == CLASSES][-1]
        assert last.bias is not None
        last.bias -= model(batch)["out"].mean(dim=(0, 2, 3))


def torchvision_reference(model: torch.nn.Module, preset: Any, rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    x = preset(Image.fromarray(rgb))[None]
    with torch.no_grad():
        logits = model(x)["out"]
    big = torch.nn.functional.interpolate(logits, size=rgb.shape[:2], mode="bilinear",
                                          align_corners=False)
    return np.asarray(big.argmax(dim=1)[0].numpy(), np.uint8)
