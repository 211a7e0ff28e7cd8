"""`edged bench`: the pipeline against a raw ONNX Runtime loop and a serial loop, or the
model on every execution provider."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edged.cli.common import count_arg, read_config, runs_arg, setup_logging
from edged.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("bench", help="the pipeline vs a raw ONNX Runtime loop and a serial loop")
    b.add_argument("-c", "--config")
    b.add_argument("--frames", type=count_arg, default=300,
                   help="frames per loop; with several cameras, at least N results per "
                        "camera while all of them run (so shares always have a window)")
    b.add_argument("--sinks", action="store_true",
                   help="also run the pipeline with each output on (live view, Foxglove, "
                        "recorder), without and with a consumer, and report each")
    b.add_argument("--providers", action="store_true",
                   help="instead: the model on every execution provider this onnxruntime "
                        "offers (CPU, OpenVINO, CUDA, TensorRT), taking turns run by run; "
                        "p50 ms, ratio to the CPU EP, node placement")
    b.add_argument("--runs", type=runs_arg, default=100, help="runs per provider (--providers)")
    b.add_argument("--also", nargs="+", default=[], metavar="MODEL",
                   help="with --providers: these model files too, every session taking "
                        "turns, each row also compared with the config's model on the CPU EP")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = read_config(args.config)
    setup_logging("warning")
    import cv2

    from edged.daemon.models import load_models
    from edged.tools.bench import bench, format_report

    cv2.setNumThreads(1)
    if args.also and not args.providers:
        raise UsageError("--also compares models across providers: it needs --providers")
    if args.providers:
        from edged.tools.bench import format_providers, provider_comparison

        rows = provider_comparison(cfg, args.runs, tuple(Path(m) for m in args.also))
        from edged.inference.cpu import detect as detect_cpu

        print(json.dumps({"machine": {"cpu_info": detect_cpu().to_json()}, "providers": rows},
                         indent=2) if args.json
              else format_providers(rows, args.runs))
        return 0
    models = load_models(cfg)
    if args.sinks:
        from edged.outputs.foxglove import require_foxglove
        from edged.outputs.record import require_record
        from edged.outputs.view import require_aiohttp

        require_aiohttp()
        require_foxglove()
        require_record()
    report = bench(cfg, models, args.frames, with_sinks=args.sinks)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
