"""Parity with ultralytics itself: real exports (ultralytics' exporter, random but
calibrated weights, see tests/ultralytics_exports.py) served by edged and by
ultralytics' own post-processing (its predictors' `postprocess`, its NMS, its
`process_mask_native`) on the same frames.

Needs ultralytics and the CPU torch wheel, which the default venv does not carry: CI
runs this file in `.venv-refs` (see .ci/run) with EDGED_REQUIRE_ULTRALYTICS=1, so it
cannot skip there.
"""

from __future__ import annotations

import math
import os
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if os.environ.get("EDGED_REQUIRE_ULTRALYTICS") != "1":
    pytest.importorskip("ultralytics")
    pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import ultralytics_exports as ue  # noqa: E402
from ultralytics.models.yolo.detect import DetectionPredictor  # noqa: E402
from ultralytics.models.yolo.segment import SegmentationPredictor  # noqa: E402

from edged.inference.runner import ModelOptions, ModelRunner  # noqa: E402
from edged.results import Frame, instance_extents  # noqa: E402

# (width, height): portrait, landscape, square, odd and tiny frames; between them
# ultralytics upsamples the prototypes x1, x2 and x4 before its resize (checked below)
SIZES = [(810, 1080), (1280, 720), (640, 480), (333, 500), (1000, 1000), (321, 123),
         (720, 1280), (1920, 1080), (123, 321)]

