"""Export a trained checkpoint with the YOEO contract: fp32 ONNX + static QDQ int8 ONNX.

    python -m edged.training.export --checkpoint models/train-run/checkpoint.pt --out models
    python -m edged.training.export --checkpoint ... --size 320 --dynamic-batch --only-int8

`--size` exports the same weights at another input size (a cheaper rung for the
degradation ladder, named `<name>-int8-<size>`); `--dynamic-batch` leaves the batch
dimension symbolic, so edged can run frames of several cameras as one batch.

Calibration frames are synthetic scenes from training seeds, run through edged's own
pre-processing, so the int8 ranges are those of the tensors the daemon feeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edged.manifest import Manifest
from edged.preprocess import PreprocessSpec
from edged.quantize import (
    CalibrationReader,
    default_keep_float,
    prepare_model,
    static_qdq,
    synthetic_frames,
    tensors,
)
from edged.synth import CLASS_NAMES, SEG_CLASS_NAMES
from edged.training.model import DemoYOEO, ExportWrapper


def conv_flops(net: torch.nn.Module, size: int = 416) -> float:
    total = 0

    def hook(m: torch.nn.Conv2d, _i: object, o: torch.Tensor) -> None:
        nonlocal total
        k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        total += 2 * o.numel() * k

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total / 1e9


def calibration_tensors(count: int, spec: PreprocessSpec) -> list[np.ndarray]:
    return tensors(synthetic_frames(count, 0).calibration, spec)


def quantize(fp32: Path, out: Path, data: list[np.ndarray], keep_float: bool = True) -> None:
    """Static QDQ, U8S8 per-channel, MinMax: the same code path as `edged quantize`.

    The box decode after the network (sigmoids, grid offsets, the concat of pixel
    coordinates with probabilities) always stays float: one uint8 scale cannot hold both
    0..416 and 0..1; with `keep_float` the head and segmentation convolutions too.
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        prepared, _ = prepare_model(fp32, Path(tmp))
        exclude = default_keep_float(onnx.load(str(prepared)), final_convs=keep_float)
        static_qdq(prepared, out, CalibrationReader("InputLayer", data, None), "U8S8",
                   "MinMax", exclude)


def manifest(name: str, precision: str, extra: dict, size: int = 416) -> Manifest:
    return Manifest(format="yoeo", name=name, input_name="InputLayer",
                    outputs={"detections": "Detections", "segmentation": "Segmentations"},
                    preprocess=PreprocessSpec(input_w=size, input_h=size), classes=CLASS_NAMES,
                    seg_classes=SEG_CLASS_NAMES,
                    conf_threshold=0.5, iou_threshold=0.4, max_detections=300,
                    extra={"precision": precision, **extra})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--name", default="yoeo-demo")
    ap.add_argument("--calibration-frames", type=int, default=256)
    ap.add_argument("--all-int8", action="store_true", help="quantize the final layers too")
    ap.add_argument("--size", type=int, default=416, help="input size (multiple of 32)")
    ap.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    ap.add_argument("--only-int8", action="store_true", help="write the int8 model only")
    args = ap.parse_args(argv)
    if args.size % 32:
        ap.error("--size must be a multiple of 32 (the coarsest detection stride)")

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    net = DemoYOEO()
    net.load_state_dict(ckpt["model"])
    net.eval()
    size = args.size
    gflops = conv_flops(net, size)
    params = sum(p.numel() for p in net.parameters())
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if size == 416 else f"-{size}"
    fp32 = args.out / f"{args.name}-fp32{suffix}.onnx"
    int8 = args.out / f"{args.name}-int8{suffix}.onnx"
    axes = ({"InputLayer": {0: "batch"}, "Detections": {0: "batch"},
             "Segmentations": {0: "batch"}} if args.dynamic_batch else None)
    torch.onnx.export(ExportWrapper(net), torch.zeros(1, 3, size, size), str(fp32),
                      input_names=["InputLayer"], output_names=["Detections", "Segmentations"],
                      opset_version=17, dynamo=False, dynamic_axes=axes)
    t = time.time()
    spec = PreprocessSpec(input_w=size, input_h=size)
    quantize(fp32, int8, calibration_tensors(args.calibration_frames, spec),
             keep_float=not args.all_int8)
    info = {"gflops": round(gflops, 3), "parameters": params, "input_size": size,
            "dynamic_batch": bool(args.dynamic_batch),
            "training_iterations": ckpt.get("it"),
            "training_seconds": round(float(ckpt.get("seconds", 0.0)), 1),
            "training_args": ckpt.get("args", {})}
    if args.only_int8:
        fp32.unlink()
    else:
        fp32.with_suffix(".json").write_text(
            manifest(f"{args.name}-fp32{suffix}", "fp32", info, size).to_json())
    int8.with_suffix(".json").write_text(manifest(f"{args.name}-int8{suffix}", "int8", info | {
        "quantization": "static QDQ, U8 activations / S8 per-channel weights, MinMax, "
                        f"{args.calibration_frames} synthetic frames"
                        + ("" if args.all_int8 else "; detection and segmentation output "
                           "convolutions kept in float")}, size).to_json())
    written = [p for p in (fp32, int8) if p.exists()]
    print(json.dumps({"written": [str(p) for p in written], "gflops": gflops, "params": params,
                      "quantize_seconds": round(time.time() - t, 1),
                      "bytes": {p.name: p.stat().st_size for p in written}}, indent=2))


if __name__ == "__main__":
    main()
