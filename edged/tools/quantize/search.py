"""The search: every candidate quantized, gated on held-out frames and timed against fp32;
the fastest passing one refined a step at a time and written with its manifest."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edged.inference.cpu import INT8_CLASSES
from edged.inference.cpu import detect as detect_cpu
from edged.inference.manifest import manifest_path
from edged.inference.runner import ModelError, ModelOptions, ModelRunner
from edged.results import Frame
from edged.synth import CLASS_NAMES, SEG_CLASS_NAMES
from edged.tools.quantize.calibration import (
    CalibrationReader,
    FrameSet,
    tensors,
)
from edged.tools.quantize.candidate import (
    INPUT_FLOAT,
    MASK_INT8,
    NO_NHWC,
    SENSITIVE_STEPS,
    SENSITIVITY_FRAMES,
    Candidate,
    Report,
    variant_of,
)
from edged.tools.quantize.choices import (
    MIN_STEP_GAIN,
    NHWC_TRANSFORMER,
    SEARCHES,
    QuantizeError,
    search_for_target,
)
from edged.tools.quantize.gate import (
    DEFAULT_GATE,
    Agreement,
    Gate,
    time_alternating,
    truth_metrics,
)
from edged.tools.quantize.graph import (
    _supports_calibration_cache,
    activation_rounding,
    decision_convs,
    default_keep_float,
    input_convs,
    prepare_model,
    static_qdq,
)
from edged.tools.quantize.report import manifest_for


def run_search(model: Path, out: Path, frames: FrameSet, *, search: str = "quick",
               keep_float: Iterable[str] = (), default_keep: bool = True,
               gate: Gate = DEFAULT_GATE, runs: int = 20, use_truth: bool = True,
               progress: Callable[[str, int, int], None] | None = None,
               log: Callable[[str], None] = lambda s: None,
               for_class: str | None = None) -> Report:
    """Quantize `model` with every candidate of `search`; write the best passing one.
    `for_class`: an int8 class other than this CPU's the model is meant for (only
    candidates whose integers are the same there are tried; see search_for_target)."""
    t_start = time.monotonic()
    if for_class is not None and for_class not in INT8_CLASSES:
        raise QuantizeError(f"unknown int8 class {for_class!r}; known: "
                            + ", ".join(INT8_CLASSES))
    search_for_target(search, detect_cpu().int8_class, for_class)  # refuse before the work
    if not model.is_file():
        raise QuantizeError(f"model file not found: {model}")
    if out.resolve() == model.resolve():
        raise QuantizeError(f"the output {out} would overwrite the input model")
    if search not in SEARCHES:
        raise QuantizeError(f"unknown search {search!r}; known: {', '.join(SEARCHES)}")
    try:
        fp32 = ModelRunner(ModelOptions(path=model, threads=1, warmup_runs=0))
    except ModelError as e:
        raise QuantizeError(str(e)) from None
    m = fp32.manifest
    unbatched = fp32._unbatched
    cal = tensors(frames.calibration, m.preprocess, unbatched)
    held = [Frame("holdout", i, img, 0, 0) for i, img in enumerate(frames.holdout)]
    truth = frames.truth if use_truth and frames.truth is not None and \
        tuple(m.seg_classes) == SEG_CLASS_NAMES and tuple(m.classes) == CLASS_NAMES else None
    ref_results = [fp32.infer(f) for f in held]
    fp32_truth = truth_metrics(ref_results, truth) if truth else None
    timing_tensor = tensors(frames.holdout[:1], m.preprocess, unbatched)[0]
    if unbatched:
        timing_tensor = timing_tensor[None]  # run_tensor strips the batch axis again

    with tempfile.TemporaryDirectory(prefix="edged-quantize-") as tmp_s:
        tmp = Path(tmp_s)
        prepared, opset = prepare_model(model, tmp)
        pmodel = onnx.load(str(prepared))
        names = {n.name for n in pmodel.graph.node}
        unknown = sorted(set(keep_float) - names)
        if unknown:
            import difflib

            hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, names, 1)[0]!r}?)"
                     if difflib.get_close_matches(u, names, 1) else repr(u) for u in unknown]
            raise QuantizeError("--keep-float: no such node(s) in the prepared graph: "
                                + ", ".join(hints))
        defaults = default_keep_float(pmodel) if default_keep else []
        keep = defaults + [k for k in keep_float if k not in defaults]
        # what the refinements below may change; what the user keeps float stays float
        mask_convs = [n for n in decision_convs(pmodel)
                      if n in defaults and n not in set(keep_float)]
        image_convs = input_convs(pmodel)
        del pmodel
        # the fp32 manifest beside each candidate, so its runner reads the same tensors
        reader = CalibrationReader(m.input_name, cal, None)
        calibrated: set[str] = set()
        made: list[Candidate] = []

        def make(c: Candidate, parent: Candidate | None = None, note: str = "") -> Candidate:
            """Quantize (or copy, for a session variant), check against fp32, time; a
            refinement is timed in the same runs as its parent and kept only if faster."""
            i = len(made)
            made.append(c)
            c.path = tmp / f"cand{i}.onnx"
            log(f"candidate {i + 1}: {c.types} {c.method} {c.variant}{note}")
            if c.disabled:  # same graph as its parent, another session setting
                assert c.source is not None
                shutil.copyfile(c.source, c.path)
            else:
                fresh = c.method not in calibrated or not _supports_calibration_cache()
                label = f"calibrating {c.method} ({len(cal)} frames)"
                reader.progress = (lambda d, n, label=label: progress(label, d, n)) \
                    if progress is not None and fresh else None
                try:
                    static_qdq(prepared, c.path, reader, c.types, c.method, c.exclude,
                               cache=tmp / f"calib-{c.method}.json")
                except Exception as e:  # onnxruntime.quantization raises many kinds
                    c.why = f"quantization failed: {str(e).strip().splitlines()[0][:120]}"
                    c.path = None
                    return c
                calibrated.add(c.method)
            c.path.with_suffix(".json").write_text(
                replace(m, session={"disabled_optimizers": list(c.disabled)}
                        if c.disabled else {}).to_json())
            try:
                c.runner = ModelRunner(ModelOptions(path=c.path, threads=1, warmup_runs=0))
            except ModelError as e:
                c.why = f"does not load: {e}"
                return c
            agree = Agreement()
            for f, ref in zip(held, ref_results):
                agree.add(ref, c.runner.infer(f), truth[f.seq] if truth is not None else None)
            c.metrics = agree.summary()
            _judge(c, gate, fp32_truth)
            if parent is None or parent.runner is None:
                c.fp32_ms, c.ms = time_alternating([fp32, c.runner], timing_tensor, runs)
            else:
                c.fp32_ms, parent_ms, c.ms = time_alternating(
                    [fp32, parent.runner, c.runner], timing_tensor, runs)
                c.vs_parent = parent_ms / c.ms
            return c

        def better(c: Candidate, parent: Candidate) -> Candidate:
            gain = c.vs_parent is not None and c.vs_parent >= MIN_STEP_GAIN
            return c if c.passed and gain else parent

        best: Candidate | None = None
        for types, method in search_for_target(search, detect_cpu().int8_class, for_class):
            make(Candidate(types, method, exclude=keep))
            best = _fastest(made)
            _drop_runners(made, keep=best)
        # nothing passed: the closest candidate again with its most sensitive activations
        # float (the int8 roundings that add the most error, measured on calibration
        # frames, never on the held-out ones the gate judges): 2, 4, then 8 of them
        near = max((c for c in made if c.path is not None and c.metrics), key=_accuracy,
                   default=None)
        if best is None and near is not None and near.path is not None:
            step = max(1, len(cal) // SENSITIVITY_FRAMES)
            ranked = activation_rounding(prepared, near.path,
                                         cal[::step][:SENSITIVITY_FRAMES], m.input_name)
            log("most sensitive activations: " + ", ".join(
                f"{t} ({100 * e:.2f}%)" for t, e, _ in ranked[:max(SENSITIVE_STEPS)]))
            for k in SENSITIVE_STEPS:
                if k > len(ranked):
                    break
                floats = sorted({n for _, _, nodes in ranked[:k] for n in nodes}
                                - set(near.exclude))
                c = make(Candidate(near.types, near.method,
                                   variant_of(near.variant, f"{k} sensitive float"),
                                   exclude=near.exclude + floats))
                _drop_runners(made, keep=c if c.passed else None)
                if c.passed:
                    best = c
                    break
        # refinement of the winner, one step at a time, each kept only if it passes and
        # is faster than its parent in the same runs
        # (a) int8 for convs whose values only feed a decision (a segmentation argmax)
        if best is not None and mask_convs:
            best = better(make(Candidate(best.types, best.method,
                                         variant_of(best.variant, MASK_INT8),
                                         exclude=[k for k in best.exclude
                                                  if k not in mask_convs]),
                               parent=best), best)
            _drop_runners(made, keep=best)
        # (b) float for the conv that reads the image: 3 input channels give int8 kernels
        # little to gain, and its input no longer needs quantizing (on this VM the demo's
        # int8 stem took 0.86 ms, fp32 0.63 ms)
        firsts = [n for n in image_convs if n not in (best.exclude if best else [])]
        if best is not None and firsts:
            best = better(make(Candidate(best.types, best.method,
                                         variant_of(best.variant, INPUT_FLOAT),
                                         exclude=best.exclude + firsts),
                               parent=best), best)
            _drop_runners(made, keep=best)
        # (c) the session layout: the same file without onnxruntime's NhwcTransformer
        if best is not None and best.path is not None:
            best = better(make(Candidate(best.types, best.method,
                                         variant_of(best.variant, NO_NHWC),
                                         exclude=best.exclude, disabled=(NHWC_TRANSFORMER,),
                                         source=best.path),
                               parent=best, note=" (same file)"), best)
        _drop_runners(made, keep=None)
        chosen = best
        fp32_ms = float(np.median([c.fp32_ms for c in made if c.fp32_ms])) \
            if any(c.fp32_ms for c in made) else None
        report = Report(model, out, made, fp32_ms, fp32_truth, frames, keep, opset, chosen,
                        for_class=for_class)
        report.seconds = time.monotonic() - t_start
        if chosen is not None and chosen.path is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chosen.path, out)
            manifest_path(out).write_text(manifest_for(report, fp32).to_json())
    return report


def _accuracy(c: Candidate) -> float:
    """Closeness to fp32 (mask mIoU + detection agreement), higher is better. Not the
    ground-truth scores: on a few dozen held-out frames those move by chance (an int8
    model can score above fp32), while agreement with fp32 measures only what int8 did."""
    m = c.metrics
    return (m.get("miou_vs_fp32") or 0.0) + (m.get("det_agreement") or 0.0)


def _fastest(cands: list[Candidate]) -> Candidate | None:
    """The fastest graph among the passing candidates, and of the candidates with that
    graph (same types and variant, only the calibration differs) the most accurate: their
    speed differences are the machine's noise, their accuracy differences are not."""
    passing = [c for c in cands if c.passed]
    if not passing:
        return None
    top = max(passing, key=lambda c: c.speedup or 0.0)
    same = [c for c in passing if (c.types, c.variant) == (top.types, top.variant)]
    return max(same, key=_accuracy)


