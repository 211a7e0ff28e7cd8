"""Export a trained checkpoint with the YOEO contract: fp32 ONNX + static QDQ int8 ONNX.

    python -m edged.training.export --checkpoint models/train-run/checkpoint.pt --out models
    python -m edged.training.export --checkpoint ... --size 320 --dynamic-batch --only-int8

`--size` exports the same weights at another input size (a cheaper rung for the
degradation ladder, named `<name>-int8-<size>`); `--dynamic-batch` leaves the batch
dimension symbolic, so edged can run frames of several cameras as one batch.

The int8 model is made by `edged quantize`'s own search (`edged.tools.quantize.run_search`),
gate included, on synthetic scenes: calibration frames from training seeds, held-out
frames from evaluation seeds, all through edged's own pre-processing. Its manifest
records the candidate chosen and what it measured; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from edged.inference.manifest import Manifest
from edged.inference.preprocess import PreprocessSpec
from edged.synth import CLASS_NAMES, SEG_CLASS_NAMES
from edged.tools.quantize import iter_lines, run_search, synthetic_frames
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
    ap.add_argument("--holdout-frames", type=int, default=64)
    ap.add_argument("--runs", type=int, default=30, help="timed runs per int8 candidate")
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
    int8 = args.out / f"{args.name}-int8{suffix}.onnx"
    info = {"gflops": round(gflops, 3), "parameters": params, "input_size": size,
            "dynamic_batch": bool(args.dynamic_batch),
            "training_iterations": ckpt.get("it"),
            "training_seconds": round(float(ckpt.get("seconds", 0.0)), 1),
            "training_args": ckpt.get("args", {})}
    axes = ({"InputLayer": {0: "batch"}, "Detections": {0: "batch"},
             "Segmentations": {0: "batch"}} if args.dynamic_batch else None)
    with tempfile.TemporaryDirectory(prefix="edged-export-") as tmp:
        fp32 = (Path(tmp) if args.only_int8 else args.out) / f"{args.name}-fp32{suffix}.onnx"
        torch.onnx.export(ExportWrapper(net), torch.zeros(1, 3, size, size), str(fp32),
                          input_names=["InputLayer"],
                          output_names=["Detections", "Segmentations"],
                          opset_version=17, dynamo=False, dynamic_axes=axes)
        fp32.with_suffix(".json").write_text(
            manifest(f"{args.name}-fp32{suffix}", "fp32", info, size).to_json())
        # the int8 model is made exactly as `edged quantize` makes one, gate included
        t = time.time()
        report = run_search(fp32, int8, synthetic_frames(args.calibration_frames,
                                                         args.holdout_frames),
                            runs=args.runs, log=lambda line: print(line, file=sys.stderr))
        print(report.table())
        for line in iter_lines(report):
            print(line)
        if report.chosen is None:
            raise SystemExit("no int8 candidate passed the gate: nothing written")
        written = [p for p in (fp32, int8) if p.exists() and p.parent == args.out]
        print(json.dumps({"written": [str(p) for p in written], "gflops": gflops,
                          "params": params, "quantize_seconds": round(time.time() - t, 1),
                          "bytes": {p.name: p.stat().st_size for p in written}}, indent=2))


if __name__ == "__main__":
    main()
