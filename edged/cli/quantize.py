"""`edged quantize`: static int8 with an accuracy gate against the fp32 model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edged.cli.common import held_frames_arg, nonneg_float, read_config, runs_arg, setup_logging
from edged.errors import UserError


class OnnxMissing(UserError):
    """`edged quantize` without the `quantize` extra: exit 2."""

    exit_code = 2


class NoCandidate(UserError):
    """No quantized candidate passed the accuracy gate: exit 3 (nothing written)."""

    exit_code = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser(
        "quantize", help="static int8 (QDQ) with an accuracy gate against the fp32 model",
        description="Quantize MODEL to int8: calibrate on frames through the model's own "
                    "pre-processing, try the type/calibration candidates of --search, check "
                    "each on held-out frames against the fp32 model, refine the fastest "
                    "passing one (mask conv int8, input conv float, NhwcTransformer off: "
                    "each step kept if it passes and is >= 2% faster than its parent in "
                    "the same runs), and write it with its manifest (OUT.json). Frames: -c (the "
                    "configured cameras), --frames (image folder or video), or by default "
                    "synthetic RoboCup scenes, which also give ground truth. Exit 0: written; "
                    "1: error; 2: the onnx package is missing; 3: no candidate passed.")
    q.add_argument("model", help="fp32 ONNX file (its manifest beside it, if any, is used)")
    q.add_argument("-o", "--out", required=True, help="int8 ONNX file to write")
    src = q.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", help="calibrate on the cameras of this config")
    src.add_argument("--frames", metavar="DIR|VIDEO", help="a folder of images or a video")
    q.add_argument("--count", type=held_frames_arg, default=128,
                   help="calibration frames (default 128)")
    q.add_argument("--holdout", type=held_frames_arg, default=32,
                   help="held-out frames for the accuracy gate (default 32)")
    q.add_argument("--search", choices=["quick", "full"], default="quick",
                   help="quick: U8S8 and S8S8 with MinMax, U8S8 with Percentile; full: both "
                        "type pairs x MinMax, Percentile, Entropy")
    q.add_argument("--keep-float", nargs="+", metavar="NODE",
                   help="also keep these nodes in float (names as in the prepared graph)")
    q.add_argument("--no-keep-float", action="store_true",
                   help="do not keep the final convolutions and output tails in float")
    q.add_argument("--min-agreement", type=nonneg_float, default=0.98,
                   help="gate: mask pixel agreement with fp32 (default 0.98)")
    q.add_argument("--max-miou-drop", type=nonneg_float, default=0.01,
                   help="gate: mIoU drop vs fp32, as a fraction (default 0.01 = 1 point); "
                        "against ground truth when the frames have it, else 1 - mIoU(int8 "
                        "vs fp32)")
    q.add_argument("--min-det-agreement", type=nonneg_float, default=0.9,
                   help="gate: share of boxes matched between int8 and fp32 (IoU >= 0.5, "
                        "same class; default 0.9); skipped when neither finds boxes")
    q.add_argument("--no-truth", action="store_true",
                   help="ignore synthetic ground truth (e.g. for a model with random weights)")
    q.add_argument("--for-class", metavar="CLASS",
                   help="make the model for a CPU of this int8 class (e.g. x86-avx2 from a "
                        "VNNI machine): only candidates both CPUs compute the same integers "
                        "of are tried (7-bit or unsigned weights), and the manifest records "
                        "valid_for; speed is still measured here")
    q.add_argument("--runs", type=runs_arg, default=20,
                   help="timed single-thread runs per candidate, alternating with fp32")
    q.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    setup_logging("warning")
    try:
        import onnx  # noqa: F401  (onnxruntime.quantization needs it; the daemon does not)
    except ImportError:
        raise OnnxMissing("the onnx package is missing: pip install 'edged[quantize]'") \
            from None
    import cv2

    from edged.tools.quantize import (
        Gate,
        Progress,
        frames_for,
        iter_lines,
        run_search,
    )

    cv2.setNumThreads(1)
    config = None
    if args.config:
        config = read_config(args.config)
    model = Path(args.model)
    if not model.is_file():
        raise UserError(f"model file not found: {model}")
    progress = Progress()
    frames = frames_for(args.frames, config, args.count, args.holdout)
    report = run_search(
        model, Path(args.out), frames, search=args.search, keep_float=args.keep_float or (),
        default_keep=not args.no_keep_float,
        gate=Gate(args.min_agreement, args.max_miou_drop, args.min_det_agreement),
        runs=args.runs, for_class=args.for_class,
        use_truth=not args.no_truth, progress=progress,
        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.table())
    for line in iter_lines(report):
        print(line)
    if report.chosen is None:
        raise NoCandidate(
            "no candidate meets the accuracy gate (pixel agreement >= "
            f"{100 * args.min_agreement:g}%, mIoU drop <= {100 * args.max_miou_drop:g} "
            "point(s)); try --search full, more --count, or --keep-float for the layers "
            "that disagree")
    return 0
