"""`edged quantize`: static QDQ int8 for any model edged runs, kept only if it is accurate.

The steps, each for a reason measured on the CPUs edged runs on (field notes):

1. Frames. Calibration and held-out frames come from the configured cameras (`-c`), a
   folder of images or a video (`--frames`), or by default synthetic RoboCup scenes
   (`edged.synth`): calibration from a training seed block, held-out frames from the
   evaluation seeds, which also gives ground truth. Every frame goes through the
   model's own pre-processing (its manifest's `PreprocessSpec`), so the int8 ranges are
   those of the tensors the daemon feeds.
2. Prepare. Models below opset 13 are upgraded first (per-channel int8 weights of an
   opset-11 graph fail to load), then `quant_pre_process` (shape inference and graph
   optimisation) runs, as the onnxruntime docs require for good QDQ placement.
3. Candidates. Static QDQ with per-channel weights for each activation/weight type pair
   and calibration method of the search (`quick` or `full`). The final convolution(s)
   feeding each output and everything after them (box decode, argmax) stay in float by
   default: they produce scores, pixel coordinates and logits where int8 steps show.
   Then the fastest passing candidate is refined, a step at a time, each step timed in
   the same runs as its parent and kept only if it passes the gate and is >= 2% faster: (a)
   the convolutions whose outputs only reach the graph through a decision (a
   segmentation head's argmax) in int8 too; (b) the convolution that reads the image
   in float; (c) the same file run with onnxruntime's NhwcTransformer off (recorded in
   the manifest's `session`, which edged's runner applies).
4. Gate. Each candidate runs on held-out frames (never the calibration ones) through
   edged's own `ModelRunner` next to the fp32 model: mask pixel agreement and mIoU
   against the fp32 masks, detection agreement (boxes matched at IoU >= 0.5) and the mean
   score change; with ground truth (synthetic scenes) also real mIoU and mAP@0.5. Speed
   is the median of single-thread runs alternating with the fp32 model, so both see the
   same machine load. The fastest candidate that passes the gate is written, with a
   manifest that records how it was made and what was measured.

Needs the `onnx` package (`pip install 'edged[quantize]'`); the daemon never imports
this module.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edged.errors import UserError
from edged.inference.cpu import INT8_CLASSES, int8_numerics
from edged.inference.cpu import detect as detect_cpu
from edged.inference.manifest import manifest_path
from edged.inference.nms import box_iou
from edged.inference.preprocess import Preprocessor, PreprocessSpec
from edged.inference.runner import ModelError, ModelOptions, ModelRunner, time_interleaved
from edged.results import Frame, Result
from edged.synth import CLASS_NAMES, SEG_CLASS_NAMES, render
from edged.tools.evaluate import DetMeter, SegMeter, scene_ids

CALIBRATION_SEED = 700_000  # a training-range seed block, never an evaluation seed
HOLDOUT_SEED = 1_000_000  # evaluation seeds, as `edged eval` uses
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis) needs opset 13
# ops whose output is "the final layer" when walking back from a graph output
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# ops that only move values or compare them; DECISION_OPS also turn them into a choice
# (an index, a boolean). An output reached from a conv through these alone depends on the
# order of the conv's values, not on their size: int8 steps only matter near a tie.
DECISION_OPS = frozenset({"ArgMax", "ArgMin", "Greater", "Less", "GreaterOrEqual",
                          "LessOrEqual"})
# element-wise and strictly increasing: a decision after them is the decision before them
# (a real YOEO export ends its segmentation head Conv -> LeakyRelu -> ArgMax). Relu is
# not one: it maps every negative logit to 0, and ties change an argmax
MONOTONIC_OPS = frozenset({"LeakyRelu", "Sigmoid", "Tanh", "Exp", "Elu", "Selu", "Softplus"})
ORDER_OPS = DECISION_OPS | MONOTONIC_OPS | frozenset({
    "Max", "Min", "Where", "Split", "Slice", "DepthToSpace", "SpaceToDepth", "Reshape",
    "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast", "Concat"})
# the onnxruntime transformer that moves int8 convolutions to NHWC; with it, this
# onnxruntime runs uint8 nearest Resize in NHWC at about 10x the cost of NCHW, so for a
# decoder with upsampling the graph can be faster without it: measured per model
NHWC_TRANSFORMER = "NhwcTransformer"
# a refinement step must beat its parent by this much in the same runs: below it, the
# difference is the machine's noise and the step would be kept by chance
MIN_STEP_GAIN = 1.02
TYPE_PAIRS: dict[str, tuple[QuantType, QuantType]] = {
    "U8S8": (QuantType.QUInt8, QuantType.QInt8),  # the fast pair on x86 (VNNI)
    "S8S8": (QuantType.QInt8, QuantType.QInt8),  # what ARM and GPUs prefer
    # U8S8 with 7-bit weights (onnxruntime's reduce_range): on x86 without VNNI the U8S8
    # kernels multiply-add in 16 bits with saturation, which the reduced range avoids
    "U8S7": (QuantType.QUInt8, QuantType.QInt8),
    # unsigned weights: the other way around the saturation that onnxruntime's docs give
    "U8U8": (QuantType.QUInt8, QuantType.QUInt8),
}
REDUCED_RANGE = frozenset({"U8S7"})
# x86 classes whose int8 kernels saturate (edged.inference.cpu)
SATURATING_CLASSES = frozenset({"x86-avx2", "x86-avx512", "x86"})
METHODS: dict[str, CalibrationMethod] = {
    "MinMax": CalibrationMethod.MinMax,
    "Percentile": CalibrationMethod.Percentile,
    "Entropy": CalibrationMethod.Entropy,
}
SEARCHES: dict[str, tuple[tuple[str, str], ...]] = {
    # MinMax is the cheapest calibration; S8S8 is there to show what the pair costs here;
    # Percentile is the usual fix when a few outliers stretch MinMax ranges
    "quick": (("U8S8", "MinMax"), ("S8S8", "MinMax"), ("U8S8", "Percentile")),
    "full": tuple((t, m) for m in METHODS for t in TYPE_PAIRS),
}




def search_for(search: str, int8_class: str) -> tuple[tuple[str, str], ...]:
    """The candidates of `search` on a CPU of `int8_class`: where U8S8 saturates, 7-bit
    weights (U8S7) and unsigned weights (U8U8) are tried too, as onnxruntime's
    quantization docs advise there (the accuracy gate is the same)."""
    base = SEARCHES[search]
    if int8_class not in SATURATING_CLASSES:
        return base
    extra = tuple((pair, m) for pair in ("U8S7", "U8U8") for t, m in base if t == "U8S8")
    return base + extra


class QuantizeError(UserError, RuntimeError):
    """Quantization cannot proceed; the message says what and why."""


def search_for_target(search: str, here: str, target: str | None
                      ) -> tuple[tuple[str, str], ...]:
    """The candidates to try here for a model meant for a CPU of class `target`.

    The gate can only vouch for integers this CPU computes as the target does: for a
    saturating target from a machine that accumulates exactly, that is 7-bit weights
    (U8S7: pairs of u8 x s7 products stay inside int16) and unsigned weights (U8U8,
    widened to 16 bits before multiplying), which both kinds of kernels compute exactly.
    U8S8 and S8S8 would pass here and clip there."""
    if target is None or target == here or (
            int8_numerics(target) == int8_numerics(here) != "unknown"):
        return search_for(search, here)
    if int8_numerics(target) == "saturating" and int8_numerics(here) == "exact":
        return tuple((pair, m) for pair in ("U8S7", "U8U8")
                     for t, m in SEARCHES[search] if t == "U8S8")
    raise QuantizeError(
        f"cannot validate a model for int8 class {target} on this CPU ({here}): its kernels "
        f"compute other integers; run `edged quantize` on a {target} machine")


# ----------------------------------------------------------------------------- frames


@dataclass
class FrameSet:
    """BGR frames for calibration and for the held-out check, and where they came from."""

    calibration: list[np.ndarray]
    holdout: list[np.ndarray]
    source: str
    truth: list[Any] | None = None  # edged.synth.Scene per held-out frame, when known


def synthetic_frames(count: int, holdout: int, width: int = 640,
                     height: int = 480) -> FrameSet:
    """Calibration from training seeds (8 frames per sequence), held out from eval seeds."""
    cal = [render(CALIBRATION_SEED + i // 8, (i % 8) * 131, width, height).image
           for i in range(count)]
    scenes = [render(seq, idx, width, height) for seq, idx in scene_ids(holdout, HOLDOUT_SEED)]
    return FrameSet(cal, [s.image for s in scenes],
                    f"synthetic scenes (calibration seeds {CALIBRATION_SEED}+, held-out seeds "
                    f"{HOLDOUT_SEED}+)", truth=scenes)


def _split(frames: list[np.ndarray], count: int, holdout: int, source: str) -> FrameSet:
    """The last `holdout` frames are held out (later in a video: not near-duplicates of
    calibration frames); with too few frames, a quarter is held out."""
    if len(frames) < 2:
        raise QuantizeError(f"{source}: need at least 2 readable frames (one to calibrate, "
                            f"one to check), got {len(frames)}")
    if len(frames) < count + holdout:
        holdout = max(1, len(frames) // 4)
    return FrameSet(frames[:len(frames) - holdout][:count], frames[len(frames) - holdout:],
                    source)


def _even_indices(total: int, want: int) -> set[int]:
    if total <= want:
        return set(range(total))
    return {int(i * total / want) for i in range(want)}


def video_frames(path: Path, count: int, holdout: int) -> FrameSet:
    """Frames spread evenly over the whole video (neighbouring frames add little)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise QuantizeError(f"cannot open video {path}")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        keep = _even_indices(total, count + holdout) if total > 0 else None
        frames: list[np.ndarray] = []
        # streams without a frame count: the first count + holdout frames
        last = total if keep is not None else count + holdout
        for i in range(last):
            ok, img = cap.read()
            if not ok or img is None:
                break
            if keep is None or i in keep:
                frames.append(img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    finally:
        cap.release()
    return _split(frames, count, holdout, f"video {path}")


def image_frames(folder: Path, count: int, holdout: int) -> FrameSet:
    import cv2

    from edged.capture.defaults import IMAGE_EXTENSIONS

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise QuantizeError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    frames = []
    for i in sorted(_even_indices(len(files), count + holdout)):
        img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if img is not None:
            frames.append(img)
    return _split(frames, count, holdout, f"{len(frames)} images from {folder}")


def config_frames(config: Any, count: int, holdout: int) -> FrameSet:
    """Frames from the configured cameras, read with edged's own sources, in turn."""
    from edged.capture.base import SourceError
    from edged.capture.sources import source_for

    redact = config.redactor()
    cams = [(name, c) for name, c in config.cameras.items() if c.enabled]
    if not cams:
        raise QuantizeError("the configuration has no enabled camera")
    per_cam = math.ceil((count + holdout) / len(cams))
    frames: list[np.ndarray] = []
    names = []
    for name, cam in cams:
        src = source_for(cam, loop=False, redactor=redact)
        try:
            src.open()
            got = 0
            while got < per_cam:
                img = src.read()
                if img is None:
                    break
                frames.append(img)
                got += 1
        except SourceError as e:
            raise QuantizeError(f"camera {name}: {e}") from None
        finally:
            src.close()
        names.append(f"{name} ({redact(cam.source)})")
    # held out: the last frames read, i.e. the last camera's when there are several
    return _split(frames, count, holdout, "cameras " + ", ".join(names))


def frames_for(path: str | None, config: Any | None, count: int, holdout: int) -> FrameSet:
    if config is not None:
        return config_frames(config, count, holdout)
    if path is None:
        return synthetic_frames(count, holdout)
    p = Path(path)
    if p.is_dir():
        return image_frames(p, count, holdout)
    if p.is_file():
        return video_frames(p, count, holdout)
    raise QuantizeError(f"--frames {path}: no such folder or video file")


def tensors(frames: Iterable[np.ndarray], spec: PreprocessSpec, unbatched: bool = False
            ) -> list[np.ndarray]:
    """The model's input tensors for `frames`, through edged's own pre-processing."""
    pre = Preprocessor(spec)
    out = []
    for img in frames:
        pre(img)
        out.append(pre.tensor[0].copy() if unbatched else pre.tensor.copy())
    return out


# ----------------------------------------------------------------------------- progress


class Progress:
    """A bar on a terminal; plain lines every ~10 % (or 5 s) when stderr is a file/pipe."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_line = 0.0
        self._last_pct = -1

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.tty:
            width = 30
            fill = int(width * done / max(total, 1))
            end = "\n" if done >= total else ""
            print(f"\r{label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}", end=end,
                  file=self.stream, flush=True)
            return
        pct = int(100 * done / max(total, 1)) // 10 * 10
        now = time.monotonic()
        if done >= total or pct > self._last_pct or now - self._last_line >= 5.0:
            if done < total and pct == self._last_pct and now - self._last_line < 5.0:
                return
            print(f"{label}: {done}/{total}", file=self.stream, flush=True)
            self._last_pct, self._last_line = pct, now
            if done >= total:
                self._last_pct = -1


class CalibrationReader(CalibrationDataReader):
    """Feeds calibration tensors; `set_range` lets onnxruntime calibrate in strides so
    the intermediate outputs of only a few frames are held in memory at once."""

    def __init__(self, input_name: str, data: list[np.ndarray],
                 progress: Callable[[int, int], None] | None) -> None:
        self.input_name, self.data, self.progress = input_name, data, progress
        self.start, self.end = 0, len(data)
        self.pos = 0
        self.served = 0

    def __len__(self) -> int:
        return len(self.data)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.data))
        self.pos = self.start

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= self.end:
            return None
        t = self.data[self.pos]
        self.pos += 1
        self.served += 1
        if self.progress is not None:
            self.progress(self.served, len(self.data))
        return {self.input_name: t}

    def rewind(self) -> None:
        self.start, self.end, self.pos, self.served = 0, len(self.data), 0, 0


# ----------------------------------------------------------------------------- graph


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _name_nodes(model: onnx.ModelProto) -> None:
    """Unnamed nodes cannot be excluded from quantization by name: give them names."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


def prepare_model(src: Path, workdir: Path) -> tuple[Path, int]:
    """Upgrade to opset >= 13 when needed, name every node, run `quant_pre_process`.

    Returns the prepared model's path and the source model's opset.
    """
    try:
        model = onnx.load(str(src))
    except Exception as e:  # onnx raises DecodeError, OSError, ...: all mean "not a model"
        raise QuantizeError(f"cannot read {src} as an ONNX model: {e}") from None
    opset = opset_of(model)
    if opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:  # the converter raises plain RuntimeErrors per op
            raise QuantizeError(f"{src}: cannot upgrade opset {opset} to {MIN_OPSET} "
                                f"(per-channel int8 needs it): {e}") from None
    _name_nodes(model)
    staged = workdir / "staged.onnx"
    onnx.save(model, str(staged))
    pre = workdir / "prepared.onnx"
    # onnxruntime's symbolic shape inference drops a debug model into the working
    # directory when it gives up: keep that in our scratch folder, not the user's
    with contextlib.chdir(workdir):
        try:
            quant_pre_process(str(staged), str(pre))
        except Exception:
            # symbolic shape inference does not know every op; ONNX shape inference and
            # the ORT optimiser alone still give QDQ a graph it can place well
            quant_pre_process(str(staged), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    if any(not n.name for n in model.graph.node):
        _name_nodes(model)
        onnx.save(model, str(pre))
    return pre, opset


def default_keep_float(model: onnx.ModelProto, final_convs: bool = True) -> list[str]:
    """Nodes between each graph output and the last compute layer(s) feeding it.

    Walking back from every output until a Conv/MatMul/Gemm finds the post-processing
    tail (box decode, sigmoids, argmax, casts); with `final_convs` the convolution(s) that
    produce the raw outputs are kept in float too. For the demo YOEO this is exactly the
    head and segmentation convolutions plus the decode, as its export did by name.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    keep: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in COMPUTE_OPS:
            if final_convs:
                keep.append(node.name)
            continue
        keep.append(node.name)
        stack.extend(i for i in node.input if i)
    return keep


def _shape_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors computed from shapes and constants only (a dynamic batch's Reshape
    targets): they carry no activation values, so a walk over values skips them."""
    known = {i.name for i in model.graph.initializer}
    for n in model.graph.node:  # ONNX graphs are stored in topological order
        if n.op_type in ("Shape", "Size", "Constant") or \
                all(i in known for i in n.input if i):
            known.update(n.output)
    return known


def _output_tails(model: onnx.ModelProto) -> Iterator[tuple[set[str], list[str]]]:
    """Per graph output: the op types after its last compute layer(s), and those layers."""
    producer = {o: n for n in model.graph.node for o in n.output}
    shapes = _shape_tensors(model)
    for out in model.graph.output:
        ops: set[str] = set()
        finals: list[str] = []
        seen: set[str] = set()
        stack = [out.name]
        while stack:
            name = stack.pop()
            node = None if name in shapes else producer.get(name)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in COMPUTE_OPS:
                finals.append(node.name)
                continue
            ops.add(_order_kind(node))
            stack.extend(i for i in node.input if i)
        yield ops, finals


def _order_kind(node: onnx.NodeProto) -> str:
    """The node's op type, unless its attributes make a monotonic op not strictly
    increasing (then a name no rule accepts)."""
    defaults = {"LeakyRelu": {"alpha": 0.01}, "Elu": {"alpha": 1.0},
                "Selu": {"alpha": 1.67326, "gamma": 1.0507}}
    if node.op_type in defaults:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        # strictly increasing only with every one of these factors above 0
        if any(float(attrs.get(k, v)) <= 0 for k, v in defaults[node.op_type].items()):
            return f"{node.op_type}(not strictly increasing)"
    return node.op_type


def decision_convs(model: onnx.ModelProto) -> list[str]:
    """Final compute layers whose outputs only reach the graph through a decision.

    A segmentation head's logits end in an argmax (or, in the demo export, a running
    maximum): only which class is largest matters, so these convolutions can be int8
    even though the ones that produce box coordinates and scores stay float. A layer
    that also feeds a value output (scores, boxes) is not one of them.
    """
    decision: list[str] = []
    valued: set[str] = set()
    for ops, finals in _output_tails(model):
        if ops and ops <= ORDER_OPS and ops & DECISION_OPS:
            decision += [f for f in finals if f not in decision]
        else:
            valued.update(finals)
    return [d for d in decision if d not in valued]


def input_convs(model: onnx.ModelProto) -> list[str]:
    """Convolutions that read a graph input directly (the image), with at most 4 input
    channels, where int8 convolution kernels have the least to work with."""
    inputs = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and n.input[0] in inputs
            and len(weights.get(n.input[1], [])) == 4 and weights[n.input[1]][1] <= 4]


def _supports_calibration_cache() -> bool:
    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _stride(n: int, most: int = 8) -> int:
    """Largest divisor of n up to `most` (onnxruntime requires strides to divide n)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def static_qdq(prepared: Path, out: Path, reader: CalibrationReader, types: str = "U8S8",
               method: str = "MinMax", exclude: Iterable[str] = (),
               cache: Path | None = None) -> None:
    """One static QDQ quantization, per-channel weights; `cache` reuses the calibration of
    the same method across type pairs (onnxruntime >= 1.22 has the option)."""
    act, weight = TYPE_PAIRS[types]
    reader.rewind()
    kw: dict[str, Any] = {}
    if cache is not None and _supports_calibration_cache():
        kw["calibration_cache_path"] = str(cache)
    # onnxruntime's calibrators print() their progress: keep stdout for the table
    with contextlib.redirect_stdout(sys.stderr):
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=types in REDUCED_RANGE,
                        activation_type=act, weight_type=weight,
                        calibrate_method=METHODS[method], nodes_to_exclude=list(exclude),
                        extra_options={"CalibStridedMinMax": _stride(len(reader))}, **kw)


def _with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> ort.InferenceSession:
    """A plain (unoptimised) session that also returns the tensors `names`: without
    graph optimisations a QDQ graph computes its Quantize/Dequantize pairs one by one, the
    integers an exact int8 kernel would give, and every tensor keeps its name."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                          for n in names if n not in have)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 0
    so.log_severity_level = 4
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def activation_rounding(prepared: Path, quantized: Path, inputs: list[np.ndarray],
                        input_name: str) -> list[tuple[str, float, list[str]]]:
    """Every activation `quantized` rounds to int8, worst first: (tensor, the relative L2
    error its Quantize/Dequantize pair adds over `inputs`, the nodes to keep float so
    that it stays float: its producer and its consumers).

    Per tensor, not per conv: a conv left float still reads and writes int8 tensors when
    its neighbours are int8 (onnxruntime puts the pair on the tensor), so on the
    reference layout keeping every conv float left the error where it was; keeping the
    8 worst tensors float halved it (`tests/test_quantize.py`). Each pair's own rounding,
    not the error of the tensor: that carries every earlier rounding and would blame the
    decoder (onnxruntime's qdq_loss_debug reports the same local error as SQNR)."""
    fm = onnx.load(str(prepared))
    qm = onnx.load(str(quantized))
    inits = {t.name for t in qm.graph.initializer}
    dq_of = {n.input[0]: n.output[0] for n in qm.graph.node if n.op_type == "DequantizeLinear"}
    pairs = {n.input[0]: dq_of[n.output[0]] for n in qm.graph.node
             if n.op_type == "QuantizeLinear" and n.input[0] not in inits
             and n.output[0] in dq_of}
    producer = {o: n.name for n in fm.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in fm.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    pairs = {t: tq for t, tq in pairs.items() if t in producer or t in consumers}
    if not pairs:
        return []
    sess = _with_outputs(qm, sorted({*pairs, *pairs.values()}))
    diff = dict.fromkeys(pairs, 0.0)
    norm = dict.fromkeys(pairs, 0.0)
    for x in inputs:
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {input_name: x})))
        for t, tq in pairs.items():
            a = out[t].astype(np.float64)
            diff[t] += float(np.sum((a - out[tq]) ** 2))
            norm[t] += float(np.sum(a ** 2))
        del out
    ranked = [(t, math.sqrt(diff[t] / norm[t]) if norm[t] > 0 else 0.0,
               sorted({*([producer[t]] if t in producer else []), *consumers.get(t, [])}))
              for t in pairs]
    return sorted(ranked, key=lambda r: -r[1])


