"""`edged quantize` end to end on a small YOEO-layout conv model (real calibration, real
int8 sessions, real video and image files), its gate, its manifest and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from edged.cli import main
from edged.inference.manifest import load_manifest
from edged.inference.runner import ModelOptions, ModelRunner
from edged.results import Frame
from edged.synth import render
from edged.tools.quantize.graph import decision_convs, default_keep_float, input_convs
from edged.training.refmodel import build

REPO = Path(__file__).resolve().parents[2]
# a lenient gate: a random-weight model with 4-16 channels per layer has too little
# signal for int8 to match fp32 masks at 98% (the gate itself is tested with a strict one,
# real accuracy on the trained demo model in docs/benchmarks.md)
QUICK = ["--count", "8", "--holdout", "4", "--runs", "3", "--search", "quick",
         "--min-agreement", "0.5", "--max-miou-drop", "0.5"]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference layout at 1/8 of the channels: ~0.35 GFLOPs, a few ms a run."""
    path = tmp_path_factory.mktemp("qmodels") / "small-fp32.onnx"
    build(path, width=0.125)
    return path


def scene_images(n: int, w: int = 320, h: int = 240) -> list[np.ndarray]:
    return [render(50 + i // 4, (i % 4) * 97, w, h).image for i in range(n)]


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def check_output(out: Path, calib_frames: int, source_word: str) -> dict:
    assert out.is_file()
    m = load_manifest(out.with_suffix(".json"))
    q = m.quantization
    assert m.name == out.stem and m.extra["precision"] == "int8"
    assert q["format"] == "QDQ" and q["per_channel"] is True
    assert (q["activations"], q["weights"]) in {("U8", "S8"), ("S8", "S8"), ("U8", "U8")}
    assert q["method"] in {"MinMax", "Percentile"}
    assert q["calibration"]["frames"] == calib_frames
    assert source_word in q["calibration"]["source"]
    a = q["agreement"]
    assert 0.5 <= a["pixel_agreement"] <= 1.0
    assert 0.0 <= a["miou_vs_fp32"] <= 1.0
    assert q["speedup"] > 0 and q["ms_p50"]["int8"] > 0 and q["ms_p50"]["threads"] == 1
    # the CPU class the gate passed on, so a run elsewhere can warn
    from edged.inference.cpu import detect

    assert q["validated_on"] == detect().to_json()
    # the head convolutions and the decode tail stayed float, by name; the segmentation
    # conv too, unless the refinement that makes it int8 won
    assert {"conv_76", "conv_97", "argmax_220"} <= set(q["kept_float"])
    assert ("conv_219" in q["kept_float"]) == ("mask conv int8" not in q["variant"])
    assert ("conv_3" in q["kept_float"]) == ("input conv float" in q["variant"])
    no_nhwc = q["variant"].endswith("no NHWC")
    assert m.session == ({"disabled_optimizers": ["NhwcTransformer"]} if no_nhwc else {})
    # the int8 model runs in edged's runner and gives a mask and YOEO rows
    runner = ModelRunner(ModelOptions(path=out, threads=1))
    assert runner.model_id == out.stem
    assert runner.disabled_optimizers == (("NhwcTransformer",) if no_nhwc else ())
    r = runner.infer(Frame("t", 0, render(7, 3, 320, 240).image, 0, 0))
    assert r.mask_camera().shape == (240, 320)
    qdq = [n for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear"]
    assert len(qdq) > 10
    return q


def test_video_calibration_through_the_cli(small_model, tmp_path):
    video = write_video(tmp_path / "cal.avi", scene_images(16))
    out = tmp_path / "small-int8.onnx"
    r = subprocess.run([sys.executable, "-m", "edged", "quantize", str(small_model), "-o",
                        str(out), "--frames", str(video), *QUICK],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:6] == ["candidate", "act/wgt", "method", "variant", "ms", "p50"]
    assert lines[2].startswith("fp32 ") and "reference" in lines[2]
    rows = [ln for ln in lines if ln.startswith("int8 #")]
    # the search this machine's CPU class gets (7-bit weights too where U8S8 saturates)
    from edged.inference.cpu import detect
    from edged.tools.quantize.choices import search_for

    searched = search_for("quick", detect().int8_class)
    n = len(searched)
    assert len(rows) == n + 3 and sum("*" in ln for ln in rows) == 1
    found = [re.search(r"(U8S8|S8S8|U8S7|U8U8)\s+(\w+)\s+(.+?)\s{2,}[\d.]+\s", ln) for ln in rows]
    assert all(found), rows
    cands = [f.groups() for f in found if f]
    # the search, then the fastest refined: mask conv int8, input conv float, then
    # without NhwcTransformer; each step builds on the better of the step and its parent
    assert cands[:n] == [(t, m, "out convs float") for t, m in searched]
    assert cands[:3] == [("U8S8", "MinMax", "out convs float"), ("S8S8", "MinMax",
                         "out convs float"), ("U8S8", "Percentile", "out convs float")]
    assert cands[n][2] == "mask conv int8" and cands[n][:2] in [c[:2] for c in cands[:n]]
    assert cands[n + 1][2] in ("mask conv int8, input conv float", "input conv float")
    assert cands[n + 2][2] in {v + ", no NHWC" for v in (
        "mask conv int8", "input conv float", "mask conv int8, input conv float")} | {
        "no NHWC"}
    # refinements are timed against their parent in the same runs: a ratio in the row
    assert all(re.search(r"\dx\s+\d\.\d\dx\s", ln) for ln in rows[n:]), rows
    # each row's speed-up is its own fp32 time (printed beside it) over its ms
    for ln in rows:
        t = re.search(r"\s(\d+\.\d)\s+(\d+\.\d)\s+(\d+\.\d\d)x\s", ln)
        assert t, ln
        ms, fp32_ms, sp = (float(v) for v in t.groups())
        assert abs(sp - fp32_ms / ms) <= sp * (0.05 / ms + 0.05 / fp32_ms) + 0.006, ln
    assert "calibration: 8 frames, held out: 4 frames (video " in r.stdout
    assert f"wrote {out}" in r.stdout
    # not a terminal: plain progress lines on stderr, none on stdout
    assert "calibrating MinMax (8 frames): 8/8" in r.stderr
    assert "calibrating" not in r.stdout
    check_output(out, 8, "video")


def test_image_folder(small_model, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(scene_images(12)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(small_model), "-o", str(out), "--frames", str(folder),
                 *QUICK]) == 0
    assert "calibration: 8 frames, held out: 4 frames (12 images from" in capsys.readouterr().out
    check_output(out, 8, "images")


def test_config_cameras(small_model, tmp_path, capsys):
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(f"model:\n  path: {small_model}\ncameras:\n  front:\n    source: synthetic\n"
                   "    width: 320\n    height: 240\n    seed: 3\n")
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(small_model), "-o", str(out), "-c", str(cfg), *QUICK]) == 0
    assert "cameras front (synthetic)" in capsys.readouterr().out
    check_output(out, 8, "cameras front")


def test_gate_that_cannot_pass_exits_3_with_the_table(small_model, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(small_model), "-o", str(out), *QUICK,
                 "--min-agreement", "1.01"])
    cap = capsys.readouterr()
    assert code == 3
    # the quick search's candidates for this CPU (3, and their 7-bit and unsigned twins
    # where U8S8 saturates), then the closest again with its 2, 4 and 8 most sensitive
    # activations float (tried only because nothing passed)
    from edged.inference.cpu import detect
    from edged.tools.quantize.choices import search_for

    tried = len(search_for("quick", detect().int8_class))
    assert cap.out.count("FAIL (agreement") == tried + 3 and "fp32 " in cap.out
    assert [f"{k} sensitive float" in cap.out for k in (2, 4, 8)] == [True] * 3
    assert "< 101%" in cap.out
    assert "nothing written" in cap.out
    assert "no candidate meets the accuracy gate (pixel agreement >= 101%" in cap.err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_synthetic_default_has_ground_truth_columns(small_model, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(small_model), "-o", str(out), *QUICK]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[-3:] == ["mIoU", "mAP50", "gate"]
    q = check_output(out, 8, "synthetic")
    # random weights: ground-truth accuracy is low but measured, for fp32 and int8 alike
    assert 0.0 <= q["fp32_truth"]["miou"] <= 1.0 and "miou" in q["agreement"]


