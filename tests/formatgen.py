"""Small ONNX models with each format adapter's exact output layout and planted outputs.

Every output is a constant (plus `0 * max(input)`, so no optimiser folds the graph away
and the model still runs on the real input), except the semantic model, whose class map
follows the input's colours. Each builder returns the model path; the module constants
say what was planted, in model-input pixels, so tests know the answer by construction.

Geometry used throughout: camera 640x480. A 416x416 letterboxed input gives scale 0.65
and pad_y 52 (content 416x312); a 128x128 one scale 0.2, pad_y 16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
               np.dtype(np.uint8): TensorProto.UINT8}


def const_model(path: Path, outputs: list[tuple[str, np.ndarray, list[int | str] | None]], *,
                input_name: str = "images", input_shape: list[int | str] | None = None,
                metadata: dict[str, str] | None = None, opset: int = 17) -> Path:
    """A graph whose outputs are the given arrays; `shape` None: the array's own shape
    (a list with strings declares dynamic axes, as real exports do)."""
    input_shape = input_shape or [1, 3, 416, 416]
    nodes = [
        helper.make_node("ReduceMax", [input_name], ["imax"], keepdims=0),
        helper.make_node("Mul", ["imax", "zero"], ["z"]),
        helper.make_node("Cast", ["z"], ["z_i64"], to=TensorProto.INT64),
    ]
    infos = []
    for name, arr, shape in outputs:
        elem = _NP_TO_ONNX[arr.dtype]
        nodes.append(helper.make_node("Constant", [], [f"{name}_c"],
                                      value=numpy_helper.from_array(arr, f"{name}_c")))
        tie = "z" if elem == TensorProto.FLOAT else "z_i64"
        nodes.append(helper.make_node("Add", [f"{name}_c", tie], [name]))
        infos.append(helper.make_tensor_value_info(name, elem, shape or list(arr.shape)))
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)], infos,
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


# ----------------------------------------------------------------------------- yolo(-seg)

YOLO_NAMES = "{0: 'person', 1: 'robot', 2: 'ball'}"
# anchor index, (cx, cy, w, h) input px, class, score, proto used for its mask
YOLO_PLANTED = [
    (10, (208.0, 208.0, 104.0, 104.0), 1, 0.9, 0),  # robot: mask = left of input x 208
    (11, (210.0, 209.0, 104.0, 104.0), 1, 0.8, 0),  # duplicate robot, NMS removes it
    (20, (100.0, 150.0, 60.0, 80.0), 0, 0.7, 1),  # person: mask = above input y 160
    (30, (300.0, 300.0, 40.0, 40.0), 2, 0.2, 2),  # ball below the 0.25 threshold
]
N_ANCHORS_416 = 52 * 52 + 26 * 26 + 13 * 13  # 3549
N_MASKS = 4


def yolo_protos() -> np.ndarray:
    """[1, 4, 104, 104] logits: proto 0 = +10 left of input x 208 (proto column 52), proto
    1 = +10 above input y 160 (row 40), -10 elsewhere; straight edges, so the bilinear
    zero crossing is exactly the cell edge."""
    p = np.full((1, N_MASKS, 104, 104), -10.0, np.float32)
    p[0, 0, :, :52] = 10.0
    p[0, 1, :40, :] = 10.0
    return p


def yolo_table(layout: str, n_cls: int = 3, masks: int = N_MASKS) -> np.ndarray:
    """The planted detections in the anchors_last [1, 4+C+M, A] or rows [1, A, 5+C+M] layout."""
    anchors = N_ANCHORS_416 if layout == "anchors_last" else 3 * N_ANCHORS_416
    extra = 4 if layout == "anchors_last" else 5
    rows = np.zeros((anchors, extra + n_cls + masks), np.float32)
    for a, box, cls, score, proto in YOLO_PLANTED:
        rows[a, :4] = box
        if layout == "rows":
            rows[a, 4] = 1.0  # objectness 1: class score = the planted score
        rows[a, extra + cls] = score
        if masks:
            rows[a, extra + n_cls + proto] = 1.0
    table = rows[None] if layout == "rows" else rows.T[None]
    return np.ascontiguousarray(table)


def yolo_seg_model(path: Path, layout: str = "anchors_last", names: bool = True,
                   output_names: tuple[str, str] = ("output0", "output1")) -> Path:
    return const_model(path, [(output_names[0], yolo_table(layout), None),
                              (output_names[1], yolo_protos(), None)],
                       metadata={"names": YOLO_NAMES, "task": "segment"} if names else None)


def yolo_det_model(path: Path, layout: str = "rows") -> Path:
    return const_model(path, [("output0", yolo_table(layout, masks=0), None)],
                       metadata={"names": YOLO_NAMES, "task": "detect"})


# ----------------------------------------------------------------------------- semantic

def semantic_model(path: Path, kind: str = "logits") -> Path:
    """416x416 input -> 104x104 map: 4x4 average pool of the input's channels (R, G, B
    after edged's BGR->RGB) plus a constant 4th channel 0.3, so a saturated colour wins
    over it and black (padding) loses to it. `kind` "logits": [1,4,104,104] float;
    "ids": ArgMax as int64 [1,1,104,104]; "ids3": int64 [1,104,104]."""
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[4, 4],
                         strides=[4, 4]),
        helper.make_node("Constant", [], ["const"], value=numpy_helper.from_array(
            np.full((1, 1, 104, 104), 0.3, np.float32), "const")),
        helper.make_node("Concat", ["pooled", "const"], ["logits" if kind == "logits"
                                                         else "l4"], axis=1),
    ]
    if kind == "logits":
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 104, 104])
    else:
        keep = 1 if kind == "ids" else 0
        nodes.append(helper.make_node("ArgMax", ["l4"], ["labels"], axis=1, keepdims=keep))
        out = helper.make_tensor_value_info("labels", TensorProto.INT64,
                                            [1, 1, 104, 104] if keep else [1, 104, 104])
    graph = helper.make_graph(
        nodes, "semantic_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 416, 416])], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"names": "['red', 'green', 'blue', 'dark']"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def binary_model(path: Path, last: str = "Sigmoid", dynamic: bool = False) -> Path:
    """A one-channel float map [1,1,104,104] (4x4 pooled red channel minus 0.5) ending in
    `last`: "Sigmoid" (probabilities), "Conv" (a 1x1 conv: logits), "ArgMax" (class ids
    cast to float) or "Mul" (nothing says what the values are). With `dynamic`, H and W
    are symbolic (a DBNet-style graph)."""
    h, w = ("h", "w") if dynamic else (416, 416)
    oh, ow = ("oh", "ow") if dynamic else (104, 104)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[4, 4],
                         strides=[4, 4]),
        helper.make_node("Slice", ["pooled", "s0", "s1", "ax"], ["red"]),
        helper.make_node("Sub", ["red", "half"], ["centred"]),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"),
             numpy_helper.from_array(np.array([1], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    if last == "Sigmoid":
        nodes.append(helper.make_node("Mul", ["centred", "k"], ["scaled"]))
        nodes.append(helper.make_node("Sigmoid", ["scaled"], ["map"]))
        inits.append(numpy_helper.from_array(np.array(20.0, np.float32), "k"))
    elif last == "Conv":
        nodes.append(helper.make_node("Conv", ["centred", "wt"], ["map"]))
        inits.append(numpy_helper.from_array(np.full((1, 1, 1, 1), 20.0, np.float32), "wt"))
    elif last == "ArgMax":
        nodes += [helper.make_node("Concat", ["zero", "centred"], ["two"], axis=1),
                  helper.make_node("ArgMax", ["two"], ["ids"], axis=1, keepdims=1),
                  helper.make_node("Cast", ["ids"], ["map"], to=TensorProto.FLOAT)]
        nodes.insert(3, helper.make_node("Mul", ["centred", "z"], ["zero"]))
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "z"))
    else:
        nodes.append(helper.make_node("Mul", ["centred", "k"], ["map"]))
        inits.append(numpy_helper.from_array(np.array(20.0, np.float32), "k"))
    graph = helper.make_graph(
        nodes, "binary_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, [1, 1, oh, ow])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def band_frame() -> tuple[np.ndarray, np.ndarray]:
    """A 416x312 BGR frame (letterboxed 1:1 into 416x416, pad_y 52, both multiples of the
    4-pixel pooling) in bands red | green | blue at x 0/128/256, and the 78x104 class map
    the semantic test model must give for it."""
    img = np.zeros((312, 416, 3), np.uint8)
    img[:, :128] = (0, 0, 255)
    img[:, 128:256] = (0, 255, 0)
    img[:, 256:] = (255, 0, 0)
    truth = np.zeros((78, 104), np.uint8)
    truth[:, 32:64] = 1
    truth[:, 64:] = 2
    return img, truth


# ----------------------------------------------------------------------------- yolact

YOLACT_P = 100


def yolact_model(path: Path) -> Path:
    """128x128 input (stretched), P = 100 priors given as a graph output, 2 classes,
    M = 4 coefficients, prototypes [1, 32, 32, 4] channel-last.

    Prior 5: (0.5, 0.5, 0.5, 0.5), loc 0 -> box (32, 32, 96, 96) input px, class 0 (conf
    0.9), mask = proto 0: +10 left of input x 64. Prior 7: (0.25, 0.25, 0.2, 0.2), loc
    (1, 0, 0, ln 1.5 / 0.2) -> centre (0.27, 0.25), size (0.2, 0.3): box (21.76, 12.8,
    47.36, 51.2), class 1 (0.8), mask = proto 1: +10 everywhere (the whole box).
    """
    priors = np.full((YOLACT_P, 4), 0.1, np.float32)
    priors[:, 0] = priors[:, 1] = 0.5
    loc = np.zeros((1, YOLACT_P, 4), np.float32)
    conf = np.zeros((1, YOLACT_P, 3), np.float32)
    conf[0, :, 0] = 1.0  # background everywhere ...
    coef = np.zeros((1, YOLACT_P, 4), np.float32)
    priors[5] = (0.5, 0.5, 0.5, 0.5)
    conf[0, 5] = (0.05, 0.9, 0.05)
    coef[0, 5, 0] = 1.0
    priors[7] = (0.25, 0.25, 0.2, 0.2)
    loc[0, 7] = (1.0, 0.0, 0.0, np.log(1.5) / 0.2)
    conf[0, 7] = (0.1, 0.1, 0.8)
    coef[0, 7, 1] = 1.0
    proto = np.full((1, 32, 32, 4), -10.0, np.float32)
    proto[0, :, :16, 0] = 10.0
    proto[0, :, :, 1] = 10.0
    return const_model(path, [("loc", loc, None), ("conf", conf, None), ("mask", coef, None),
                              ("priors", priors, None), ("proto", proto, None)],
                       input_name="input", input_shape=[1, 3, 128, 128])


# ----------------------------------------------------------------------------- mask r-cnn

MRCNN_BOXES = np.array([[100, 180, 300, 380], [400, 100, 500, 300], [10, 10, 50, 50]],
                       np.float32)
MRCNN_SCORES = np.array([0.95, 0.6, 0.3], np.float32)
MRCNN_LABELS = np.array([1, 3, 2], np.int64)


def roi_masks() -> np.ndarray:
    """[3, 28, 28] probabilities: the first box's left half, the others whole."""
    m = np.ones((3, 28, 28), np.float32)
    m[0, :, 14:] = 0.0
    return m