# ----------------------------------------------------------------------------- measuring


@dataclass
class Agreement:
    """int8 results against fp32 results (and against the truth when there is one)."""

    pixels: int = 0
    equal: int = 0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((256, 256), np.int64))
    fp32_boxes: int = 0
    int8_boxes: int = 0
    matched: int = 0
    score_delta: float = 0.0
    seg_truth: SegMeter | None = None
    det_truth: DetMeter | None = None

    def add(self, ref: Result, res: Result, truth: Any | None = None) -> None:
        a, b = ref.mask_camera(), res.mask_camera()
        if a is not None and b is not None:
            a64 = np.minimum(a.astype(np.int64), 255).ravel()
            b64 = np.minimum(b.astype(np.int64), 255).ravel()
            self.pixels += a64.size
            self.equal += int(np.count_nonzero(a64 == b64))
            self.confusion += np.bincount(a64 * 256 + b64, minlength=65536).reshape(256, 256)
        da, db = ref.detections, res.detections
        self.fp32_boxes += len(da.scores)
        self.int8_boxes += len(db.scores)
        if len(da.scores) and len(db.scores):
            iou = box_iou(da.boxes, db.boxes)
            iou[da.class_ids[:, None] != db.class_ids[None, :]] = 0.0
            taken = np.zeros(len(db.scores), bool)
            for i in np.argsort(-da.scores):
                cand = np.where(taken, -1.0, iou[i])
                j = int(cand.argmax())
                if cand[j] >= 0.5:
                    taken[j] = True
                    self.matched += 1
                    self.score_delta += abs(float(da.scores[i]) - float(db.scores[j]))
        if truth is not None:
            if self.seg_truth is None:
                self.seg_truth = SegMeter(len(SEG_CLASS_NAMES))
                self.det_truth = DetMeter(len(CLASS_NAMES))
            if b is not None:
                self.seg_truth.add(b, truth.segmentation)
            assert self.det_truth is not None
            self.det_truth.add(db.boxes, db.scores, db.class_ids, truth.boxes, truth.classes)

    def summary(self) -> dict[str, Any]:
        c = self.confusion
        tp = np.diag(c).astype(np.float64)
        denom = c.sum(0) + c.sum(1) - tp
        ious = tp[denom > 0] / denom[denom > 0]
        boxes = max(self.fp32_boxes, self.int8_boxes)
        out: dict[str, Any] = {
            "pixel_agreement": self.equal / self.pixels if self.pixels else None,
            "miou_vs_fp32": float(ious.mean()) if len(ious) else None,
            # matched pairs over the larger of the two box counts: extra boxes count too
            "det_agreement": self.matched / boxes if boxes else None,
            "det_boxes": {"fp32": self.fp32_boxes, "int8": self.int8_boxes,
                          "matched": self.matched},
            "score_delta": self.score_delta / self.matched if self.matched else None,
        }
        if self.seg_truth is not None and self.det_truth is not None:
            out["miou"] = float(np.nanmean(self.seg_truth.iou()))
            aps = self.det_truth.ap()
            out["map50"] = float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else None
        return out


