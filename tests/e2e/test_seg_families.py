"""The semantic families users bring, served from their own reference exports (issue 33).

Everywhere: the manifest options these families need, against their definitions:
Pillow's antialiased resize (bit-exact against Pillow on synthetic frames), the logits
enlarged before the argmax, and `edged inspect` reporting its reading of the graph
beside a manifest file that differs from it.

In the reference environment (`.venv-refs` of .ci/run, EDGED_REQUIRE_REFERENCES=1: these
tests may not skip there): SegFormer-b0 from transformers and U-Net / FPN / DeepLabV3 /
DeepLabV3+ from segmentation-models-pytorch (tests/seg_exports.py), served by edged with
the manifest `edged inspect --write-manifest` proposes, agree with the references' own
pre- and post-processing on >= 99.5% of the pixels of every frame; torchvision's Mask
R-CNN (tests/maskrcnn_export.py) gives torchvision's detections and, inside each box,
its masks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.inference.formats.semantic import upsampled_argmax
from edged.inference.preprocess import PilResize, Preprocessor, PreprocessSpec
from edged.synth import render

REFS = os.environ.get("EDGED_REQUIRE_REFERENCES") == "1"
ROOT = Path(__file__).resolve().parents[2]  # tests/e2e/ -> the repository
FRAMES = [(1, 0), (1, 7), (3, 2), (5, 11)]  # (seed, index) of synthetic 640x480 frames
AGREEMENT = 0.995


def _frames() -> list[np.ndarray]:
    return [render(seed, index).image for seed, index in FRAMES]


# ----------------------------------------------------------------------------- resize

@pytest.mark.parametrize("kind", ["pil_bilinear", "pil_bicubic"])
@pytest.mark.parametrize("size", [(512, 512), (320, 256), (1024, 768), (640, 200), (97, 61)])
def test_pil_resize_is_pillows(kind: str, size: tuple[int, int]) -> None:
    Image = pytest.importorskip("PIL.Image")
    resample = Image.BILINEAR if kind == "pil_bilinear" else Image.BICUBIC
    resize = PilResize(kind)
    for frame in _frames()[:2]:
        ours = resize(frame, size)
        theirs = np.asarray(Image.fromarray(frame).resize(size, resample))
        assert ours.shape == theirs.shape == (size[1], size[0], 3)
        assert np.array_equal(ours, theirs), (kind, size, int((ours != theirs).sum()))


def test_pil_resize_differs_from_opencvs_area() -> None:
    """INTER_AREA is no stand-in for Pillow's antialias (why the option exists)."""
    cv2 = pytest.importorskip("cv2")
    Image = pytest.importorskip("PIL.Image")
    frame = _frames()[0]
    pil = np.asarray(Image.fromarray(frame).resize((512, 384), Image.BILINEAR))
    area = cv2.resize(frame, (512, 384), interpolation=cv2.INTER_AREA)
    assert np.count_nonzero(pil != area) > 0.05 * pil.size


def test_preprocessor_uses_pils_resize_and_imagenet_stats() -> None:
    Image = pytest.importorskip("PIL.Image")
    spec = PreprocessSpec(input_w=320, input_h=256, resize="stretch",
                          interpolation="pil_bicubic", mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225))
    frame = _frames()[1]
    tensor = Preprocessor(spec)
    tensor(frame)
    rgb = np.asarray(Image.fromarray(frame[:, :, ::-1].copy()).resize((320, 256),
                                                                       Image.BICUBIC))
    want = (rgb / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(tensor.tensor[0].transpose(1, 2, 0), want, atol=1e-5)


def test_unknown_interpolation_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="interpolation must be one of .*'lanczos'"):
        Preprocessor(PreprocessSpec(interpolation="lanczos"))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- upsample

