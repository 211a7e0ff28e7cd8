"""A YOEO-layout fp32 ONNX model of the reference size, with random weights.

    python -m edged.training.refmodel --out /tmp/yoeo-ref-fp32.onnx [--opset 11]

The public YOEO export (field notes) is a YOLOv4-tiny-like encoder, a YOLO head at two
strides (13x13 and 26x26, 3 anchors each) and a U-Net decoder up to full resolution:
about 22 GFLOPs at 416x416, two thirds of them in the decoder. We cannot ship those
weights, but quantization speed and int8-vs-fp32 agreement depend on the layer layout
far more than on the weight values, so this builds the same layout (Conv, LeakyRelu,
MaxPool, Resize, Concat, ArgMax; the box decode inside the graph) with random weights.

Weights are He-initialised for LeakyRelu with a folded batch-norm-like per-channel scale
and shift, so activations keep a unit-ish range through the depth as in a trained
network (a plain random init would blow up or die out, and int8 ranges would mean
nothing). Needs the `onnx` package (training/quantization only, never the daemon).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NUM_CLASSES = 3
NUM_ANCHORS = 3
# YOEO's default anchors (input pixels), large ones on the 13x13 level
ANCHORS = {32: ((81, 82), (135, 169), (344, 319)), 16: ((10, 14), (23, 27), (37, 58))}
LEAKY = 0.1


@dataclass
class _Graph:
    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    flops: dict[str, float] = field(default_factory=dict)  # per part: encoder/head/decoder
    n: int = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], prefix: str | None = None, **attrs) -> str:
        name = self.name(prefix or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, hw: int, part: str, *, stride: int = 1,
             act: bool = True, gain: float = 1.0, bias: np.ndarray | None = None,
             zero_sum: bool = False) -> str:
        """Conv (+ LeakyRelu); `hw` is the output size, for the FLOP count.

        `zero_sum`: each filter sums to zero, so the (positive) mean of LeakyRelu features
        does not decide an argmax over the outputs: random class logits then form regions
        of every class instead of one class everywhere.
        """
        fan_in = cin * k * k
        std = gain * np.sqrt(2.0 / ((1 + LEAKY**2) * fan_in))
        w = self.rng.standard_normal((cout, cin, k, k)) * std
        # a folded batch norm: per-channel scale and shift, as a trained export has
        w *= self.rng.uniform(0.7, 1.3, (cout, 1, 1, 1))
        if zero_sum:
            w -= w.mean(axis=(1, 2, 3), keepdims=True)
        b = self.rng.normal(0.0, 0.1, cout) if bias is None else bias
        y = self.node("Conv", [x, self.const(w.astype(np.float32), "w"),
                               self.const(b.astype(np.float32), "b")], "conv",
                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
        self.flops[part] = self.flops.get(part, 0.0) + 2.0 * cout * hw * hw * fan_in
        return self.node("LeakyRelu", [y], "leaky", alpha=LEAKY) if act else y

    def maxpool(self, x: str) -> str:
        return self.node("MaxPool", [x], "maxpool", kernel_shape=[2, 2], strides=[2, 2])

    def up2(self, x: str) -> str:
        roi = self.const(np.zeros(0, np.float32), "roi")  # opset 11 needs the input, empty
        scales = self.const(np.array([1, 1, 2, 2], np.float32), "scales")
        return self.node("Resize", [x, roi, scales], "resize", mode="nearest")


def _decode(g: _Graph, raw: str, hw: int, stride: int) -> str:
    """[1, A*(5+C), H, W] head output -> [1, A*H*W, 5+C] YOEO rows (boxes in pixels)."""
    k = 5 + NUM_CLASSES
    r = g.node("Reshape", [raw, g.const(np.array([1, NUM_ANCHORS, k, hw, hw], np.int64))])
    r = g.node("Transpose", [r], perm=[0, 1, 3, 4, 2])
    r = g.node("Reshape", [r, g.const(np.array([1, NUM_ANCHORS * hw * hw, k], np.int64))])

    def cols(a: int, b: int) -> str:
        return g.node("Slice", [r, g.const(np.array([a], np.int64)),
                                g.const(np.array([b], np.int64)),
                                g.const(np.array([2], np.int64))])

    gy, gx = np.meshgrid(np.arange(hw), np.arange(hw), indexing="ij")
    grid = np.stack([gx, gy], -1).reshape(1, 1, hw * hw, 2).repeat(NUM_ANCHORS, 1)
    grid = grid.reshape(1, -1, 2).astype(np.float32)
    anchors = np.array(ANCHORS[stride], np.float32).reshape(1, NUM_ANCHORS, 1, 2)
    anchors = np.broadcast_to(anchors, (1, NUM_ANCHORS, hw * hw, 2)).reshape(1, -1, 2)
    xy = g.node("Sigmoid", [cols(0, 2)])
    xy = g.node("Mul", [g.node("Add", [xy, g.const(grid)]), g.const(np.float32(stride))])
    wh = g.node("Mul", [g.node("Exp", [cols(2, 4)]), g.const(anchors.copy())])
    rest = g.node("Sigmoid", [cols(4, k)])
    return g.node("Concat", [xy, wh, rest], axis=2)


def _centre_biases(model: onnx.ModelProto, logits: str, raws: tuple[str, ...]) -> None:
    """Set output biases from one forward pass on a synthetic scene, as training would.

    Random weights give every class logit a different constant offset (channel means of
    the features), so one class would win everywhere; centring the logits makes every
    class appear. Objectness is shifted so that about 1% of the rows pass 0.5: a head
    that detects something, so detection agreement is measurable.
    """
    import onnxruntime as ort

    from edged.preprocess import Preprocessor, PreprocessSpec
    from edged.synth import render

    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    pre = Preprocessor(PreprocessSpec(input_w=size, input_h=size))
    pre(render(123, 0).image)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in (logits, *raws):
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run([logits, *raws], {"InputLayer": pre.tensor})
    inits = {i.name: i for i in model.graph.initializer}
    producer = {n.output[0]: n for n in model.graph.node}
    k = 5 + NUM_CLASSES
    for name, out in zip((logits, *raws), outs):
        bias = inits[producer[name].input[2]]
        b = numpy_helper.to_array(bias).astype(np.float64)
        if name == logits:
            b -= out.mean(axis=(0, 2, 3))
        else:
            obj = out[0, 4::k].ravel()
            b[4::k] -= np.quantile(obj, 0.99)
        bias.CopyFrom(numpy_helper.from_array(b.astype(np.float32), bias.name))


def build(path: Path, *, width: float = 1.0, size: int = 416, opset: int = 17, seed: int = 0,
          decoder_width: float | None = None) -> dict[str, float]:
    """Write the model; returns GFLOPs per part (conv multiply-adds x 2) and the total.

    `width` scales every channel count (1.0: the reference size, ~20 GFLOPs; tests use
    a fraction); `decoder_width` scales the decoder separately (default: 1.25 x `width`).
    """
    if size % 32:
        raise ValueError(f"input size must be a multiple of 32, got {size}")
    g = _Graph(np.random.default_rng(seed))
    # the reference decoder is wider than the encoder: ~2/3 of the FLOPs at 1/4..1/1
    dw = 1.25 * width if decoder_width is None else decoder_width

    def c(v: int, s: float = width) -> int:
        return max(4, int(round(v * s)))

    x = "InputLayer"
    s = size
    # encoder (YOLOv4-tiny-like): /2, /4 strided convs, then conv pairs and max pools
    e1 = g.conv(x, 3, c(32), 3, s // 2, "encoder", stride=2)  # /2
    e2 = g.conv(e1, c(32), c(64), 3, s // 4, "encoder", stride=2)  # /4
    e2 = g.conv(e2, c(64), c(64), 3, s // 4, "encoder")
    e3 = g.conv(g.maxpool(e2), c(64), c(128), 3, s // 8, "encoder")  # /8
    e3 = g.conv(e3, c(128), c(128), 3, s // 8, "encoder")
    e4 = g.conv(g.maxpool(e3), c(128), c(256), 3, s // 16, "encoder")  # /16
    e4 = g.conv(e4, c(256), c(256), 3, s // 16, "encoder")
    e5 = g.conv(g.maxpool(e4), c(256), c(512), 3, s // 32, "encoder")  # /32
    e5 = g.conv(e5, c(512), c(256), 1, s // 32, "encoder")
    # detection head: 13x13 and 26x26, 3 anchors each
    k = NUM_ANCHORS * (5 + NUM_CLASSES)
    # objectness prior: random logits would make half of all rows detections
    head_bias = np.zeros(k)
    head_bias[4::5 + NUM_CLASSES] = -1.0
    h32 = g.conv(e5, c(256), c(512), 3, s // 32, "head")
    raw32 = g.conv(h32, c(512), k, 1, s // 32, "head", act=False, gain=0.5, bias=head_bias)
    t = g.up2(g.conv(e5, c(256), c(128), 1, s // 32, "head"))
    h16 = g.conv(g.node("Concat", [t, e4], axis=1), c(128) + c(256), c(256), 3, s // 16, "head")
    raw16 = g.conv(h16, c(256), k, 1, s // 16, "head", act=False, gain=0.5, bias=head_bias)
    dets = g.node("Concat", [_decode(g, raw32, s // 32, 32), _decode(g, raw16, s // 16, 16)],
                  axis=1)
    # U-Net decoder to full resolution: upsample, concat the skip, conv
    d = g.conv(e4, c(256), c(128, dw), 1, s // 16, "decoder")
    d = g.conv(g.node("Concat", [g.up2(d), e3], axis=1), c(128, dw) + c(128), c(128, dw), 3,
               s // 8, "decoder")
    d = g.conv(g.node("Concat", [g.up2(d), e2], axis=1), c(128, dw) + c(64), c(64, dw), 3,
               s // 4, "decoder")
    d = g.conv(d, c(64, dw), c(64, dw), 3, s // 4, "decoder")
    d = g.conv(g.node("Concat", [g.up2(d), e1], axis=1), c(64, dw) + c(32), c(32, dw), 3,
               s // 2, "decoder")
    d = g.conv(d, c(32, dw), c(32, dw), 3, s // 2, "decoder")
    d = g.conv(g.up2(d), c(32, dw), c(16, dw), 3, s, "decoder")
    logits = g.conv(d, c(16, dw), NUM_CLASSES, 1, s, "decoder", act=False, zero_sum=True,
                    bias=np.zeros(NUM_CLASSES))
    g.node("Cast", [g.node("ArgMax", [logits], axis=1, keepdims=0)], to=TensorProto.UINT8)
    # name the outputs as the YOEO contract does
    g.nodes[-1].output[0] = "Segmentations"
    for n in g.nodes:
        if n.output[0] == dets:
            n.output[0] = "Detections"
    rows = NUM_ANCHORS * ((s // 32) ** 2 + (s // 16) ** 2)
    graph = helper.make_graph(
        g.nodes, "yoeo_reference_random",
        [helper.make_tensor_value_info("InputLayer", TensorProto.FLOAT, [1, 3, s, s])],
        [helper.make_tensor_value_info("Detections", TensorProto.FLOAT,
                                       [1, rows, 5 + NUM_CLASSES]),
         helper.make_tensor_value_info("Segmentations", TensorProto.UINT8, [1, s, s])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edged.training.refmodel")
    model.ir_version = 7 if opset <= 13 else 8
    _centre_biases(model, logits, (raw32, raw16))
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    out = {k: v / 1e9 for k, v in g.flops.items()}
    out["total"] = sum(g.flops.values()) / 1e9
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--width", type=float, default=1.0, help="channel scale (1.0: reference)")
    ap.add_argument("--opset", type=int, default=17, help="11 reproduces old exports")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    flops = build(args.out, width=args.width, opset=args.opset, seed=args.seed)
    parts = ", ".join(f"{k} {v:.2f}" for k, v in flops.items() if k != "total")
    print(f"wrote {args.out}: {flops['total']:.2f} GFLOPs at 416x416 ({parts}), "
          f"opset {args.opset}")


if __name__ == "__main__":
    main()