def mask_rcnn_torchvision_model(path: Path) -> Path:
    """torchvision layout, un-batched dynamic input [3, H, W] (edged feeds 640x640:
    camera 640x480 letterboxed with scale 1, pad_y 80), N = 3 detections, RoI masks."""
    return const_model(path, [
        ("boxes", MRCNN_BOXES, ["N", 4]), ("labels", MRCNN_LABELS, ["N"]),
        ("scores", MRCNN_SCORES, ["N"]), ("masks", roi_masks()[:, None], ["N", 1, 28, 28]),
    ], input_name="image", input_shape=[3, "height", "width"])


def mask_rcnn_mmdeploy_model(path: Path) -> Path:
    """mmdeploy layout, [1, 3, 416, 416] input, masks already pasted at input size:
    the first box's left half (x < 200), the second whole."""
    dets = np.concatenate([MRCNN_BOXES, MRCNN_SCORES[:, None]], axis=1)[None]
    full = np.zeros((1, 3, 416, 416), np.float32)
    full[0, 0, 180:380, 100:200] = 1.0
    full[0, 1, 100:300, 400:416] = 1.0
    full[0, 2, 10:50, 10:50] = 1.0
    boxes = dets.copy()
    boxes[0, 1, 2] = 416  # inside the 416 input
    return const_model(path, [("dets", boxes, None), ("labels", MRCNN_LABELS[None] - 1, None),
                              ("masks", full, None)], input_name="input")