def _drop_runners(cands: list[Candidate], keep: Candidate | None) -> None:
    """Sessions hold the model's memory: keep only the one still needed for timing."""
    for c in cands:
        if c is not keep:
            c.runner = None


def _judge(c: Candidate, gate: Gate, fp32_truth: dict[str, Any] | None) -> None:
    m = c.metrics
    agree = m.get("pixel_agreement")
    if fp32_truth is not None and m.get("miou") is not None:
        # with ground truth, what matters is accuracy lost, not bit-exact masks
        c.miou_drop = fp32_truth["miou"] - m["miou"]
    elif m.get("miou_vs_fp32") is not None:
        c.miou_drop = 1.0 - m["miou_vs_fp32"]
    why = []
    if agree is not None and agree < gate.min_agreement:
        why.append(f"agreement {100 * agree:.2f}% < {100 * gate.min_agreement:g}%")
    if c.miou_drop is not None and c.miou_drop > gate.max_miou_drop:
        why.append(f"mIoU drop {100 * c.miou_drop:.2f} > {100 * gate.max_miou_drop:g} pt")
    det = m.get("det_agreement")
    if det is not None and det < gate.min_det_agreement:
        why.append(f"detection agreement {det:.3f} < {gate.min_det_agreement:g}")
    if agree is None and c.miou_drop is None and det is None:
        why.append("no mask or detections to compare")
    c.passed = not why
    c.why = "; ".join(why)