EXPORTS: dict[str, tuple[str, dict[str, Any]]] = {
    "yolov8n-seg": ("yolov8n-seg.yaml", {}),
    "yolov8n-seg-dynamic": ("yolov8n-seg.yaml", {"dynamic": True}),
    "yolo11n-seg": ("yolo11n-seg.yaml", {}),
    "yolo26n-seg-end2end": ("yolo26n-seg.yaml", {"nms": False}),
    "yolov8n": ("yolov8n.yaml", {}),
    "yolo26n-end2end": ("yolo26n.yaml", {"nms": False}),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ultralytics")
    return {name: ue.export(cfg, out, name, **kw) for name, (cfg, kw) in EXPORTS.items()}


def upsample_factor(w: int, h: int, mh: int = ue.IMGSZ // 4, mw: int = ue.IMGSZ // 4) -> int:
    """ultralytics' process_mask_native choice of prototype upsampling for a frame."""
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    return 4 // math.gcd(4, pad | pad // 2)


def test_the_frame_sizes_cover_every_upsampling_ultralytics_does() -> None:
    assert {upsample_factor(w, h) for w, h in SIZES} == {1, 2, 4}


def reference(path: Path, frame: np.ndarray, end2end: bool, segment: bool) -> Any:
    """ultralytics' result for one BGR frame: its letterbox, ONNX Runtime, its predictor's
    post-processing with retina_masks (masks at the frame's size)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # as edged's runner below: the same float sums
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = ue.letterbox_tensor(frame, (ue.IMGSZ, ue.IMGSZ))
    outs = [torch.from_numpy(o) for o in session.run(None, {"images": x.numpy()})]
    cls = SegmentationPredictor if segment else DetectionPredictor
    pred = cls(overrides={"conf": 0.25, "iou": 0.7, "max_det": 300, "retina_masks": True,
                          "imgsz": ue.IMGSZ, "verbose": False,
                          "task": "segment" if segment else "detect"})
    names = {i: str(i) for i in range(80)}
    pred.model = types.SimpleNamespace(names=names, end2end=end2end)
    pred.batch = [["frame.jpg"]]
    return pred.postprocess(outs if segment else outs[0], x, [frame])[0]


def full_masks(dets: Any, w: int, h: int) -> list[np.ndarray]:
    out = []
    for m, (x0, y0, x1, y1) in zip(dets.instance_masks, instance_extents(dets.boxes),
                                   strict=True):
        full = np.zeros((h, w), bool)
        full[y0:y1, x0:x1] = m > 0
        out.append(full)
    return out


@pytest.mark.parametrize("name", list(EXPORTS))
def test_edged_serves_what_ultralytics_computes(exports: dict[str, Path], name: str) -> None:
    path = exports[name]
    segment = "seg" in name
    runner = ModelRunner(ModelOptions(path=path, threads=1))
    assert runner.manifest.format == ("yolo-seg" if segment else "yolo")
    assert runner.manifest.options["layout"] == ("end2end" if "end2end" in name
                                                 else "anchors_last")
    assert (runner.manifest.preprocess.input_w, runner.manifest.preprocess.input_h) == (
        ue.IMGSZ, ue.IMGSZ)  # a dynamic export is served at its metadata imgsz
    photo = ue.asset()
    import cv2

    total = 0
    for w, h in SIZES:
        frame = cv2.resize(photo, (w, h))
        ref = reference(path, frame, "end2end" in name, segment)
        dets = runner.infer(Frame("cam", 0, frame, 0, 0)).detections
        where = f"{name} at {w}x{h}"
        assert len(dets) == len(ref.boxes), where  # the same set, empty-mask rule included
        total += len(dets)
        if not len(dets):
            continue
        ro = np.argsort(-ref.boxes.conf.numpy(), kind="stable")
        eo = np.argsort(-dets.scores, kind="stable")
        np.testing.assert_allclose(dets.boxes[eo], ref.boxes.xyxy.numpy()[ro], atol=0.05,
                                   err_msg=where)
        np.testing.assert_array_equal(dets.class_ids[eo], ref.boxes.cls.numpy()[ro], where)
        np.testing.assert_allclose(dets.scores[eo], ref.boxes.conf.numpy()[ro], atol=1e-5,
                                   err_msg=where)
        if not segment:
            continue
        ref_masks = ref.masks.data.numpy() > 0
        ours = full_masks(dets, w, h)
        ious = []
        for a, b in zip(ro, eo, strict=True):
            inter = np.logical_and(ref_masks[a], ours[b]).sum()
            union = np.logical_or(ref_masks[a], ours[b]).sum()
            ious.append(inter / max(union, 1))
        assert np.mean(ious) >= 0.99, f"{where}: mean mask IoU {np.mean(ious):.4f}"
        assert min(ious) >= 0.95, f"{where}: worst mask IoU {min(ious):.4f}"
    assert total >= 5 * len(SIZES), f"{name}: only {total} detections in all: set-up too weak"


def test_the_end2end_layout_needs_the_metadata_or_the_config_when_shapes_cannot_tell(
        exports: dict[str, Path], tmp_path: Path) -> None:
    """The end-to-end table [1, N, 38] with dynamic N also reads as a one-class YOLOv5
    table; without ultralytics' metadata that is an error that asks, and model.layout
    answers it."""
    import onnx

    src = onnx.load(str(exports["yolo26n-seg-end2end"]))
    src.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "detections"
    del src.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(src, str(bare))
    from edged.inference.runner import ModelError

    with pytest.raises(ModelError, match=r"more than one way.*set model.layout to one of "
                                         r"rows, end2end"):
        ModelRunner(ModelOptions(path=bare, format="yolo-seg", threads=1))
    runner = ModelRunner(ModelOptions(path=bare, format="yolo-seg", layout="end2end",
                                      threads=1))
    assert runner.manifest.options["layout"] == "end2end"


@pytest.fixture(scope="module")
def rtdetr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ue.export_rtdetr(tmp_path_factory.mktemp("rtdetr"), "rtdetr-l", rate=0.004)


def test_rtdetr_is_recognised_by_its_metadata_and_served_like_ultralytics(rtdetr: Path
                                                                          ) -> None:
    """ultralytics' RT-DETR export, [1, 300, 6] = cx cy w h (normalised) score class:
    the same shape as an end-to-end YOLO table, told apart by the head ultralytics
    names in the metadata. Pre-processing (a stretch, no letterbox) is compared on the
    tensors; post-processing on the same model outputs, through RTDETRPredictor's own
    postprocess (random decoder weights give near-tied scores, so two runs of the graph
    on inputs 6e-8 apart may order the top-k differently)."""
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.models.rtdetr import RTDETRPredictor

    runner = ModelRunner(ModelOptions(path=rtdetr, threads=1))
    m = runner.manifest
    assert (m.format, m.options["layout"], m.preprocess.resize) == ("detr", "topk", "stretch")
    assert "the exporter's metadata names a detr head" in runner.format_reason
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(rtdetr), so, providers=["CPUExecutionProvider"])
    total = 0
    for w, h in SIZES:
        frame = cv2.resize(ue.asset(), (w, h))
        img = LetterBox((ue.IMGSZ, ue.IMGSZ), auto=False, scale_fill=True)(image=frame)
        x = torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
        pre = runner._preprocessor(1)
        box = pre(frame, 0)
        np.testing.assert_allclose(pre.tensor, x.numpy(), atol=1e-6)
        outs = session.run(None, {"images": x.numpy()})
        pred = RTDETRPredictor(overrides={"conf": 0.25, "imgsz": ue.IMGSZ, "max_det": 300,
                                          "verbose": False})
        pred.model = types.SimpleNamespace(names={i: str(i) for i in range(80)})
        pred.batch = [["frame.jpg"]]
        ref = pred.postprocess(torch.from_numpy(outs[0]), x, [frame])[0]
        dets = runner.adapter.postprocess(outs, box, w, h).detections
        where = f"rtdetr at {w}x{h}"
        assert len(dets) == len(ref.boxes), where
        total += len(dets)
        np.testing.assert_allclose(dets.boxes, ref.boxes.xyxy.numpy(), atol=0.05,
                                   err_msg=where)
        np.testing.assert_array_equal(dets.class_ids, ref.boxes.cls.numpy(), where)
        np.testing.assert_allclose(dets.scores, ref.boxes.conf.numpy(), atol=1e-6)
    assert total >= 5 * len(SIZES), f"only {total} detections in all: set-up too weak"
