"""`edged eval`: accuracy on fresh synthetic scenes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edged.cli.common import fraction, int_at_least, nonneg_arg, runs_arg, setup_logging
from edged.errors import UserError
from edged.inference.providers import PROVIDER_NAMES, provider_chain


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser("eval", help="accuracy on fresh synthetic scenes")
    v.add_argument("--model", required=True)
    v.add_argument("--scenes", type=runs_arg, default=500)
    v.add_argument("--seed", type=nonneg_arg, default=1_000_000,
                   help="first sequence seed (training uses seeds below 1000000)")
    v.add_argument("--conf", type=fraction, default=0.05,
                   help="score threshold for AP (low, so the whole PR curve is measured)")
    v.add_argument("--threads", type=int_at_least(1, 256), default=1)
    v.add_argument("--provider", choices=sorted(PROVIDER_NAMES), default="cpu",
                   help="execution provider to score (it must take the model: no fallback)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    setup_logging("warning")
    import onnxruntime as ort

    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.tools.evaluate import evaluate

    runner = ModelRunner(ModelOptions(path=Path(args.model), threads=args.threads,
                                      conf_threshold=args.conf,
                                      providers=provider_chain(args.provider, args.threads)))
    # an accuracy figure for a provider must come from that provider, not a fallback
    want = PROVIDER_NAMES[args.provider]
    if runner.active_provider != want:
        raise UserError(
            f"--provider {args.provider}: onnxruntime did not take {want} (session: "
            f"{', '.join(runner.providers) or 'none'}; this build offers "
            f"{', '.join(ort.get_available_providers())})")
    runner.warmup(2)

    def progress(i: int, n: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{i}/{n} scenes", end="" if i < n else "\n", file=sys.stderr, flush=True)

    res = evaluate(runner, args.scenes, args.seed, progress=progress)
    res["model"] = str(args.model)
    res["provider"] = runner.active_provider
    res["placement"] = runner.placement_summary
    res["conf_threshold"] = runner.manifest.conf_threshold
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{args.model}: {res['scenes']} scenes from seed {res['seed']}")
        print(f"  segmentation mIoU {res['miou']:.4f}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in res["iou"].items()))
        print(f"  detection mAP@0.5 {res['map50']:.4f}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in res["ap50"].items()))
        print(f"  inference p50 {res['inference_ms_p50']:.2f} ms ({runner.threads} thread(s))")
    return 0