# ----------------------------------------------------------------------------- sparseinst

SPARSE_N = 10


def sparseinst_model(path: Path, with_labels: bool = True) -> Path:
    """128x128 input (camera 640x480: scale 0.2, pad_y 16), masks [1, 10, 32, 32]
    probabilities. Query 2: cells rows 8..19, cols 4..15 -> box (16, 32, 64, 80) input
    px, score 0.9, label 0. Query 7: rows 22..25, cols 20..29 -> (80, 88, 120, 104),
    0.7, label 1. Query 5: score 0.3 (below 0.4)."""
    masks = np.zeros((1, SPARSE_N, 32, 32), np.float32)
    masks[0, 2, 8:20, 4:16] = 1.0
    masks[0, 7, 22:26, 20:30] = 1.0
    masks[0, 5, 0:4, 0:4] = 1.0
    scores = np.full((1, SPARSE_N), 0.05, np.float32)
    scores[0, 2], scores[0, 7], scores[0, 5] = 0.9, 0.7, 0.3
    labels = np.zeros((1, SPARSE_N), np.int64)
    labels[0, 7] = 1
    outs: list[tuple[str, np.ndarray, list[int | str] | None]] = [
        ("masks", masks, None), ("scores", scores, None)]
    if with_labels:
        outs.append(("labels", labels, None))
    return const_model(path, outs, input_name="input", input_shape=[1, 3, 128, 128])


