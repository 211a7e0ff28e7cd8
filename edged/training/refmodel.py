"""A YOEO-layout fp32 ONNX model of the reference size: random features, fitted head.

    python -m edged.training.refmodel --out /tmp/yoeo-ref-fp32.onnx [--opset 11]
        [--norm-scenes N] [--fit-heads N | --no-fit-heads]

The public YOEO export (field notes) is a YOLOv4-tiny-like encoder, a YOLO head at two
strides (13x13 and 26x26, 3 anchors each) and a U-Net decoder up to full resolution:
about 22 GFLOPs at 416x416, two thirds of them in the decoder. We cannot ship those
weights, but quantization speed depends on the layer layout, not on the weight values,
so this builds the same layout (Conv, LeakyRelu, Clip, MaxPool, Resize, Concat, ArgMax;
the box decode inside the graph) with random weights.

Hidden layers (`--norm-scenes N`, default 8): a random body must still have the
statistics of a trained one, or int8 measures the random init. Three properties of a
trained, batch-normalised network are emulated, each from data, none from a quantization
result:
  * filters respond to the structure of their input: each conv's weights are a Gaussian
    draw with the covariance of its own input patches (w ~ N(0, C), a random combination
    of centred patches of N synthetic scenes, seeds 640000+), not isotropic N(0, I). An
    isotropic random filter on spatially smooth features has a large weight norm for the
    response it gives, so white noise (int8 rounding) is amplified layer after layer.
    Relative L2 int8 error of the conv outputs after the first conv / at the head input:
    data-free init 0.7% / 10%; BN-style normalisation of isotropic filters alone (at half
    width) 1.4% / 32%; data-aligned and normalised 0.15% / 0.8%;
  * batch norm, folded: every hidden conv's output channels are rescaled to zero mean and
    unit variance on those scenes (LSUV-style, in topological order, each conv measured
    after its inputs were fixed);
  * bounded activations: LeakyRelu is followed by a Clip at [-0.6, 6] (6 standard
    deviations, as ReLU6 after BN in mobile networks), so a rare large response does not
    set the int8 range of a whole tensor (+4 points of mask agreement, 87.7 -> 91.7%,
    with 64 calibration frames and the unregularised probe).
`--norm-scenes 0` keeps the data-free init: He-initialised for LeakyRelu with a random
folded-BN-like per-channel scale and shift (activations unit-ish, channel variances
spread 5-12x, filters isotropic).

Segmentation head (`--fit-heads N`, default 24 scenes): with a purely random last
layer the three class logits at a pixel nearly tie everywhere, a margin no trained
network has, so int8-vs-fp32 mask agreement would measure the random head, not
quantization. Training the whole 20-GFLOP network is out of reach here, so the body
stays random ("random features") and only the final 1x1 segmentation conv (the class
logits before ArgMax) is fitted, in closed form: a linear probe. The feature map feeding
it becomes an extra graph output, onnxruntime computes it on N synthetic scenes
(`edged.synth`, training seeds 600000+, letterboxed to the input with the model's own
pre-processing: RGB, /255), 20k pixels per class are sampled (class-balanced, padding
excluded) and ridge regression onto one-hot class targets gives the weights and bias,
written back into the conv's initializers. The ridge strength is chosen from
1e-4..1 by the one-standard-error rule on the probe's held-out scenes (8, seeds
650000+): the strongest ridge whose mean per-scene mIoU is within one standard error of
the best, the usual pick of a regularised model and the analogue of weight decay and
finite SGD training, which leave feature directions of tiny variance unused (the last
decoder features span 2.3 down to 0.005 in standard deviation; a near-unregularised
probe leans on those directions and amplifies int8 error ~10x into the logits). Every
layer that int8 quantizes keeps its random (data-aligned, normalised) weights; only the
(float-kept) head is fitted. The held-out mIoU of the probe is printed; it is modest
(about 0.6 at the reference size), which is the honest price of not training.
`--no-fit-heads` gives the old random head, centred on one scene.
The detection head stays random (objectness shifted so ~1% of rows fire).

Needs the `onnx` package (training/quantization only, never the daemon).
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
FIT_SCENES = 24  # synthetic scenes for the segmentation head's linear probe
FIT_SEED = 600_000  # training-range seeds, apart from edged quantize's calibration block
FIT_EVAL_SEED = 650_000  # held-out scenes for the fitted head's mIoU
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # probe ridge strengths (standardised features)
NORM_SCENES = 8  # synthetic scenes for the data-dependent (LSUV-style) normalisation
NORM_SEED = 640_000  # training-range seeds, apart from the probe's fit and eval scenes
CLIP = 6.0  # hidden activations bounded as ReLU6 does, in batch-norm units


@dataclass
class _Graph:
    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    flops: dict[str, float] = field(default_factory=dict)  # per part: encoder/head/decoder
    hidden: list[str] = field(default_factory=list)  # pre-activations of the hidden convs
    n: int = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, value: np.ndarray | np.generic, prefix: str = "c") -> str:
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
        if act:
            self.hidden.append(y)
        if not act:
            return y
        y = self.node("LeakyRelu", [y], "leaky", alpha=LEAKY)
        y = self.node("Clip", [y, self.const(np.float32(-LEAKY * CLIP), "lo"),
                                   self.const(np.float32(CLIP), "hi")], "clip")
        return y

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
    anchors: np.ndarray = np.array(ANCHORS[stride], np.float32).reshape(1, NUM_ANCHORS, 1, 2)
    anchors = np.broadcast_to(anchors, (1, NUM_ANCHORS, hw * hw, 2)).reshape(1, -1, 2)
    xy = g.node("Sigmoid", [cols(0, 2)])
    xy = g.node("Mul", [g.node("Add", [xy, g.const(grid)]), g.const(np.float32(stride))])
    wh = g.node("Mul", [g.node("Exp", [cols(2, 4)]), g.const(anchors.copy())])
    rest = g.node("Sigmoid", [cols(4, k)])
    return g.node("Concat", [xy, wh, rest], axis=2)


def _centre_biases(model: onnx.ModelProto, logits: str | None, raws: tuple[str, ...]) -> None:
    """Set output biases from one forward pass on a synthetic scene, as training would.

    Random weights give every class logit a different constant offset (channel means of
    the features), so one class would win everywhere; centring the logits makes every
    class appear. Objectness is shifted so that about 1% of the rows pass 0.5: a head
    that detects something, so detection agreement is measurable.
    """
    import onnxruntime as ort

    from edged.inference.preprocess import Preprocessor, PreprocessSpec
    from edged.synth import render

    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    pre = Preprocessor(PreprocessSpec(input_w=size, input_h=size))
    pre(render(123, 0).image)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = (*([logits] if logits else []), *raws)
    for name in names:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(list(names), {"InputLayer": pre.tensor})
    inits = {i.name: i for i in model.graph.initializer}
    producer = {n.output[0]: n for n in model.graph.node}
    k = 5 + NUM_CLASSES
    for name, out in zip(names, outs):
        bias = inits[producer[name].input[2]]
        b = numpy_helper.to_array(bias).astype(np.float64)
        if name == logits:
            b -= out.mean(axis=(0, 2, 3))
        else:
            obj = out[0, 4::k].ravel()
            b[4::k] -= np.quantile(obj, 0.99)
        bias.CopyFrom(numpy_helper.from_array(b.astype(np.float32), bias.name))


def _scene_tensors(ids: list[tuple[int, int]], size: int):
    """(NCHW float32 input as the model's pre-processing makes it, HxW labels with 255 on
    the letterbox padding) per synthetic scene, rendered at camera resolution."""
    from edged.inference.preprocess import PreprocessSpec, letterbox_image, letterbox_labels
    from edged.synth import render

    spec = PreprocessSpec(input_w=size, input_h=size)  # RGB, /255, centred letterbox
    for seq, idx in ids:
        scene = render(seq, idx, 640, 480)
        img, box = letterbox_image(scene.image, spec)
        x = img[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        yield np.ascontiguousarray(x), letterbox_labels(scene.segmentation, box, fill=255)


def _patches(x: np.ndarray, k: int, stride: int, n: int, rng: np.random.Generator
             ) -> np.ndarray:
    """`n` random k x k input patches of a same-padded conv on x (1 x C x H x W), as rows
    laid out like the conv's flattened weights (channel, dy, dx)."""
    _, ch, h, w = x.shape
    p = k // 2
    xp = np.pad(x[0], ((0, 0), (p, p), (p, p)))
    ys = rng.integers(0, (h - 1) // stride + 1, n) * stride
    xs = rng.integers(0, (w - 1) // stride + 1, n) * stride
    out = np.empty((n, ch, k, k), np.float32)
    for dy in range(k):
        for dx in range(k):
            out[:, :, dy, dx] = xp[:, ys + dy, xs + dx].T
    return out.reshape(n, -1)


def _normalise(model: onnx.ModelProto, convs: list[str], scenes: int, seed: int = 0) -> dict:
    """Data-dependent init of every hidden conv: what training and batch norm give.

    In topological order, each conv's input is computed on `scenes` synthetic scenes
    (seeds NORM_SEED+, the model's own pre-processing) and random k x k input patches are
    drawn. The conv's weights become a random combination of the centred patches, i.e. a
    Gaussian draw with the patches' covariance C (trained filters respond to the
    structure in their input, not to arbitrary directions); then weights and bias are
    rescaled so that every output channel has zero mean and unit variance on the patches:
    the batch statistics that BN removes, folded into the conv as an export does.
    """
    import onnxruntime as ort

    from edged.tools.evaluate import scene_ids

    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    xs = [x for x, _ in _scene_tensors(scene_ids(scenes, NORM_SEED), size)]
    inits = {i.name: i for i in model.graph.initializer}
    producer = {n.output[0]: n for n in model.graph.node}
    rng = np.random.default_rng(seed + 1)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for name in convs:
        conv = producer[name]
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        k, stride = attrs["kernel_shape"][0], attrs["strides"][0]
        wi, bi = (inits[i] for i in conv.input[1:3])
        w = numpy_helper.to_array(wi).astype(np.float64)
        cout, fan_in = w.shape[0], w[0].size
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        src = conv.input[0]
        if src == "InputLayer":
            ins = xs
        else:
            probe.graph.output.append(onnx.ValueInfoProto(name=src))
            sess = ort.InferenceSession(probe.SerializeToString(), so,
                                        providers=["CPUExecutionProvider"])
            ins = [sess.run([src], {"InputLayer": x})[0] for x in xs]
        per = max(1024, 2 * fan_in // len(ins))
        pat = np.concatenate([_patches(x, k, stride, per, rng) for x in ins])
        mu = pat.mean(0, dtype=np.float64)
        pat -= mu.astype(np.float32)
        # each filter a random combination of centred input patches: a Gaussian draw
        # with the patches' covariance C (w ~ N(0, C), i.e. C^0.5 z, not N(0, I))
        z = rng.standard_normal((cout, len(pat))).astype(np.float32)
        w = (z @ pat).astype(np.float64) / np.sqrt(len(pat))
        sd = (pat @ w.T.astype(np.float32)).std(0, dtype=np.float64) + 1e-12
        w /= sd[:, None]
        b = -w @ mu
        wi.CopyFrom(numpy_helper.from_array(w.reshape(wi.dims).astype(np.float32), wi.name))
        bi.CopyFrom(numpy_helper.from_array(b.astype(np.float32), bi.name))
    return {"norm_scenes": scenes, "norm_convs": len(convs)}


def _fit_seg_head(model: onnx.ModelProto, logits: str, scenes: int, *, per_class: int = 20_000,
                  ridges: tuple[float, ...] = RIDGES, eval_scenes: int = 8, seed: int = 0
                  ) -> dict:
    """Fit the final 1x1 segmentation conv as a linear probe on the random features.

    The feature map feeding that conv (the last decoder activation) becomes an extra graph
    output; onnxruntime computes it for `scenes` synthetic scenes (training seeds
    FIT_SEED+); `per_class` pixels per class are drawn (class-balanced; letterbox padding
    excluded) and the weights and bias solve ridge regression onto one-hot targets in
    closed form: W = (X'X + ridge*n*I)^-1 X'Y, with X the features and a constant column.
    Writes W and b into the conv's initializers; returns the held-out figures
    (`eval_scenes` scenes from FIT_EVAL_SEED+, never calibration or evaluation seeds).
    """
    import onnxruntime as ort

    from edged.tools.evaluate import SEG_CLASS_NAMES, SegMeter, scene_ids

    producer = {n.output[0]: n for n in model.graph.node}
    conv = producer[logits]
    feat = conv.input[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.ValueInfoProto(name=feat))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    rng = np.random.default_rng(seed)
    # per class: the pixels seen so far and a reservoir of per_class feature rows
    feats: list[list[np.ndarray]] = [[] for _ in range(NUM_CLASSES)]
    for x, lab in _scene_tensors(scene_ids(scenes, FIT_SEED), size):
        f = sess.run([feat], {"InputLayer": x})[0][0]  # C x H x W
        f = f.reshape(f.shape[0], -1).T
        lab = lab.ravel()
        for c in range(NUM_CLASSES):
            idx = np.flatnonzero(lab == c)
            # at most 4x the per-scene share, so no scene dominates a class
            take = min(len(idx), 4 * per_class // max(scenes, 1))
            if take:
                feats[c].append(f[rng.choice(idx, take, replace=False)])
    xs, ys = [], []
    for c in range(NUM_CLASSES):
        fc = np.concatenate(feats[c]) if feats[c] else np.zeros((0, f.shape[1]), np.float32)
        if len(fc) > per_class:
            fc = fc[rng.choice(len(fc), per_class, replace=False)]
        xs.append(fc)
        ys.append(np.full(len(fc), c))
    x = np.concatenate(xs).astype(np.float64)
    y = np.concatenate(ys)
    onehot = np.eye(NUM_CLASSES)[y]
    # standardise for the ridge term (not the constant column); solve per ridge strength
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    held = [(sess.run([feat], {"InputLayer": xin})[0][0], lab)
            for xin, lab in _scene_tensors(scene_ids(eval_scenes, FIT_EVAL_SEED), size)]
    fits = []
    for lam in ridges:
        reg = lam * len(x) * np.eye(z.shape[1])
        reg[-1, -1] = 0.0
        beta = np.linalg.solve(z.T @ z + reg, z.T @ onehot)  # (C+1) x K
        w = (beta[:-1] / sd[:, None]).T  # K x C
        b = beta[-1] - w @ mu
        # held out: the fitted logits' argmax on the letterboxed content pixels
        meter, per_scene = SegMeter(NUM_CLASSES), []
        for f, lab in held:
            pred = np.argmax(np.tensordot(w, f, axes=(1, 0)) + b[:, None, None], 0)
            keep = lab != 255
            meter.add(pred[keep], lab[keep])
            one = SegMeter(NUM_CLASSES)
            one.add(pred[keep], lab[keep])
            per_scene.append(float(np.nanmean(one.iou())))
        se = float(np.std(per_scene, ddof=1) / np.sqrt(len(per_scene))) if len(held) > 1 else 0.0
        fits.append((lam, w, b, meter, float(np.mean(per_scene)), se))
    # one-standard-error rule: the strongest ridge whose held-out mean per-scene mIoU is
    # within one standard error of the best (the usual choice of a regularised model)
    best = max(fits, key=lambda f: f[4])
    lam, w, b, meter, _, _ = max((f for f in fits if f[4] >= best[4] - best[5]),
                                 key=lambda f: f[0])
    train_acc = float(np.mean(np.argmax(x @ w.T + b, 1) == y))
    inits = {i.name: i for i in model.graph.initializer}
    wi, bi = inits[conv.input[1]], inits[conv.input[2]]
    wi.CopyFrom(numpy_helper.from_array(
        w.reshape(NUM_CLASSES, -1, 1, 1).astype(np.float32), wi.name))
    bi.CopyFrom(numpy_helper.from_array(b.astype(np.float32), bi.name))
    ious = meter.iou()
    return {"scenes": scenes, "pixels": len(x), "train_balanced_acc": train_acc,
            "ridge": lam, "ridge_miou": {f[0]: round(f[4], 4) for f in fits},
            "heldout_scenes": eval_scenes, "heldout_miou": float(np.nanmean(ious)),
            "heldout_iou": {n: float(v) for n, v in zip(SEG_CLASS_NAMES, ious)},
            "heldout_pixel_acc": meter.pixel_accuracy()}


def build(path: Path, *, width: float = 1.0, size: int = 416, opset: int = 17, seed: int = 0,
          decoder_width: float | None = None, fit_heads: int = FIT_SCENES,
          normalise: int = NORM_SCENES, report: dict | None = None) -> dict[str, float]:
    """Write the model; returns GFLOPs per part (conv multiply-adds x 2) and the total.

    `width` scales every channel count (1.0: the reference size, ~20 GFLOPs; tests use
    a fraction); `decoder_width` scales the decoder separately (default: 1.25 x `width`).
    `fit_heads`: synthetic scenes for the linear probe of the segmentation head (0: keep
    the random, centred head); its held-out figures go into `report` when given.
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
    if normalise > 0:
        norm = _normalise(model, g.hidden, normalise, seed=seed)
        if report is not None:
            report.update(norm)
    if fit_heads > 0:
        fit = _fit_seg_head(model, logits, fit_heads, seed=seed)
        if report is not None:
            report.update(fit)
        _centre_biases(model, None, (raw32, raw16))
    else:
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
    ap.add_argument("--fit-heads", type=int, default=FIT_SCENES, metavar="N",
                    help="fit the segmentation head as a linear probe on the random features "
                         f"of N synthetic scenes (default {FIT_SCENES})")
    ap.add_argument("--no-fit-heads", dest="fit_heads", action="store_const", const=0,
                    help="keep the purely random (centred) segmentation head")
    ap.add_argument("--norm-scenes", type=int, default=NORM_SCENES, metavar="N",
                    help="normalise every hidden conv on N synthetic scenes (batch-norm "
                         f"statistics, LSUV-style; default {NORM_SCENES}; 0: off)")
    args = ap.parse_args(argv)
    report: dict = {}
    flops = build(args.out, width=args.width, opset=args.opset, seed=args.seed,
                  fit_heads=args.fit_heads, normalise=args.norm_scenes, report=report)
    parts = ", ".join(f"{k} {v:.2f}" for k, v in flops.items() if k != "total")
    print(f"wrote {args.out}: {flops['total']:.2f} GFLOPs at 416x416 ({parts}), "
          f"opset {args.opset}")
    if report:
        ious = ", ".join(f"{k} {v:.3f}" for k, v in report["heldout_iou"].items())
        print(f"segmentation head: linear probe on {report['scenes']} scenes "
              f"({report['pixels']} pixels, class-balanced accuracy "
              f"{report['train_balanced_acc']:.3f}, ridge {report['ridge']:g} of "
              f"{', '.join(f'{k:g}: {v:.3f}' for k, v in report['ridge_miou'].items())}); "
              f"held out ({report['heldout_scenes']} "
              f"scenes, seeds {FIT_EVAL_SEED}+): mIoU {report['heldout_miou']:.3f} ({ious}), "
              f"pixel accuracy {report['heldout_pixel_acc']:.3f}")
    else:
        print("segmentation head: random (--no-fit-heads)")


if __name__ == "__main__":
    main()
