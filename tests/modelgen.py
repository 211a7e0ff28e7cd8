"""Small ONNX models with the YOEO contract and outputs known by construction.

- `Detections` [1, N, 8]: constant rows, so a test knows exactly which boxes exist (in
  input pixels) and what edged must publish after NMS and mapping to camera pixels.
- `Segmentations`: the argmax over the input's colour channels (R=0, G=1, B=2 after
  edged's BGR->RGB), so a test paints a frame and knows the mask pixel for pixel.
  Variants give it as uint8 [1,H,W], float32 [1,H,W] or logits [1,3,H,W].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# rows: cx, cy, w, h, objectness, ball, goalpost, robot (input pixels, 416x416)
PLANTED_ROWS = np.array([
    [208.0, 208.0, 104.0, 52.0, 0.9, 0.95, 0.1, 0.1],  # ball 0.855
    [210.0, 209.0, 100.0, 50.0, 0.8, 0.90, 0.1, 0.1],  # duplicate ball, NMS removes it
    [100.0, 150.0, 40.0, 80.0, 0.9, 0.05, 0.8, 0.1],  # goalpost 0.72
    [300.0, 250.0, 60.0, 120.0, 0.3, 0.1, 0.1, 0.99],  # objectness too low
    [320.0, 120.0, 50.0, 60.0, 0.95, 0.1, 0.1, 0.9],  # robot 0.855
], np.float32)


def yoeo_model(path: Path, *, size: int = 416, mask: str = "uint8", rows: np.ndarray | None = None,
               opset: int = 17, det_name: str = "Detections", seg_name: str = "Segmentations",
               input_name: str = "InputLayer", pad_rows: int = 64,
               batch: int | str = 1, convs: bool = False, channels: int = 3) -> Path:
    """`batch`: the batch dimension; a name (e.g. "N") makes it dynamic, and the
    detections are then one copy of the planted rows per image. `convs`: two real
    convolutions (about 5 ms a frame on one core) feed the detections, so frames queue
    up behind a run as they do behind a real network. `channels`: the input's channels
    (edged feeds 3: another number makes a graph that loads but cannot run a frame)."""
    rows = PLANTED_ROWS if rows is None else rows
    # pad with empty rows, like a real head with many anchors
    table = np.zeros((1, len(rows) + pad_rows, rows.shape[1]), np.float32)
    table[0, :len(rows)] = rows
    rng = np.random.default_rng(2)
    feat = input_name
    conv_inits = []
    nodes = []
    if convs:
        for i, (cin, cout, stride) in enumerate(((channels, 16, 1), (16, 16, 2))):
            wname = f"conv{i}_w"
            conv_inits.append(numpy_helper.from_array(
                (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32), wname))
            nodes.append(helper.make_node("Conv", [feat, wname], [f"conv{i}"], pads=[1] * 4,
                                          strides=[stride] * 2))
            feat = f"conv{i}"
    nodes += [
        helper.make_node("Constant", [], ["rows"], value=numpy_helper.from_array(table, "rows")),
        # tie the detections to the input so no optimiser treats the graph as constant
        helper.make_node("ReduceMax", [feat], ["imax"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Reshape", ["imax", "col"], ["imax3"]),  # [batch, 1, 1]
        helper.make_node("Mul", ["imax3", "zero"], ["z"]),
        helper.make_node("Add", ["rows", "z"], [det_name]),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "col"), *conv_inits]
    if mask == "logits":
        nodes.append(helper.make_node("Identity", [input_name], [seg_name]))
        seg_type, seg_shape = TensorProto.FLOAT, [batch, channels, size, size]
    else:
        nodes.append(helper.make_node("ArgMax", [input_name], ["am"], axis=1, keepdims=0))
        to = TensorProto.UINT8 if mask == "uint8" else TensorProto.FLOAT
        nodes.append(helper.make_node("Cast", ["am"], [seg_name], to=to))
        seg_type, seg_shape = to, [batch, size, size]
    graph = helper.make_graph(
        nodes, "yoeo_test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       [batch, channels, size, size])],
        [helper.make_tensor_value_info(det_name, TensorProto.FLOAT, [batch, *table.shape[1:]]),
         helper.make_tensor_value_info(seg_name, seg_type, seg_shape)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def expected_camera_boxes(frame_w: int, frame_h: int, size: int = 416) -> dict[str, np.ndarray]:
    """Where the planted ball / goalpost / robot must land in camera pixels."""
    r = min(size / frame_w, size / frame_h)
    cw, ch = round(frame_w * r), round(frame_h * r)
    px, py = (size - cw) // 2, (size - ch) // 2
    sx, sy = cw / frame_w, ch / frame_h
    out = {}
    for name, row in (("ball", PLANTED_ROWS[0]), ("goalpost", PLANTED_ROWS[2]),
                      ("robot", PLANTED_ROWS[4])):
        cx, cy, w, h = row[:4]
        box = np.array([(cx - w / 2 - px) / sx, (cy - h / 2 - py) / sy,
                        (cx + w / 2 - px) / sx, (cy + h / 2 - py) / sy])
        out[name] = np.clip(box, 0, [frame_w, frame_h, frame_w, frame_h])
    return out


def painted_frame(w: int = 640, h: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """A BGR frame in three vertical bands and the class mask the test models give for it.

    Left third red (class 0), middle green (1), right blue (2); bands are wide so that
    resizing never blurs a pixel across a class boundary more than one pixel.
    """
    img = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    a, b = w // 3, 2 * w // 3
    img[:, :a] = (0, 0, 200)
    img[:, a:b] = (0, 200, 0)
    mask[:, a:b] = 1
    img[:, b:] = (200, 0, 0)
    mask[:, b:] = 2
    return img, mask


def slow_yoeo_model(path: Path, matmuls: int = 6, size: int = 512) -> Path:
    """A YOEO-contract model whose inference costs a chain of `size`^3 MatMuls.

    The work depends on the input (so nothing is constant-folded), which makes the
    model the bottleneck of a pipeline, as a real network is.
    """
    rng = np.random.default_rng(0)
    table = np.zeros((1, len(PLANTED_ROWS) + 8, 8), np.float32)
    table[0, :len(PLANTED_ROWS)] = PLANTED_ROWS
    w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["rows"], value=numpy_helper.from_array(table, "rows")),
        helper.make_node("ReduceMean", ["InputLayer"], ["m"], keepdims=0),
        helper.make_node("Mul", ["w", "m"], ["z0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"z{i}", "w"], [f"z{i + 1}"]))
    nodes += [
        helper.make_node("ReduceMax", [f"z{matmuls}"], ["zmax"], keepdims=0),
        helper.make_node("Mul", ["zmax", "zero"], ["zz"]),
        helper.make_node("Add", ["rows", "zz"], ["Detections"]),
        helper.make_node("ArgMax", ["InputLayer"], ["am"], axis=1, keepdims=0),
        helper.make_node("Cast", ["am"], ["Segmentations"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "yoeo_slow",
        [helper.make_tensor_value_info("InputLayer", TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("Detections", TensorProto.FLOAT, list(table.shape)),
         helper.make_tensor_value_info("Segmentations", TensorProto.UINT8, [1, 416, 416])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.0, np.float32),
                                                                   "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def stalling_yoeo_model(path: Path, bright: float = 0.6, iterations: int = 8000,
                        size: int = 256) -> Path:
    """A YOEO-contract model that is quick on ordinary frames and takes seconds on a
    near-white one (mean input above `bright`, letterbox padding included): a `Loop`
    whose trip count comes from the image runs `iterations` `size`^3 MatMuls. A
    stand-in for a wedged inference."""
    rng = np.random.default_rng(1)
    table = np.zeros((1, len(PLANTED_ROWS) + 8, 8), np.float32)
    table[0, :len(PLANTED_ROWS)] = PLANTED_ROWS
    w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["z_in", "w"], ["z_out"])],
        "spin",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("z_in", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("z_out", TensorProto.FLOAT, [size, size])])
    nodes = [
        helper.make_node("Constant", [], ["rows"], value=numpy_helper.from_array(table, "rows")),
        helper.make_node("ReduceMean", ["InputLayer"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "bright"], ["is_bright"]),
        helper.make_node("Cast", ["is_bright"], ["b64"], to=TensorProto.INT64),
        helper.make_node("Mul", ["b64", "iters"], ["trips"]),
        helper.make_node("Mul", ["w", "m"], ["z0"]),
        helper.make_node("Loop", ["trips", "true", "z0"], ["zn"], body=body),
        helper.make_node("ReduceMax", ["zn"], ["zmax"], keepdims=0),
        helper.make_node("Mul", ["zmax", "zero"], ["zz"]),
        helper.make_node("Add", ["rows", "zz"], ["Detections"]),
        helper.make_node("ArgMax", ["InputLayer"], ["am"], axis=1, keepdims=0),
        helper.make_node("Cast", ["am"], ["Segmentations"], to=TensorProto.UINT8),
    ]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(bright, np.float32), "bright"),
             numpy_helper.from_array(np.array(iterations, np.int64), "iters"),
             numpy_helper.from_array(np.array(True), "true")]
    graph = helper.make_graph(
        nodes, "yoeo_stalling",
        [helper.make_tensor_value_info("InputLayer", TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("Detections", TensorProto.FLOAT, list(table.shape)),
         helper.make_tensor_value_info("Segmentations", TensorProto.UINT8, [1, 416, 416])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