def _truth_metrics(results: list[Result], truth: list[Any]) -> dict[str, Any]:
    seg = SegMeter(len(SEG_CLASS_NAMES))
    det = DetMeter(len(CLASS_NAMES))
    for r, t in zip(results, truth):
        m = r.mask_camera()
        if m is not None:
            seg.add(m, t.segmentation)
        d = r.detections
        det.add(d.boxes, d.scores, d.class_ids, t.boxes, t.classes)
    aps = det.ap()
    return {"miou": float(np.nanmean(seg.iou())),
            "map50": float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else None}


def time_alternating(runners: list[ModelRunner], tensor: np.ndarray, runs: int
                     ) -> list[float]:
    """Median ms of each runner on one tensor, runs interleaved (same machine load)."""
    times = time_interleaved(runners, [[tensor]] * len(runners), runs)
    return [float(np.median(t)) for t in times]


# ----------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Gate:
    min_agreement: float = 0.98
    max_miou_drop: float = 0.01  # mIoU points / 100
    # boxes of int8 matched to fp32's (IoU >= 0.5, same class) over the larger count
    min_det_agreement: float = 0.9


# what a candidate keeps in float and how its session runs; the table's `variant` column
VARIANT_BASE = "out convs float"  # every final conv and the decode/argmax tail float
MASK_INT8 = "mask conv int8"  # the decision (segmentation) convs int8 too
INPUT_FLOAT = "input conv float"  # the conv that reads the image stays float
NO_NHWC = "no NHWC"  # the same file, run with onnxruntime's NhwcTransformer off
# the rescue of a search where nothing passed: this many most sensitive activations float
SENSITIVE_STEPS = (2, 4, 8)
SENSITIVITY_FRAMES = 8  # calibration frames the sensitivity is measured on


def _variant(parent: str, step: str) -> str:
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


def run_search(model: Path, out: Path, frames: FrameSet, *, search: str = "quick",
               keep_float: Iterable[str] = (), default_keep: bool = True,
               gate: Gate = Gate(), runs: int = 20, use_truth: bool = True,
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
    fp32_truth = _truth_metrics(ref_results, truth) if truth else None
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
                                   _variant(near.variant, f"{k} sensitive float"),
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
                                         _variant(best.variant, MASK_INT8),
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
                                         _variant(best.variant, INPUT_FLOAT),
                                         exclude=best.exclude + firsts),
                               parent=best), best)
            _drop_runners(made, keep=best)
        # (c) the session layout: the same file without onnxruntime's NhwcTransformer
        if best is not None and best.path is not None:
            best = better(make(Candidate(best.types, best.method,
                                         _variant(best.variant, NO_NHWC),
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
            manifest_path(out).write_text(_manifest(report, fp32).to_json())
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


def _manifest(report: Report, fp32: ModelRunner):
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
