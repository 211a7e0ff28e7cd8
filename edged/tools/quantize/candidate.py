"""A candidate of the search (types, calibration, what stays float) and the report that
tabulates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.inference.runner import ModelRunner
from edged.tools.quantize.calibration import FrameSet

VARIANT_BASE = "out convs float"  # every final conv and the decode/argmax tail float
MASK_INT8 = "mask conv int8"  # the decision (segmentation) convs int8 too
INPUT_FLOAT = "input conv float"  # the conv that reads the image stays float
NO_NHWC = "no NHWC"  # the same file, run with onnxruntime's NhwcTransformer off
# the rescue of a search where nothing passed: this many most sensitive activations float
SENSITIVE_STEPS = (2, 4, 8)
SENSITIVITY_FRAMES = 8  # calibration frames the sensitivity is measured on


def variant_of(parent: str, step: str) -> str:
    return step if parent == VARIANT_BASE else f"{parent}, {step}"


@dataclass
class Candidate:
    types: str
    method: str
    variant: str = VARIANT_BASE
    exclude: list[str] = field(default_factory=list)  # nodes left float
    disabled: tuple[str, ...] = ()  # onnxruntime optimizers switched off
    source: Path | None = None  # the parent's file, for a session variant
    path: Path | None = None
    runner: ModelRunner | None = field(default=None, repr=False)
    vs_parent: float | None = None  # parent ms / this ms, timed in the same runs
    ms: float | None = None
    fp32_ms: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    miou_drop: float | None = None
    passed: bool = False
    why: str = ""

    @property
    def speedup(self) -> float | None:
        return self.fp32_ms / self.ms if self.ms and self.fp32_ms else None


@dataclass
class Report:
    model: Path
    out: Path
    candidates: list[Candidate]
    fp32_ms: float | None
    fp32_truth: dict[str, Any] | None
    frames: FrameSet
    keep_float: list[str]
    opset: int
    chosen: Candidate | None
    seconds: float = 0.0
    for_class: str | None = None  # the int8 class it was made for, when not this CPU's

    def table(self) -> str:
        def f(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        fp32_truth = self.fp32_truth
        truth = fp32_truth is not None
        # each speed-up is against the fp32 time measured in the same runs as its row
        # (printed beside it), so ms and speed-up read together
        head = ["candidate", "act/wgt", "method", "variant", "ms p50", "fp32 ms", "speed-up",
                "vs parent",
                "pix agree",
                "mIoU vs fp32", "det agree", "|d score|"]
        if truth:
            head += ["mIoU", "mAP50"]
        head.append("gate")
        rows = [["fp32", "-", "-", "-", f(self.fp32_ms, ".1f"), f(self.fp32_ms, ".1f"),
                 "1.00x", "-", "-", "-", "-", "-"]
                + ([f(fp32_truth["miou"], ".4f"), f(fp32_truth["map50"], ".4f")]
                   if fp32_truth is not None else []) + ["reference"]]
        for i, c in enumerate(self.candidates):
            m = c.metrics
            mark = " *" if c is self.chosen else ""
            row = [f"int8 #{i + 1}{mark}", c.types, c.method, c.variant, f(c.ms, ".1f"),
                   f(c.fp32_ms, ".1f"), "-" if c.speedup is None else f"{c.speedup:.2f}x",
                   "-" if c.vs_parent is None else f"{c.vs_parent:.2f}x",
                   f(m.get("pixel_agreement") and 100 * m["pixel_agreement"], ".2f") + (
                       "%" if m.get("pixel_agreement") is not None else ""),
                   f(m.get("miou_vs_fp32"), ".4f"), f(m.get("det_agreement"), ".3f"),
                   f(m.get("score_delta"), ".4f")]
            if truth:
                row += [f(m.get("miou"), ".4f"), f(m.get("map50"), ".4f")]
            row.append(("pass" if c.passed else "FAIL") + (f" ({c.why})" if c.why else ""))
            rows.append(row)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
                 for r in [head, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)