def _bilinear_half_pixel(logits: np.ndarray, h: int, w: int) -> np.ndarray:
    """torch's interpolate(mode="bilinear", align_corners=False), written out."""
    def axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.maximum((np.arange(dst) + 0.5) * src / dst - 0.5, 0.0)
        i0 = np.minimum(np.floor(x).astype(int), src - 1)
        return i0, np.minimum(i0 + 1, src - 1), x - i0
    y0, y1, fy = axis(logits.shape[0], h)
    x0, x1, fx = axis(logits.shape[1], w)
    top = logits[y0][:, x0] * (1 - fx)[None, :, None] + logits[y0][:, x1] * fx[None, :, None]
    bot = logits[y1][:, x0] * (1 - fx)[None, :, None] + logits[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


@pytest.mark.parametrize("classes", [4, 40])  # 40: more than one band of channels
def test_upsampled_argmax_is_the_argmax_of_enlarged_logits(classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(30, 40, classes)).astype(np.float32)
    got = upsampled_argmax(logits, (160, 120))
    want = _bilinear_half_pixel(logits.astype(np.float64), 120, 160).argmax(axis=2)
    assert got.shape == (120, 160)
    assert np.mean(got == want) > 0.999  # float32 rounding may flip a near-tie
    # and it is not the class map enlarged: that is what the option changes
    nearest = logits.argmax(axis=2).repeat(4, axis=0).repeat(4, axis=1)
    assert np.mean(got == nearest) < 0.99


# ----------------------------------------------------------------------------- inspect

def _edged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_inspect_reports_the_graph_beside_a_manifest_that_differs(tmp_path: Path) -> None:
    import formatgen

    model = formatgen.semantic_model(tmp_path / "seg.onnx")
    p = _edged("inspect", str(model), "--runs", "1", "--write-manifest")
    assert p.returncode == 0, p.stderr
    written = json.loads(model.with_suffix(".json").read_text())
    # the proposal for the semantic families
    assert written["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert written["preprocess"]["std"] == [0.229, 0.224, 0.225]
    assert written["preprocess"]["resize"] == "stretch"
    assert written["preprocess"]["interpolation"] == "pil_bilinear"
    assert written["options"]["upsample"] == "logits"
    assert "proposes upsample logits" in p.stdout and "1/4 of the input" in p.stdout
    p = _edged("inspect", str(model), "--runs", "1")
    assert "graph    the manifest file says what the graph implies" in p.stdout
    written["preprocess"]["resize"] = "letterbox"
    written["options"]["upsample"] = "class_ids"
    model.with_suffix(".json").write_text(json.dumps(written))
    p = _edged("inspect", str(model), "--runs", "1")
    assert p.returncode == 0, p.stderr
    assert "graph    reads as semantic: recognised from the graph" in p.stdout
    assert 'differs  preprocess.resize: manifest "letterbox", graph "stretch"' in p.stdout
    assert 'differs  options.upsample: manifest "class_ids", graph "logits"' in p.stdout
    p = _edged("inspect", str(model), "--runs", "1", "--json")
    info = json.loads(p.stdout)
    assert {d["key"] for d in info["differs"]} == {"preprocess.resize", "options.upsample"}
    assert info["manifest"]["preprocess"]["resize"] == "letterbox"  # what runs


def test_bad_upsample_option_is_refused_with_the_file(tmp_path: Path) -> None:
    import formatgen

    model = formatgen.semantic_model(tmp_path / "seg.onnx")
    assert _edged("inspect", str(model), "--runs", "1", "--write-manifest").returncode == 0
    doc = json.loads(model.with_suffix(".json").read_text())
    doc["options"]["upsample"] = "bicubic"
    model.with_suffix(".json").write_text(json.dumps(doc))
    p = _edged("inspect", str(model), "--runs", "1")
    assert p.returncode == 1
    assert "seg.json: options.upsample must be one of class_ids, logits, got 'bicubic'" \
        in p.stdout


def _dynamic_logits_model(path: Path) -> Path:
    """[1,3,h,w] -> logits [?, ?, h, w] (a 1x1 Conv: class k = input channel k, class 3
    = 0), the class count unknown to the graph, as torch.onnx writes torchvision's."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((4, 3, 1, 1), np.float32)
    for k in range(3):
        weight[k, k] = 1.0
    # a Resize to sizes computed in the graph (the conv's N, C and the input's H, W), as
    # torchvision's heads end: shape inference then knows none of the output's dims
    nodes = [helper.make_node("Conv", ["input", "w"], ["logits"]),
             helper.make_node("Shape", ["logits"], ["nc"], end=2),
             helper.make_node("Shape", ["input"], ["hw"], start=2),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["logits", "", "", "sizes"], ["out"], mode="linear")]
    graph = helper.make_graph(
        nodes, "dynamic_logits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                       ["Resizeout_dim_0", "Resizeout_dim_1", "height",
                                        "width"])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_dynamic_class_count_is_recognised_proposed_and_served(tmp_path: Path) -> None:
    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.results import Frame, mask_at
    from edged.tools.inspection import inspect_model, render_report, write_manifest

    model = _dynamic_logits_model(tmp_path / "tv.onnx")
    info = inspect_model(model, runs=1)
    assert info["error"] is None and info["format"] == "semantic"
    assert "C not fixed by the graph" in info["why"]
    assert "name the classes in seg_classes" in info["why"]
    assert any("shorter side 520" in r for r in info["graph"]["proposed"])
    assert "proposes input size following the frame" in render_report(info)
    write_manifest(info)
    pre = json.loads(model.with_suffix(".json").read_text())["preprocess"]
    assert (pre["size"], pre["limit_type"], pre["limit_side"], pre["multiple"]) == \
        ("keep_ratio", "min", 520, 1)
    runner = ModelRunner(ModelOptions(path=model, threads=1, warmup_runs=0))
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, :320, 2] = 255  # BGR: red on the left
    img[:, 320:, 0] = 255  # blue on the right
    res = runner.infer(Frame("cam", 0, img, 0, 0))
    mask = mask_at(res.mask, 640, 480)
    assert mask is not None and mask.shape == (480, 640)
    assert (mask[:, :318] == 0).all() and (mask[:, 322:] == 2).all()


def test_dynamic_map_of_another_size_is_not_claimed_by_auto() -> None:
    """[?, ?, a, b] with H and W not the input's: no evidence of a class map."""
    from edged.inference.formats import FormatError, TensorInfo, recognise

    inputs = [TensorInfo("input", (1, 3, "height", "width"), "float32")]
    outputs = [TensorInfo("out", ("n", "c", "a", "b"), "float32")]
    with pytest.raises(FormatError, match="no known model format fits"):
        recognise(inputs, outputs)


# ----------------------------------------------------------------------------- families

def _refs() -> Any:
    if not REFS:
        for mod in ("torch", "transformers", "segmentation_models_pytorch", "timm", "PIL"):
            pytest.importorskip(mod)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
    import seg_exports

    return seg_exports


def _served(model: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    """edged's class maps at camera size, with the manifest `inspect` writes."""
    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.results import Frame, mask_at
    from edged.tools.inspection import inspect_model, write_manifest

    write_manifest(inspect_model(model, runs=1), force=True)
    runner = ModelRunner(ModelOptions(path=model, threads=1, warmup_runs=0))
    assert runner.manifest.format == "semantic"
    out = []
    for i, img in enumerate(frames):
        res = runner.infer(Frame("cam", i, img, 0, 0))
        mask = mask_at(res.mask, img.shape[1], img.shape[0])
        assert mask is not None
        out.append(mask)
    return out


def _informative(theirs: list[np.ndarray]) -> None:
    """Random weights, yet the reference's map follows the image: classes other than
    the most common one cover more of the frames than the agreement may miss (else a
    map of one class would pass any served result that is one class too)."""
    counts = np.bincount(np.concatenate([t.ravel() for t in theirs]))
    minority = 1.0 - counts.max() / counts.sum()
    assert minority > 1.0 - AGREEMENT, (minority, counts)


def _agreement(ours: list[np.ndarray], theirs: list[np.ndarray]) -> list[float]:
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
    return [float(np.mean(a == b)) for a, b in zip(ours, theirs)]


def test_segformer_b0_from_transformers(tmp_path: Path) -> None:
    se = _refs()
    model, torch_model, processor = se.segformer(tmp_path)
    frames = _frames()
    theirs = [se.segformer_reference(torch_model, processor, f[:, :, ::-1].copy())
              for f in frames]
    # random weights, yet the map follows the image: more than one class in sight
    _informative(theirs)
    agree = _agreement(_served(model, frames), theirs)
    print("segformer-b0 agreement per frame", agree)
    assert min(agree) >= AGREEMENT, agree


@pytest.mark.parametrize("family", ["Unet", "FPN", "DeepLabV3", "DeepLabV3Plus"])
def test_smp_family(tmp_path: Path, family: str) -> None:
    se = _refs()
    model, torch_model, prep = se.smp_model(family, tmp_path)
    frames = _frames()
    theirs = [se.smp_reference(torch_model, prep, f[:, :, ::-1].copy()) for f in frames]
    _informative(theirs)
    agree = _agreement(_served(model, frames), theirs)
    print(f"smp {family} agreement per frame", agree)
    assert min(agree) >= AGREEMENT, agree


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large",
                                  "fcn_resnet50"])
def test_torchvision_family(tmp_path: Path, name: str) -> None:
    """A dynamic-size export whose class count torch.onnx loses behind the head's Resize:
    recognised, the shorter side to 520 as the weights' transforms do, at parity."""
    se = _refs()
    model, torch_model, preset = se.torchvision_model(name, tmp_path)
    frames = _frames()[:2] if name == "fcn_resnet50" else _frames()  # ResNet-50 at 693x520
    theirs = [se.torchvision_reference(torch_model, preset, f[:, :, ::-1].copy())
              for f in frames]
    _informative(theirs)
    agree = _agreement(_served(model, frames), theirs)
    print(f"torchvision {name} agreement per frame", agree)
    assert min(agree) >= AGREEMENT, agree


# ----------------------------------------------------------------------------- refused

def test_maskformer_head_is_refused_not_read_as_sparseinst(tmp_path: Path) -> None:
    """transformers' MaskFormer/Mask2Former outputs have SparseInst's shapes ([1,Q,C+1]
    class logits, [1,Q,h,w] mask logits) but other values: one line says so and what to
    do, for auto and for `format: sparseinst` alike."""
    import formatgen

    model = formatgen.const_model(
        tmp_path / "mask2former.onnx",
        [("class_queries_logits", np.zeros((1, 100, 5), np.float32), None),
         ("masks_queries_logits", np.zeros((1, 100, 96, 96), np.float32), None)],
        input_name="pixel_values", input_shape=[1, 3, 384, 384])
    for fmt in ("auto", "sparseinst"):
        p = _edged("inspect", str(model), "--runs", "1", "--format", fmt)
        assert p.returncode == 1, p.stdout
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith("format"))
        assert "class_queries_logits and masks_queries_logits are a MaskFormer / " \
               "Mask2Former head (transformers), which edged does not serve" in line
        assert "serve that as format: semantic" in line
        assert "sparseinst" not in line.split(":")[0]


