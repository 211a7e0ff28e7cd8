"""What the search tries, by CPU class: the type pairs and calibration methods, the ops
that decide what stays float, and the candidates a target CPU can be validated for."""

from __future__ import annotations

from onnxruntime.quantization import (
    CalibrationMethod,
    QuantType,
)

from edged.errors import UserError
from edged.inference.cpu import int8_numerics

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
