"""The model runner on real ONNX Runtime sessions: formats, mapping back, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from modelgen import PLANTED_ROWS, expected_camera_boxes, painted_frame, yoeo_model
from onnx import TensorProto, helper

from edged.inference.manifest import Manifest, load_manifest, manifest_path
from edged.inference.runner import ModelError, ModelOptions, ModelRunner
from edged.results import Frame


def frame(img: np.ndarray, seq: int = 0) -> Frame:
    return Frame("cam", seq, img, 123, 456)


@pytest.mark.parametrize("mask", ["uint8", "float", "logits"])
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (416, 416), (1280, 720)])
def test_yoeo_boxes_and_mask_in_camera_pixels(tmp_path, mask, size):
    model = yoeo_model(tmp_path / f"m-{mask}.onnx", mask=mask)
    runner = ModelRunner(ModelOptions(path=model, threads=1))
    assert runner.manifest.format == "yoeo"
    w, h = size
    img, truth = painted_frame(w, h)
    res = runner.infer(frame(img))
    assert (res.frame_w, res.frame_h) == (w, h)
    assert res.t_capture_wall_ns == 123 and res.t_capture_mono_ns == 456
    got = res.mask_camera()
    assert got.shape == (h, w)
    assert (got == truth).mean() > 0.99
    names = [res.class_names[c] for c in res.detections.class_ids]
    assert sorted(names) == ["ball", "goalpost", "robot"]
    exp = expected_camera_boxes(w, h)
    for name, box in zip(names, res.detections.boxes):
        np.testing.assert_allclose(box, exp[name], atol=0.05)
    assert set(res.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_thresholds_and_groups_from_options(tmp_path):
    rows = np.array([
        [100, 100, 50, 50, 0.9, 0.1, 0.1, 0.9],   # robot 0.81
        [102, 101, 50, 50, 0.9, 0.1, 0.85, 0.1],  # goalpost 0.765 on top of it
        [300, 300, 20, 20, 0.6, 0.7, 0.1, 0.1],   # ball 0.42
    ], np.float32)
    model = yoeo_model(tmp_path / "m.onnx", rows=rows)
    img = np.zeros((416, 416, 3), np.uint8)
    # default conf 0.5: the ball (0.42) is cut; robot and goalpost are different classes
    r = ModelRunner(ModelOptions(path=model, threads=1)).infer(frame(img))
    assert sorted(r.detections.class_ids.tolist()) == [1, 2]
    # lower threshold keeps the ball; grouping goalpost+robot makes NMS merge them
    r = ModelRunner(ModelOptions(path=model, threads=1, conf_threshold=0.4,
                                 class_groups=(("goalpost", "robot"),))).infer(frame(img))
    assert sorted(r.detections.class_ids.tolist()) == [0, 2]
    r = ModelRunner(ModelOptions(path=model, threads=1, conf_threshold=0.4,
                                 max_detections=1)).infer(frame(img))
    assert r.detections.class_ids.tolist() == [2]


def test_multi_label_rows(tmp_path):
    rows = np.array([[200, 200, 60, 60, 0.95, 0.9, 0.0, 0.9]], np.float32)
    model = yoeo_model(tmp_path / "m.onnx", rows=rows)
    r = ModelRunner(ModelOptions(path=model, threads=1)).infer(
        frame(np.zeros((416, 416, 3), np.uint8)))
    assert sorted(r.detections.class_ids.tolist()) == [0, 2]


def test_manifest_decides_names_and_preprocessing(tmp_path):
    model = yoeo_model(tmp_path / "m.onnx", det_name="dets", seg_name="seg", input_name="images")
    m = Manifest(format="yoeo", name="custom", input_name="images",
                 outputs={"detections": "dets", "segmentation": "seg"},
                 classes=("a", "b", "c"), seg_classes=("x", "y", "z"), conf_threshold=0.75)
    manifest_path(model).write_text(m.to_json())
    assert load_manifest(manifest_path(model)) == m
    runner = ModelRunner(ModelOptions(path=model, threads=1))
    assert runner.model_id == "custom" and runner.format_reason == "manifest m.json"
    r = runner.infer(frame(painted_frame()[0]))
    # conf 0.75 from the manifest drops the goalpost (0.72)
    assert sorted(r.class_names[c] for c in r.detections.class_ids) == ["a", "c"]
    assert r.mask_classes == ("x", "y", "z")


def test_unknown_graph_names_its_outputs(tmp_path):
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "odd.onnx"
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    with pytest.raises(ModelError,
                       match=r"no known model format fits.*outputs: y float32\[1, 3, 8, 8\]"):
        ModelRunner(ModelOptions(path=path))


def test_missing_and_corrupt_models(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        ModelRunner(ModelOptions(path=tmp_path / "none.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="cannot load model"):
        ModelRunner(ModelOptions(path=bad))


def test_missing_provider_falls_back_to_cpu(tmp_path, caplog):
    model = yoeo_model(tmp_path / "m.onnx")
    runner = ModelRunner(ModelOptions(path=model, providers=(("tensorrt", {}), ("cuda", {}),
                                                             ("cpu", {}))))
    assert runner.providers == ["CPUExecutionProvider"]
    assert "provider(s) tensorrt, cuda not available in this onnxruntime build" in caplog.text


def test_planted_rows_are_what_the_test_model_outputs(tmp_path):
    runner = ModelRunner(ModelOptions(path=yoeo_model(tmp_path / "m.onnx"), threads=1))
    out = runner.run_tensor(np.zeros((1, 3, 416, 416), np.float32))
    np.testing.assert_array_equal(out[0][0, :len(PLANTED_ROWS)], PLANTED_ROWS)


def test_time_interleaved_takes_turns_on_each_runners_own_inputs(tmp_path):
    """Two real sessions of very different cost, each fed its own input size in rotation:
    every run is timed, and the expensive model measures slower in the same runs."""
    from pathlib import Path

    from edged.inference.runner import time_interleaved

    demo = Path(__file__).resolve().parents[2] / "models" / "yoeo-demo-fp32.onnx"
    tiny = ModelRunner(ModelOptions(path=yoeo_model(tmp_path / "tiny.onnx", size=320),
                                    threads=1))
    big = ModelRunner(ModelOptions(path=demo, threads=1))
    inputs = [[np.zeros(r.inputs[0].shape, np.float32) + v for v in (0.0, 0.5)]
              for r in (tiny, big)]
    times = time_interleaved([tiny, big], inputs, runs=6, warmup=1)
    assert [i[0].shape[-1] for i in inputs] == [320, 416]
    assert [len(t) for t in times] == [6, 6]
    assert all(t > 0 for ts in times for t in ts)
    assert np.median(times[1]) > 3 * np.median(times[0])