# ----------------------------------------------------------------------------- mask r-cnn

def _box_inside(box: np.ndarray, h: int, w: int) -> np.ndarray:
    """The frame's pixels whose centre lies in the box, [x1, x2) x [y1, y2): where an
    edged instance mask may be 1 (edged/inference/formats/_instances.py)."""
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    return (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def test_torchvision_maskrcnn(tmp_path: Path, tcp_endpoint: str) -> None:
    """torchvision's maskrcnn_resnet50_fpn (random seeded weights, its own ONNX export
    with NonMaxSuppression and RoiAlign, the mask paste in the graph), recognised and
    checked, served at parity with torchvision's forward: the same detections in the same
    order, boxes within 0.5 px, classes equal, and each mask equal to torchvision's
    thresholded paste inside its box (IoU >= 0.99).

    Outside the box they differ, by design: torchvision pastes each 28x28 mask over its
    box enlarged by 30/28, so its thresholded mask can spill past the box (a pixel row or
    column on thin boxes), while an edged instance mask is 0 outside its box. The whole-
    frame IoU is measured and printed (docs/models.md), and the test proves that every
    differing pixel lies outside the box."""
    if not REFS:
        pytest.importorskip("torch")
        # not imported here: PyPI's torchvision imports only after seg_exports' schemas
        if importlib.util.find_spec("torchvision") is None:
            pytest.skip("torchvision is not installed")
    import maskrcnn_export as me

    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.results import Frame, instance_extents
    from edged.tools.inspection import inspect_model, write_manifest

    model, torch_model = me.maskrcnn(tmp_path)
    info = inspect_model(model, runs=1)
    assert info["error"] is None and info["format"] == "mask-rcnn", info
    assert "Mask R-CNN, torchvision layout" in info["why"]
    write_manifest(info, force=True)
    doc = json.loads(model.with_suffix(".json").read_text())
    doc["conf_threshold"] = me.SCORE_THRESH  # the export's box_score_thresh
    model.with_suffix(".json").write_text(json.dumps(doc))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""\
model: {{path: {model}, threads: 1, warmup_runs: 0}}
cameras:
  synthetic: {{source: synthetic, fps: 5, width: 640, height: 480}}
publish: {{endpoints: ["{tcp_endpoint}"]}}
""")
    p = _edged("check", "-c", str(cfg))
    assert p.returncode == 0, p.stdout + p.stderr

    runner = ModelRunner(ModelOptions(path=model, threads=1, warmup_runs=0))
    assert runner.manifest.format == "mask-rcnn"
    counts, in_box, whole = [], [], []
    for i, img in enumerate(_frames()):
        h, w = img.shape[:2]
        ref = me.maskrcnn_reference(torch_model, img[:, :, ::-1].copy())
        dets = runner.infer(Frame("cam", i, img, 0, 0)).detections
        counts.append(len(ref["boxes"]))
        assert 1 <= len(ref["boxes"]) <= 50, len(ref["boxes"])  # something to compare
        assert len(dets.boxes) == len(ref["boxes"]), (i, len(dets.boxes), len(ref["boxes"]))
        assert np.abs(dets.boxes - ref["boxes"]).max() <= 0.5
        assert np.array_equal(dets.class_ids, ref["labels"])
        np.testing.assert_allclose(dets.scores, ref["scores"], atol=1e-4)
        assert dets.instance_masks is not None
        for k, (x0, y0, x1, y1) in enumerate(instance_extents(dets.boxes)):
            ours = np.zeros((h, w), bool)
            ours[y0:y1, x0:x1] = dets.instance_masks[k].astype(bool)
            theirs = ref["masks"][k].astype(bool)
            inside = _box_inside(ref["boxes"][k], h, w)
            in_box.append(_iou(ours, theirs & inside))
            whole.append(_iou(ours, theirs))
            assert not (ours & ~inside).any()  # edged's masks stay in their box
    print("mask-rcnn detections per frame", counts,
          f"mask IoU in the box min {min(in_box):.4f}; whole frame min {min(whole):.4f} "
          f"mean {np.mean(whole):.4f}, {sum(v < 0.99 for v in whole)}/{len(whole)} "
          "instances under 0.99")
    assert min(in_box) >= 0.99, in_box