# ----------------------------------------------------------------------------- answers

FRAME_W, FRAME_H = 640, 480


def centre_rect(x_lo: float, x_hi: float, y_lo: float, y_hi: float) -> np.ndarray:
    """Frame-sized 0/1 mask of the pixels whose centre lies in [x_lo, x_hi) x [y_lo, y_hi)."""
    xs = np.arange(FRAME_W) + 0.5
    ys = np.arange(FRAME_H) + 0.5
    return (((ys >= y_lo) & (ys < y_hi))[:, None] & ((xs >= x_lo) & (xs < x_hi))[None, :]
            ).astype(np.uint8)


def block_mask(box_cam: tuple[float, float, float, float], cells: tuple[int, int, int, int],
               to_cells: tuple[float, float, float, float], map_hw: tuple[int, int]
               ) -> np.ndarray:
    """A 0/1 block of a probability map (rows r0..r1-1, cols c0..c1-1 are 1), sampled
    bilinearly at camera pixel centres with threshold 0.5, worked out by hand.

    `to_cells` (ax, bx, ay, by): map cell coordinate = camera coordinate * a + b. With
    dx, dy the distances (in cells) of a pixel centre inside the block from its nearest
    vertical and horizontal edge: along one edge the value is 0.5 + d (in when d > 0);
    within half a cell of two edges only the corner cell is 1 and the value is
    (0.5 + dx)(0.5 + dy). Edges on the map border are never near (the edge value holds).
    """
    r0, r1, c0, c1 = cells
    ax, bx, ay, by = to_cells
    fx = (np.arange(FRAME_W) + 0.5) * ax + bx
    fy = (np.arange(FRAME_H) + 0.5) * ay + by
    far = np.inf
    dx = np.minimum(fx - c0 if c0 > 0 else far, c1 - fx if c1 < map_hw[1] else far)[None, :]
    dy = np.minimum(fy - r0 if r0 > 0 else far, r1 - fy if r1 < map_hw[0] else far)[:, None]
    in_box = centre_rect(*_xxyy(box_cam)).astype(bool)
    value_ok = (dx > 0) & (dy > 0) & ((dx >= 0.5) | (dy >= 0.5)
                                      | ((0.5 + dx) * (0.5 + dy) > 0.5))
    return (in_box & value_ok).astype(np.uint8)