def test_opset11_model_is_upgraded(tmp_path, capsys, monkeypatch):
    src = tmp_path / "old.onnx"
    build(src, width=0.125, opset=11)
    assert onnx.load(str(src)).opset_import[0].version == 11
    out = tmp_path / "old-int8.onnx"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["quantize", str(src), "-o", str(out), *QUICK]) == 0
    assert list(cwd.iterdir()) == []  # no scratch files left where the user ran it
    assert "opset 11 upgraded to 13 for per-channel int8" in capsys.readouterr().out
    q = onnx.load(str(out))
    assert next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert json.loads(out.with_suffix(".json").read_text())["quantization"][
        "opset_upgraded_from"] == 11
    ModelRunner(ModelOptions(path=out, threads=1)).run_tensor(
        np.zeros((1, 3, 416, 416), np.float32))


def test_errors_are_clear(small_model, tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "q.onnx")]) == 1
    assert "model file not found" in capsys.readouterr().err
    assert main(["quantize", str(small_model), "-o", str(small_model)]) == 1
    assert "would overwrite the input model" in capsys.readouterr().err
    assert main(["quantize", str(small_model), "-o", str(tmp_path / "q.onnx"),
                 "--frames", str(tmp_path / "missing.avi")]) == 1
    assert "no such folder or video file" in capsys.readouterr().err
    assert main(["quantize", str(small_model), "-o", str(tmp_path / "q.onnx"), *QUICK,
                 "--keep-float", "convv_219"]) == 1
    assert "no such node(s) in the prepared graph: 'convv_219' (did you mean 'conv_219'" in \
        capsys.readouterr().err


