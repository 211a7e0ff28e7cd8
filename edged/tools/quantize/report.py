"""What is written beside the int8 model (its manifest) and what is printed after the
table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import onnxruntime as ort

from edged.inference.cpu import detect as detect_cpu
from edged.inference.manifest import manifest_path
from edged.inference.runner import ModelRunner
from edged.tools.quantize.candidate import Report
from edged.tools.quantize.choices import (
    MIN_OPSET,
    REDUCED_RANGE,
)


def manifest_for(report: Report, fp32: ModelRunner):
    c = report.chosen
    assert c is not None
    act, wgt = c.types[:2], ("S8" if c.types in REDUCED_RANGE else c.types[2:])
    record = {
        "format": "QDQ", "activations": act, "weights": wgt, "per_channel": True,
        "reduce_range": c.types in REDUCED_RANGE,  # 7-bit weights
        "method": c.method,
        "calibration": {"source": report.frames.source,
                        "frames": len(report.frames.calibration)},
        "holdout": {"frames": len(report.frames.holdout),
                    "ground_truth": report.fp32_truth is not None},
        "variant": c.variant,
        "kept_float": c.exclude,
        "opset_upgraded_from": report.opset if report.opset < MIN_OPSET else None,
        "speedup": round(c.speedup, 3) if c.speedup else None,
        "ms_p50": {"int8": round(c.ms or 0.0, 3), "fp32": round(c.fp32_ms or 0.0, 3),
                   "threads": 1},
        "agreement": {k: (round(v, 6) if isinstance(v, float) else v)
                      for k, v in c.metrics.items()},
        "fp32_truth": report.fp32_truth,
        "source_model": report.model.name,
        "onnxruntime": ort.__version__,
        # the CPU class the gate passed on: edged warns when the model runs on another
        "validated_on": detect_cpu().to_json(),
    }
    if report.for_class:
        # made elsewhere for this class, from candidates both compute the same integers of
        record["valid_for"] = report.for_class
    m = fp32.manifest
    return replace(m, name=report.out.stem, extra={**m.extra, "precision": "int8"},
                   quantization=json.loads(json.dumps(record)),
                   session={"disabled_optimizers": list(c.disabled)} if c.disabled else {})


def iter_lines(report: Report) -> Iterator[str]:
    """The human summary printed after the table."""
    f = report.frames
    yield (f"calibration: {len(f.calibration)} frames, held out: {len(f.holdout)} frames "
           f"({f.source}); kept in float: "
           f"{len(report.chosen.exclude if report.chosen else report.keep_float)} node(s)")
    if report.opset < MIN_OPSET:
        yield f"opset {report.opset} upgraded to {MIN_OPSET} for per-channel int8"
    c = report.chosen
    if c is None:
        yield "no candidate meets the accuracy gate: nothing written"
    else:
        yield (f"wrote {report.out} ({c.types} {c.method}, {c.variant}, {c.speedup:.2f}x fp32 "
               f"on 1 thread) and {manifest_path(report.out).name} in {report.seconds:.0f} s")
        if c.speedup is not None and c.speedup < 1.0:
            yield ("int8 is slower than fp32 for this model on this machine (too few channels "
                   "per layer for the int8 kernels to pay off): the fp32 model is the one to run")
        if c.disabled:
            yield (f"its manifest switches onnxruntime's {', '.join(c.disabled)} off: "
                   f"{c.vs_parent:.2f}x faster than with it on this machine; measure again "
                   "(re-run edged quantize) on a different CPU")