# SparseInst test geometry: camera -> 128 input (scale 0.2, pad_y 16) -> 32x32 cells of 4
SPARSE_TO_CELLS = (0.2 / 4, 0.0, 0.2 / 4, 16 / 4)


def expected(fmt: str) -> dict:
    """What a 640x480 frame must give: camera boxes, class names, scores, frame-sized
    instance masks (None for formats without them), and the class mask's shape."""
    if fmt in ("yolo-seg", "yolo"):
        robot = (156 / 0.65, (156 - 52) / 0.65, 260 / 0.65, (260 - 52) / 0.65)
        person = (70 / 0.65, (110 - 52) / 0.65, 130 / 0.65, (190 - 52) / 0.65)
        inst = None
        if fmt == "yolo-seg":
            # robot: left of input x 208; person: above input y 160
            inst = [centre_rect(robot[0], 208 / 0.65, robot[1], robot[3]),
                    centre_rect(person[0], person[2], person[1], (160 - 52) / 0.65)]
        return {"boxes": [robot, person], "labels": ["robot", "person"], "scores": [0.9, 0.7],
                "ids": [1, 0], "instances": inst, "mask_shape": (312, 416)}
    if fmt == "yolact":
        sx, sy = 128 / 640, 128 / 480  # stretched
        b1 = (32 / sx, 32 / sy, 96 / sx, 96 / sy)
        b2 = (0.17 * 128 / sx, 0.1 * 128 / sy, 0.37 * 128 / sx, 0.4 * 128 / sy)
        return {"boxes": [b1, b2], "labels": ["class0", "class1"], "scores": [0.9, 0.8],
                "ids": [0, 1], "instances": [centre_rect(b1[0], 64 / sx, b1[1], b1[3]),
                                             centre_rect(*_xxyy(b2))],
                "mask_shape": (128, 128)}
    if fmt == "mask-rcnn":
        # torchvision: 640x640 input, scale 1, pad_y 80
        b1, b2 = (100, 100, 300, 300), (400, 20, 500, 220)
        return {"boxes": [b1, b2], "labels": ["person", "car"], "scores": [0.95, 0.6],
                "ids": [1, 3], "instances": [centre_rect(100, 200, 100, 300),
                                             centre_rect(*_xxyy(b2))],
                "mask_shape": (480, 640)}
    if fmt == "sparseinst":
        b1, b2 = (80, 80, 320, 320), (400, 360, 600, 440)
        return {"boxes": [b1, b2], "labels": ["ball", "robot"], "scores": [0.9, 0.7],
                "ids": [0, 1],
                "instances": [block_mask(b1, (8, 20, 4, 16), SPARSE_TO_CELLS, (32, 32)),
                              block_mask(b2, (22, 26, 20, 30), SPARSE_TO_CELLS, (32, 32))],
                "mask_shape": (96, 128)}
    raise KeyError(fmt)


def _xxyy(b: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return b[0], b[2], b[1], b[3]


def expected_class_mask(instances: list[np.ndarray], ids: list[int], scores: list[float],
                        shape: tuple[int, int]) -> np.ndarray:
    """The painted class mask: each cell takes the camera pixel under its centre
    (floor((2i + 1) * frame / (2 * cells))), class id + 1, the best score on top."""
    mh, mw = shape
    rows = (2 * np.arange(mh) + 1) * FRAME_H // (2 * mh)
    cols = (2 * np.arange(mw) + 1) * FRAME_W // (2 * mw)
    out = np.zeros(shape, np.uint8)
    for i in np.argsort(scores):
        sub = instances[i][rows][:, cols].astype(bool)
        out[sub] = ids[i] + 1
    return out
