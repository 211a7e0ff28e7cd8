"""The graph: preparing a model for QDQ, choosing what stays float, quantizing it, and
measuring which activations' rounding adds the error."""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import (
    QuantFormat,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edged.tools.quantize.calibration import CalibrationReader
from edged.tools.quantize.choices import (
    COMPUTE_OPS,
    DECISION_OPS,
    METHODS,
    MIN_OPSET,
    ORDER_OPS,
    REDUCED_RANGE,
    TYPE_PAIRS,
    QuantizeError,
)


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
    8 worst tensors float halved it (`tests/unit/test_quantize.py`). Each pair's own rounding,
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