def test_keep_float_defaults(small_model):
    model = onnx.load(str(small_model))
    keep = default_keep_float(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    # the two head convolutions and the segmentation logits conv, nothing deeper
    assert sorted(k for k in keep if ops[k] == "Conv") == ["conv_219", "conv_76", "conv_97"]
    assert {"ArgMax", "Cast", "Sigmoid", "Exp", "Concat"} <= {ops[k] for k in keep}
    assert not any(ops[k] in ("LeakyRelu", "MaxPool", "Resize") for k in keep)
    assert [ops[k] for k in default_keep_float(model, final_convs=False)].count("Conv") == 0
    # only the segmentation conv feeds nothing but an argmax: the refinement's int8 layer
    assert decision_convs(model) == ["conv_219"]
    # the conv reading the 3-channel image: the refinement's float layer
    assert input_convs(model) == ["conv_3"]


def test_decision_convs_of_the_demo_export():
    """The demo's mask is a running maximum over class planes, not an ArgMax: still only
    the segmentation conv qualifies; the detection heads feed scores and boxes."""
    model = onnx.load(str(REPO / "models" / "yoeo-demo-fp32.onnx"))
    ops = {n.name: n.op_type for n in model.graph.node}
    assert {ops[n] for n in ops if n not in default_keep_float(model)} >= {"Conv", "Resize"}
    convs = decision_convs(model)
    assert len(convs) == 1 and "seg" in convs[0] and ops[convs[0]] == "Conv"


def test_decision_convs_look_through_computed_shapes():
    """With a dynamic batch a mask's Reshape takes a computed shape (Shape, Gather,
    Concat): not values, so the conv before it still only feeds a decision; a conv whose
    values reach an output (the Sigmoid) does not."""
    from onnx import TensorProto, helper

    def conv(name: str, x: str, y: str) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, "w"], [y], name=name, kernel_shape=[1, 1])

    nodes = [conv("seg", "x", "logits"), conv("det", "x", "raw"),
             helper.make_node("Shape", ["logits"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather"),
             helper.make_node("Concat", ["batch", "rest"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["logits", "target"], ["flat"], name="reshape"),
             helper.make_node("ArgMax", ["flat"], ["mask"], name="argmax", axis=1),
             helper.make_node("Sigmoid", ["raw"], ["scores"], name="sigmoid")]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", f, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("mask", TensorProto.INT64, None),
         helper.make_tensor_value_info("scores", f, None)],
        initializer=[helper.make_tensor("w", f, [4, 4, 1, 1], [0.1] * 16),
                     helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                     helper.make_tensor("rest", TensorProto.INT64, [2], [4, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert decision_convs(model) == ["seg"]


def test_without_onnx_quantize_exits_2_and_run_never_imports_it():
    code = ("import sys; sys.modules['onnx'] = None; from edged.cli import main; "
            "sys.exit(main(['quantize', 'm.onnx', '-o', 'q.onnx']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip() == ("edged quantize: the onnx package is missing: "
                                "pip install 'edged[quantize]'")
    code = ("import sys; import edged.cli, edged.inference.runner, edged.daemon.pipeline, "
            "edged.config; "
            "print('onnx' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.stdout.strip() == "False", r.stderr


def test_gate_judges_masks_and_detections():
    from edged.tools.quantize.candidate import Candidate
    from edged.tools.quantize.gate import Gate
    from edged.tools.quantize.search import _judge

    def judge(**metrics: float | None) -> Candidate:
        c = Candidate("U8S8", "MinMax", metrics=dict(metrics))
        _judge(c, Gate(), None)
        return c

    assert judge(pixel_agreement=0.999, miou_vs_fp32=0.995, det_agreement=0.98).passed
    # masks fine, boxes moved (e.g. the box decode quantized): fails, and says why
    c = judge(pixel_agreement=0.999, miou_vs_fp32=0.995, det_agreement=0.73)
    assert not c.passed and c.why == "detection agreement 0.730 < 0.9"
    c = judge(pixel_agreement=0.90, miou_vs_fp32=0.95, det_agreement=None)
    assert not c.passed and c.why == "agreement 90.00% < 98%; mIoU drop 5.00 > 1 pt"
    assert judge(pixel_agreement=None, miou_vs_fp32=None, det_agreement=0.95).passed
    assert judge().why == "no mask or detections to compare"


def test_winner_is_the_fastest_graph_then_the_most_accurate_calibration():
    from edged.tools.quantize.candidate import Candidate
    from edged.tools.quantize.search import _fastest

    def cand(types: str, method: str, speedup: float, miou: float, passed: bool = True,
             variant: str = "out convs float") -> Candidate:
        return Candidate(types, method, variant, ms=10.0 / speedup, fp32_ms=10.0,
                         passed=passed, metrics={"miou_vs_fp32": miou, "det_agreement": 1.0})

    minmax = cand("U8S8", "MinMax", 2.0, 0.999)
    pct = cand("U8S8", "Percentile", 2.2, 0.990)  # same graph: 10% is noise, not speed
    s8 = cand("S8S8", "MinMax", 0.8, 1.0)
    assert _fastest([minmax, s8, pct]) is minmax
    # a faster graph wins on speed, whatever its calibration
    mask = cand("U8S8", "Percentile", 2.5, 0.98, variant="mask conv int8")
    assert _fastest([minmax, pct, mask]) is mask
    assert _fastest([cand("U8S8", "MinMax", 3.0, 1.0, passed=False), s8]) is s8
    assert _fastest([cand("U8S8", "MinMax", 3.0, 1.0, passed=False)]) is None


def test_without_vnni_the_search_adds_7_bit_weights_and_they_are_7_bit(small_model,
                                                                         tmp_path):
    from edged.tools.quantize.calibration import CalibrationReader, tensors
    from edged.tools.quantize.choices import SEARCHES, search_for
    from edged.tools.quantize.graph import prepare_model, static_qdq

    # what the search tries, by CPU class: U8S8's twins with 7-bit weights where U8S8
    # saturates (x86 without VNNI), nothing more elsewhere
    quick = SEARCHES["quick"]
    assert search_for("quick", "x86-vnni") == quick == search_for("quick", "arm-dotprod")
    twins = (("U8S7", "MinMax"), ("U8S7", "Percentile"), ("U8U8", "MinMax"),
             ("U8U8", "Percentile"))
    assert search_for("quick", "x86-avx2") == quick + twins
    assert search_for("quick", "x86-avx512")[len(quick):] == twins
    # --for-class: for a saturating CPU from an exact one, only the twins (the integers
    # both compute alike); the same class family is the plain search; the reverse refused
    from edged.tools.quantize.choices import QuantizeError, search_for_target

    assert search_for_target("quick", "x86-amx", "x86-avx2") == twins
    assert search_for_target("quick", "x86-amx", "x86-vnni") == quick
    assert search_for_target("quick", "x86-avx2", "x86-avx512") == quick + twins
    assert search_for_target("quick", "x86-vnni", None) == quick
    with pytest.raises(QuantizeError, match="compute other integers; run `edged quantize` "
                                            "on a x86-vnni machine"):
        search_for_target("quick", "x86-avx2", "x86-vnni")
    # and such a model really has weights in the 7-bit range
    m = ModelRunner(ModelOptions(path=small_model, threads=1)).manifest
    prepared, _ = prepare_model(small_model, tmp_path)
    data = tensors(scene_images(4), m.preprocess)
    for types in ("U8S7", "U8S8"):
        out = tmp_path / f"{types}.onnx"
        static_qdq(prepared, out, CalibrationReader(m.input_name, data, None), types)
        g = onnx.load(str(out)).graph
        weights = [onnx.numpy_helper.to_array(t) for t in g.initializer
                   if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
        peak = max(int(np.abs(w.astype(np.int16)).max()) for w in weights)
        assert weights and (peak <= 64 if types == "U8S7" else peak > 64), (types, peak)
    # the unsigned-weight twin quantizes and runs in edged's runner
    out = tmp_path / "U8U8.onnx"
    static_qdq(prepared, out, CalibrationReader(m.input_name, data, None), "U8U8")
    g = onnx.load(str(out)).graph
    assert any(t.data_type == onnx.TensorProto.UINT8 and len(t.dims) == 4
               for t in g.initializer)
    r = ModelRunner(ModelOptions(path=out, threads=1)).infer(
        Frame("q", 0, scene_images(1)[0], 0, 0))
    assert r.mask is not None


def test_decision_convs_see_through_strictly_increasing_element_wise_ops():
    """A real YOEO export ends its segmentation head Conv -> LeakyRelu -> ArgMax: the
    conv still only feeds a decision. Relu (ties) and a LeakyRelu with alpha <= 0 do not
    preserve the order, so there the conv stays float."""
    from onnx import TensorProto, helper

    def model(act: onnx.NodeProto | None) -> onnx.ModelProto:
        nodes = [helper.make_node("Conv", ["x", "w"], ["logits"], name="seg",
                                  kernel_shape=[1, 1])]
        src = "logits"
        if act is not None:
            nodes.append(act)
            src = act.output[0]
        nodes.append(helper.make_node("ArgMax", [src], ["mask"], name="argmax", axis=1))
        f = TensorProto.FLOAT
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", f, [1, 4, 8, 8])],
            [helper.make_tensor_value_info("mask", TensorProto.INT64, None)],
            initializer=[helper.make_tensor("w", f, [4, 4, 1, 1], [0.1] * 16)])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def act(op: str, **attrs: float) -> onnx.NodeProto:
        return helper.make_node(op, ["logits"], ["a"], name="act", **attrs)

    assert decision_convs(model(None)) == ["seg"]
    assert decision_convs(model(act("LeakyRelu", alpha=0.1))) == ["seg"]
    assert decision_convs(model(act("LeakyRelu"))) == ["seg"]  # the default alpha, 0.01
    assert decision_convs(model(act("Sigmoid"))) == ["seg"]
    assert decision_convs(model(act("Selu"))) == ["seg"]
    assert decision_convs(model(act("Relu"))) == []
    assert decision_convs(model(act("LeakyRelu", alpha=-0.5))) == []
    assert decision_convs(model(act("Elu", alpha=0.0))) == []


def test_sensitivity_ranks_the_roundings_that_add_the_error(small_model, tmp_path):
    from edged.tools.quantize.calibration import CalibrationReader, tensors
    from edged.tools.quantize.graph import (
        _with_outputs,
        activation_rounding,
        prepare_model,
        static_qdq,
    )

    m = ModelRunner(ModelOptions(path=small_model, threads=1)).manifest
    prepared, _ = prepare_model(small_model, tmp_path)
    pm = onnx.load(str(prepared))
    keep = default_keep_float(pm)
    data = tensors(scene_images(12, 416, 416), m.preprocess)

    def quantized(name: str, exclude: list[str]) -> Path:
        out = tmp_path / name
        static_qdq(prepared, out, CalibrationReader(m.input_name, data[:8], None), "U8S7",
                   exclude=exclude)
        return out

    base = quantized("q.onnx", keep)
    ranked = activation_rounding(prepared, base, data[:4], m.input_name)
    errors = [e for _, e, _ in ranked]
    assert errors == sorted(errors, reverse=True) and 0 <= errors[-1] < errors[0] < 0.1
    nodes = {n.name for n in pm.graph.node}
    assert all(floats and set(floats) <= nodes for _, _, floats in ranked)

    # the ranking predicts: its top 8 left float cut the error of the final (float) convs
    # on frames it never saw; its bottom 8 do not
    finals = [n.output[0] for n in pm.graph.node if n.name in keep and n.op_type == "Conv"]
    ref = _with_outputs(pm, finals)

    def final_error(path: Path) -> float:
        s = _with_outputs(onnx.load(str(path)), finals)
        num = den = 0.0
        for x in data[8:]:
            a = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {m.input_name: x})))
            b = dict(zip([o.name for o in s.get_outputs()], s.run(None, {m.input_name: x})))
            for t in finals:
                num += float(np.sum((a[t].astype(np.float64) - b[t]) ** 2))
                den += float(np.sum(a[t].astype(np.float64) ** 2))
        return (num / den) ** 0.5

    def floats(rows: list) -> list[str]:
        return sorted({n for _, _, ns in rows for n in ns} - set(keep))

    e_all = final_error(base)
    e_top = final_error(quantized("top.onnx", keep + floats(ranked[:8])))
    e_bottom = final_error(quantized("bottom.onnx", keep + floats(ranked[-8:])))
    print(f"final-conv error: all int8 {e_all:.4f}, top 8 float {e_top:.4f}, "
          f"bottom 8 float {e_bottom:.4f}")
    assert e_top < 0.75 * e_all
    assert e_bottom > 0.95 * e_all
