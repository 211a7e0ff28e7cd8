"""Measure the figures of the model card: accuracy and latency of fp32 and int8, one run.

    python -m edged.training.card --models models/yoeo-demo-fp32.onnx models/yoeo-demo-int8.onnx \
        --scenes 500 --json models/card.json

Latency: one intra-op thread, the models' sessions alternating frame by frame on the same
pre-processed synthetic frames, so that machine noise hits both alike and the ratio is
fair. Accuracy: `edged.tools.evaluate` on scenes from seeds never used in training.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from edged.inference.manifest import load_manifest
from edged.inference.preprocess import Preprocessor
from edged.inference.runner import ModelOptions, ModelRunner, time_interleaved
from edged.synth import render
from edged.tools.evaluate import evaluate


def latency(runners: list[ModelRunner], runs: int, frames: int = 16) -> list[dict]:
    # each model gets the frames through its own pre-processing (input sizes may differ)
    images = [render(2_000_000 + i, 50, 640, 480).image for i in range(frames)]
    tensors: list[list[np.ndarray]] = []
    for r in runners:
        pre = Preprocessor(r.manifest.preprocess)
        tensors.append([])
        for img in images:
            pre(img)
            tensors[-1].append(pre.tensor.copy())
    times = time_interleaved(runners, tensors, runs, warmup=4)
    return [{"p50_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
             "p90_ms": float(np.percentile(v, 90)), "runs": runs} for v in times]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", type=Path, required=True)
    ap.add_argument("--scenes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--conf", type=float, default=0.05)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    runners = [ModelRunner(ModelOptions(path=p, threads=1, conf_threshold=args.conf))
               for p in args.models]
    out: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                 "models": {}}
    for p, r, lat in zip(args.models, runners, latency(runners, args.runs)):
        acc = evaluate(r, args.scenes, args.seed)
        extra = load_manifest(p.with_suffix(".json")).extra
        out["models"][p.name] = {"latency_1thread": lat, "accuracy": acc,
                                 "bytes": p.stat().st_size, **extra}
        print(json.dumps({p.name: {"miou": acc["miou"], "map50": acc["map50"],
                                   "p50_ms": lat["p50_ms"]}}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
