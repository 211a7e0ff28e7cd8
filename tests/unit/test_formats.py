"""Format adapters on real ONNX Runtime sessions: recognition, boxes, classes, masks.

The models are built by tests/formatgen.py with outputs planted by construction; the
answers (tests/formatgen.expected) are worked out from the letterbox geometry by hand.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import formatgen as g
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edged.inference.formats import FORMATS, FormatError, TensorInfo, parse_names, recognise
from edged.inference.formats.yolact import make_priors
from edged.inference.manifest import Manifest, load_manifest, manifest_path
from edged.inference.runner import ModelError, ModelOptions, ModelRunner
from edged.results import Frame, Result, instance_extents
from edged.wire.codec import MaskEncoder, ProtocolError, decode, encode_result

BLACK = np.zeros((g.FRAME_H, g.FRAME_W, 3), np.uint8)
CONFIG_CLASSES = {"mask-rcnn": ("__background__", "person", "bicycle", "car"),
                  "sparseinst": ("ball", "robot")}

BUILDERS = {
    "yolo-seg": g.yolo_seg_model,
    "yolo-seg-v5": lambda p: g.yolo_seg_model(p, layout="rows"),
    "yolo": g.yolo_det_model,
    "yolo-v8": lambda p: g.yolo_det_model(p, layout="anchors_last"),
    "semantic": g.semantic_model,
    "semantic-ids": lambda p: g.semantic_model(p, "ids"),
    "semantic-ids3": lambda p: g.semantic_model(p, "ids3"),
    "yolact": g.yolact_model,
    "mask-rcnn": g.mask_rcnn_torchvision_model,
    "mask-rcnn-mmdeploy": g.mask_rcnn_mmdeploy_model,
    "sparseinst": g.sparseinst_model,
    "sparseinst-nolabels": lambda p: g.sparseinst_model(p, with_labels=False),
}
FORMAT_OF = {"yolo-seg-v5": "yolo-seg", "yolo-v8": "yolo", "semantic-ids": "semantic",
             "semantic-ids3": "semantic", "mask-rcnn-mmdeploy": "mask-rcnn",
             "sparseinst-nolabels": "sparseinst"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    return {k: build(d / f"{k}.onnx") for k, build in BUILDERS.items()}


def run(model: Path, img: np.ndarray = BLACK, **kw: object) -> tuple[ModelRunner, Result]:
    runner = ModelRunner(ModelOptions(path=model, threads=1, **kw))  # type: ignore[arg-type]
    return runner, runner.infer(Frame("cam", 0, img, 0, 0))


def frame_masks(res: Result) -> list[np.ndarray]:
    """The result's instance masks placed in the frame."""
    det = res.detections
    assert det.instance_masks is not None
    out = []
    for (x0, y0, x1, y1), m in zip(instance_extents(det.boxes).tolist(), det.instance_masks):
        assert m.shape == (y1 - y0, x1 - x0) and m.dtype == np.uint8
        full = np.zeros((res.frame_h, res.frame_w), np.uint8)
        full[y0:y1, x0:x1] = m
        out.append(full)
    return out


def check(res: Result, exp: dict) -> None:
    det = res.detections
    np.testing.assert_allclose(det.boxes, np.array(exp["boxes"]), atol=1e-3)
    assert [res.class_name(c) for c in det.class_ids] == exp["labels"]
    np.testing.assert_allclose(det.scores, exp["scores"], atol=1e-6)
    if exp["instances"] is None:
        assert det.instance_masks is None and res.mask is None
        return
    for got, want in zip(frame_masks(res), exp["instances"], strict=True):
        np.testing.assert_array_equal(got, want)
    assert res.mask.shape == exp["mask_shape"]
    np.testing.assert_array_equal(res.mask, g.expected_class_mask(
        exp["instances"], exp["ids"], exp["scores"], exp["mask_shape"]))


# ----------------------------------------------------------------------------- recognition


@pytest.mark.parametrize("key", list(BUILDERS))
def test_each_model_is_recognised_with_format_auto(models, key):
    runner = ModelRunner(ModelOptions(path=models[key], threads=1))
    assert runner.manifest.format == FORMAT_OF.get(key, key)
    assert runner.format_reason.startswith("recognised from the graph: ")


def test_every_registered_format_is_a_config_format():
    from edged.config import known_formats

    assert set(FORMATS) | {"auto"} == set(known_formats())


def test_reasons_are_specific(models):
    why = ModelRunner(ModelOptions(path=models["yolo-seg"], threads=1)).format_reason
    assert "3549 anchors = 1 per cell of the stride 8/16/32 grids" in why
    assert "4 box + 3 classes + 4 mask coefficients" in why
    assert "3 class names from the ONNX metadata" in why
    why = ModelRunner(ModelOptions(path=models["yolact"], threads=1)).format_reason
    assert "priors priors [100,4] from the graph" in why


def test_unrecognisable_model_error_names_its_outputs(tmp_path):
    path = g.const_model(tmp_path / "odd.onnx", [
        ("alpha", np.zeros((1, 7), np.float32), None),
        ("beta", np.zeros((2, 2, 2), np.float32), None)])
    with pytest.raises(ModelError, match=r"no known model format fits.*outputs: "
                                         r"alpha float32\[1, 7\], beta float32\[2, 2, 2\]"):
        ModelRunner(ModelOptions(path=path))


def test_ambiguous_shapes_ask_for_model_format(tmp_path):
    # YOLOv5-seg rows next to prototypes also read as YOEO rows + logits; neutral
    # output names give no tie-break, so edged asks instead of guessing
    path = g.yolo_seg_model(tmp_path / "amb.onnx", layout="rows", output_names=("a", "b"))
    with pytest.raises(ModelError, match=r"several formats fit this graph: yoeo \(.*\); "
                                         r"yolo-seg \(.*\); set model.format"):
        ModelRunner(ModelOptions(path=path))
    runner = ModelRunner(ModelOptions(path=path, format="yolo-seg", threads=1))
    assert runner.format_reason.startswith("format set in the config: YOLO-seg")
    # with the exporter's names the tie is settled, and the reason says how
    why = ModelRunner(ModelOptions(path=models_v5(tmp_path), threads=1)).format_reason
    assert "the shapes also fit yoeo; output names output0, output1 are yolo-seg's" in why


def models_v5(tmp_path: Path) -> Path:
    return g.yolo_seg_model(tmp_path / "v5.onnx", layout="rows")


def test_explicit_format_that_does_not_fit(models):
    with pytest.raises(ModelError, match=r"do not fit format 'yolact' \(outputs: output0"):
        ModelRunner(ModelOptions(path=models["yolo"], format="yolact"))


def test_recognise_works_on_shapes_alone():
    img = [TensorInfo("images", (1, 3, 640, 640), "float32")]
    v8 = [TensorInfo("output0", (1, 116, 8400), "float32"),
          TensorInfo("output1", (1, 32, 160, 160), "float32")]
    assert recognise(img, v8)[0] == "yolo-seg"
    assert recognise(img, v8[:1])[0] == "yolo"  # 116 = 4 + 112 classes, no prototypes
    dyn = [TensorInfo("images", ("batch", 3, "h", "w"), "float32")]
    assert recognise(dyn, [TensorInfo("output0", ("batch", 84, "anchors"), "float32")])[0] \
        == "yolo"
    seg = [TensorInfo("out", (1, 19, 160, 160), "float32")]
    assert recognise(img, seg)[0] == "semantic"
    sparse = [TensorInfo("masks", (1, 100, 160, 160), "float32"),
              TensorInfo("scores", (1, 100, 80), "float32")]
    assert recognise(img, sparse)[0] == "sparseinst"
    yolact = [TensorInfo("loc", (1, 19248, 4), "float32"),
              TensorInfo("conf", (1, 19248, 81), "float32"),
              TensorInfo("mask", (1, 19248, 32), "float32"),
              TensorInfo("proto", (1, 138, 138, 32), "float32")]
    img550 = [TensorInfo("input", (1, 3, 550, 550), "float32")]
    name, why = recognise(img550, yolact)
    assert name == "yolact" and "19248 predictions = yolact_base's default priors" in why
    with pytest.raises(FormatError, match="no known model format"):
        recognise(img, [TensorInfo("y", (1, 1000), "float32")])


def test_yolact_default_priors_match_yolact_base():
    priors = make_priors({"scales": [[24], [48], [96], [192], [384]],
                          "aspect_ratios": [1, 0.5, 2], "square": True}, 550, 550)
    assert priors.shape == (19248, 4)
    # first cell of the 69x69 stride-8 level, ratios 1, 1/2, 2 with square anchors
    np.testing.assert_allclose(priors[:3, :2], [[0.5 / 69, 0.5 / 69]] * 3, rtol=1e-6)
    np.testing.assert_allclose(priors[:3, 2], [24 / 550, 24 * 0.5 ** 0.5 / 550,
                                               24 * 2 ** 0.5 / 550], rtol=1e-6)
    np.testing.assert_array_equal(priors[:3, 2], priors[:3, 3])


def test_parse_names_only_accepts_literal_name_lists():
    assert parse_names("{0: 'person', 1: 'bicycle'}") == ("person", "bicycle")
    assert parse_names("['a', 'b']") == ("a", "b")
    assert parse_names("__import__('os').system('true')") is None
    assert parse_names("{0: 'a', 2: 'c'}") is None  # a gap: not an index -> name list
    assert parse_names("{0: 1}") is None and parse_names("") is None


# ----------------------------------------------------------------------------- results


@pytest.mark.parametrize("key", ["yolo-seg", "yolo-seg-v5"])
def test_yolo_seg_boxes_classes_and_masks(models, key):
    """The direct mask rule (one bilinear sample per camera pixel centre), against the
    masks formatgen computes by that rule; the default, ultralytics' own rule, is
    tested against ultralytics in test_ultralytics.py."""
    _, res = run(models[key], mask_mode="direct")
    check(res, g.expected("yolo-seg"))
    assert res.mask_classes == ("background", "person", "robot", "ball")


def test_yolo_seg_default_masks_follow_ultralytics_and_differ_only_at_edges(models):
    runner, res = run(models["yolo-seg"])
    assert runner.manifest.options["mask_mode"] == "ultralytics"
    exp = g.expected("yolo-seg")
    np.testing.assert_allclose(res.detections.boxes, np.array(exp["boxes"]), atol=1e-3)
    for got, want in zip(frame_masks(res), exp["instances"], strict=True):
        inter = np.logical_and(got, want).sum()
        assert inter / np.logical_or(got, want).sum() > 0.9


@pytest.mark.parametrize("key", ["yolo", "yolo-v8"])
def test_yolo_detection_has_boxes_and_no_mask(models, key):
    _, res = run(models[key])
    check(res, g.expected("yolo"))


def test_class_names_from_the_config_win_over_metadata(models):
    _, res = run(models["yolo"], classes=("a", "b", "c"))
    assert [res.class_name(c) for c in res.detections.class_ids] == ["b", "a"]


@pytest.mark.parametrize("key", ["semantic", "semantic-ids", "semantic-ids3"])
def test_semantic_class_map(models, key):
    img, truth = g.band_frame()
    _, res = run(models[key], img)
    assert len(res.detections) == 0
    np.testing.assert_array_equal(res.mask, truth)
    assert res.mask_classes == ("red", "green", "blue", "dark")


def test_semantic_mean_std_from_the_manifest(tmp_path):
    model = g.semantic_model(tmp_path / "sem.onnx")
    img = np.full((312, 416, 3), 200, np.uint8)  # grey: R = G = B = 0.784
    _, res = run(model, img)
    assert set(np.unique(res.mask)) == {0}  # equal channels: argmax takes the first
    runner = ModelRunner(ModelOptions(path=model, threads=1))
    m = json.loads(runner.manifest.to_json())
    m["preprocess"].update(mean=[0.5, 0.0, 0.3], std=[1, 1, 0.5])
    manifest_path(model).write_text(json.dumps(m))
    # now R 0.284, G 0.784, B 0.968: blue wins, and would not without the std
    _, res = run(model, img)
    assert set(np.unique(res.mask)) == {2}


def test_semantic_binary_threshold_option(tmp_path):
    path = g.const_model(tmp_path / "bin.onnx", [
        ("prob", np.tile(np.linspace(0, 1, 104, dtype=np.float32), (1, 1, 104, 1)), None)])
    runner = ModelRunner(ModelOptions(path=path, format="semantic", threads=1))
    m = runner.manifest
    manifest_path(path).write_text(Manifest(**{**_fields(m), "options": {
        "binary_threshold": 0.5}}).to_json())
    _, res = run(path, np.zeros((416, 416, 3), np.uint8))
    np.testing.assert_array_equal(res.mask[0], (np.linspace(0, 1, 104) > 0.5).astype(np.uint8))


def _fields(m: Manifest) -> dict:
    return {k: getattr(m, k) for k in Manifest.__dataclass_fields__}


def test_yolact_decoding_priors_and_overlap(models):
    _, res = run(models["yolact"])
    check(res, g.expected("yolact"))


def test_mask_rcnn_torchvision_roi_masks(models):
    runner, res = run(models["mask-rcnn"], classes=CONFIG_CLASSES["mask-rcnn"])
    assert runner.manifest.preprocess.input_w == 640  # dynamic [3, H, W] input
    check(res, g.expected("mask-rcnn"))


def test_mask_rcnn_mmdeploy_pasted_masks(models):
    _, res = run(models["mask-rcnn-mmdeploy"])
    sc = 0.65  # 416 letterbox, pad_y 52
    b1 = (100 / sc, (180 - 52) / sc, 300 / sc, min((380 - 52) / sc, 480))
    b2 = (400 / sc, (100 - 52) / sc, 640, (300 - 52) / sc)
    masks = frame_masks(res)
    np.testing.assert_allclose(res.detections.boxes, [b1, b2], atol=1e-3)
    assert res.detections.class_ids.tolist() == [0, 2]
    to_input = (sc, 0.0, sc, 52.0)  # the pasted masks are at input resolution
    np.testing.assert_array_equal(masks[0], g.block_mask(b1, (180, 380, 100, 200), to_input,
                                                         (416, 416)))
    np.testing.assert_array_equal(masks[1], g.block_mask(b2, (100, 300, 400, 416), to_input,
                                                         (416, 416)))


@pytest.mark.parametrize("key", ["sparseinst", "sparseinst-nolabels"])
def test_sparseinst_boxes_from_masks(models, key):
    _, res = run(models[key], classes=CONFIG_CLASSES["sparseinst"])
    exp = g.expected("sparseinst")
    if key == "sparseinst-nolabels":  # one class: every query is class 0
        exp = {**exp, "labels": ["ball", "ball"], "ids": [0, 0]}
    check(res, exp)


def test_no_detections_still_gives_a_background_mask(models):
    _, res = run(models["yolact"], conf_threshold=0.95)
    assert len(res.detections) == 0 and res.detections.instance_masks == []
    assert res.mask.shape == (128, 128) and not res.mask.any()


# ----------------------------------------------------------------------------- wire


@pytest.mark.parametrize("encoding", ["raw", "zstd", "png"])
def test_instance_masks_survive_the_wire(models, encoding):
    _, res = run(models["yolact"])
    frames = encode_result(res, MaskEncoder(encoding))
    assert len(frames) == 3  # instances live in the header: v1 frame counts unchanged
    msg = decode(frames)
    assert msg.instances is not None and len(msg.instances) == 2
    for i, want in enumerate(g.expected("yolact")["instances"]):
        np.testing.assert_array_equal(msg.instance_mask_camera(i), want)
    np.testing.assert_array_equal(msg.mask, res.mask)
    # masks off: no instances either
    assert decode(encode_result(res, MaskEncoder(encoding), send_mask=False)).instances is None


def test_formats_without_instances_send_no_instances_key(models):
    import msgpack

    _, res = run(models["yolo"])
    frames = encode_result(res, MaskEncoder())
    assert "instances" not in msgpack.unpackb(frames[1])
    assert decode(frames).instances is None


def _with_instances(frames: list[bytes], **change: object) -> list[bytes]:
    import msgpack

    h = msgpack.unpackb(frames[1])
    inst = h["instances"]
    for k, v in change.items():
        if k in inst:
            inst[k] = v
        else:
            inst["masks"][0][k] = v
    return [frames[0], msgpack.packb(h, use_single_float=True), *frames[2:]]


def test_an_unknown_instance_encoding_leaves_the_detections_usable(models):
    """A newer publisher's encoding: the protocol says only the masks become unusable."""
    _, res = run(models["yolact"])
    msg = decode(_with_instances(encode_result(res, MaskEncoder("raw")), encoding="gif"))
    assert msg.instances is None and len(msg) == len(res.detections)
    assert msg.problems == ("instances: unknown encoding 'gif', left out",)


def test_malformed_instances_are_protocol_errors(models):
    _, res = run(models["yolact"])
    frames = encode_result(res, MaskEncoder("raw"))
    for change, match in [({"masks": []}, "0 masks for 2 detections"),
                          ({"origin": [630, 0]}, "leaves the 640x480 frame"),
                          ({"data": b"\x01"}, r"masks\[0\]: mask: 1 bytes"),
                          ({"shape": [1, -1]}, "must be 2 ints")]:
        with pytest.raises(ProtocolError, match=match):
            decode(_with_instances(frames, **change))


def test_manifest_options_round_trip(tmp_path, models):
    m = ModelRunner(ModelOptions(path=models["yolo-seg"], threads=1)).manifest
    assert m.options == {"layout": "anchors_last", "mask_threshold": 0.5,
                         "mask_mode": "ultralytics"}
    p = tmp_path / "m.json"
    p.write_text(m.to_json())
    assert load_manifest(p) == m


def test_manifest_session_settings_reach_the_session(tmp_path):
    """`session.disabled_optimizers` is handed to onnxruntime (the same outputs either way)
    and reported; a malformed `session` is refused with the file and the key."""
    import shutil

    src = Path(__file__).resolve().parents[2] / "models" / "yoeo-demo-int8.onnx"
    model = tmp_path / "m.onnx"
    shutil.copyfile(src, model)
    m = load_manifest(src.with_suffix(".json"))
    tensor = np.random.default_rng(0).random((1, 3, 416, 416), np.float32)
    outs = {}
    for disabled in ([], ["NhwcTransformer"]):
        manifest_path(model).write_text(
            replace(m, session={"disabled_optimizers": disabled} if disabled else {}).to_json())
        runner = ModelRunner(ModelOptions(path=model, threads=1))
        assert runner.disabled_optimizers == tuple(disabled)
        assert runner.describe()["disabled_optimizers"] == disabled
        outs[len(disabled)] = runner.run_tensor(tensor)
    assert np.array_equal(outs[0][1], outs[1][1])  # the mask
    np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-5)
    raw = json.loads(m.to_json())
    for session, match in [({"disable": ["x"]}, "unknown key.*'session': disable"),
                           ({"disabled_optimizers": "NhwcTransformer"}, "must be a list")]:
        manifest_path(model).write_text(json.dumps(raw | {"session": session}))
        with pytest.raises(ModelError, match=match):
            ModelRunner(ModelOptions(path=model, threads=1))


def test_unbatched_torchvision_input_is_fed_as_3d(models):
    runner = ModelRunner(ModelOptions(path=models["mask-rcnn"], threads=1))
    out = runner.run_tensor(np.zeros((1, 3, 640, 640), np.float32))
    assert out[0].shape == (3, 4)


def test_identity_like_graph_is_not_claimed_as_semantic(tmp_path):
    # an output shaped exactly like the input image could be anything image-to-image
    gph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [1, 3, 64, 64])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                           [1, 3, 64, 64])])
    model = helper.make_model(gph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "id.onnx"))
    with pytest.raises(ModelError, match="no known model format fits"):
        ModelRunner(ModelOptions(path=tmp_path / "id.onnx"))
    runner = ModelRunner(ModelOptions(path=tmp_path / "id.onnx", format="semantic"))
    assert runner.manifest.format == "semantic"


def test_explicit_yolo_format_accepts_any_anchor_count(tmp_path):
    rows = g.yolo_table("anchors_last", masks=0)[:, :, :3000]  # not a stride-grid count
    path = g.const_model(tmp_path / "odd.onnx", [("output0", np.ascontiguousarray(rows), None)])
    with pytest.raises(ModelError, match="no known model format fits"):
        ModelRunner(ModelOptions(path=path))
    runner, res = run(path, format="yolo")
    assert "3000 anchors (not checked against the strides)" in runner.format_reason
    assert len(res.detections) == 2


def test_model_header_reads_opsets_and_producer(tmp_path):
    from edged.tools.inspection import model_header

    path = g.const_model(tmp_path / "m.onnx", [("y", np.zeros((1, 2), np.float32), None)])
    model = onnx.load(str(path))
    model.producer_name, model.producer_version = "pytorch", "2.1.0"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    assert model_header(path) == {"ir_version": 8, "producer": "pytorch 2.1.0",
                                  "opsets": {"ai.onnx": 17, "com.microsoft": 1}}


# ----------------------------------------------------------------------------- binary maps


def test_output_ops_read_from_the_file_agree_with_the_onnx_package(tmp_path):
    import onnx

    from edged.inference.graph import output_ops, read_nodes

    for last in ("Sigmoid", "Conv", "ArgMax", "Mul"):
        path = g.binary_model(tmp_path / f"{last}.onnx", last)
        model = onnx.load(str(path))
        assert [n.op_type for n in read_nodes(path)] == [n.op_type for n in model.graph.node]
    ops = output_ops(tmp_path / "ArgMax.onnx", ["map"])
    assert ops == {"map": ("Cast", "ArgMax")}
    assert output_ops(models_dir() / "yoeo-demo-fp32.onnx", ["Segmentations"]) == {
        "Segmentations": ("Squeeze", "DepthToSpace")}


def models_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("last,values", [("Sigmoid", "probability"), ("Conv", "logit"),
                                         ("ArgMax", "class_ids")])
def test_a_one_channel_float_map_is_read_by_the_op_that_makes_it(tmp_path, last, values):
    """Red above half -> class 1, for probabilities (> 0.5), logits (> logit(0.5) = 0)
    and float class ids alike; none of them is rounded as if it were ids."""
    path = g.binary_model(tmp_path / f"{last}.onnx", last)
    img = np.zeros((416, 416, 3), np.uint8)
    img[:, 208:, 2] = 255  # right half red (BGR)
    img[:, :208, 2] = 100  # left half dim red: 100/255 < 0.5
    runner, res = run(path, img)
    assert runner.manifest.format == "semantic"
    assert runner.manifest.options["output_values"] == values
    assert res.mask is not None and res.mask.shape == (104, 104)
    want = np.zeros((104, 104), np.uint8)
    want[:, 52:] = 1
    np.testing.assert_array_equal(res.mask, want)
    if values != "class_ids":
        assert runner.mask_classes == ("background", "foreground")


def test_the_threshold_is_a_probability_whatever_the_map_holds(tmp_path):
    """model.mask_threshold 0.9: the dim half (sigmoid(20 * (100/255 - 0.5)) = 0.1) and
    the bright one (~1.0) are split at 0.9 for probabilities and at logit(0.9) for
    logits, the same pixels either way."""
    img = np.zeros((416, 416, 3), np.uint8)
    img[:, 208:, 2] = 140  # sigmoid(20 * (140/255 - 0.5)) = 0.73: below 0.9
    img[:, :208, 2] = 200  # 0.996: above
    for last in ("Sigmoid", "Conv"):
        _, res = run(g.binary_model(tmp_path / f"{last}.onnx", last), img, mask_threshold=0.9)
        assert res.mask[:, :52].all() and not res.mask[:, 52:].any(), last


def test_a_float_map_nothing_explains_is_not_guessed(tmp_path):
    path = g.binary_model(tmp_path / "mul.onnx", "Mul")
    with pytest.raises(ModelError, match="no known model format fits"):
        ModelRunner(ModelOptions(path=path, threads=1))
    with pytest.raises(ModelError, match=r"nothing in the graph says whether it holds "
                                         r"probabilities, logits or class ids; set "
                                         r"model.output_values"):
        ModelRunner(ModelOptions(path=path, format="semantic", threads=1))
    runner = ModelRunner(ModelOptions(path=path, format="semantic", threads=1,
                                      output_values="logit"))
    assert runner.manifest.options["output_values"] == "logit"


def test_a_size_rule_follows_each_frame(tmp_path):
    """keep_ratio: a dynamic-size graph gets each camera's frame at its own input size,
    PaddleOCR's rule (shorter side to 736, multiples of 32), and the map comes back
    covering the whole frame."""
    from edged.inference.preprocess import PreprocessSpec

    spec = PreprocessSpec(size="keep_ratio", limit_side=736, limit_type="min", multiple=32)
    assert spec.input_size(640, 480) == (992, 736)  # int(640 * 736/480) = 981 -> 992
    assert spec.input_size(1000, 300) == (2464, 736)
    assert spec.input_size(810, 1080) == (800, 1088)  # shorter side already >= 736
    big = PreprocessSpec(size="keep_ratio", limit_side=960, limit_type="max", multiple=32)
    assert big.input_size(1920, 1080) == (960, 544)
    assert big.input_size(100, 50) == (96, 64)  # never upscaled; sides rounded to 32s
    path = g.binary_model(tmp_path / "dyn.onnx", "Sigmoid", dynamic=True)
    runner = ModelRunner(ModelOptions(path=path, threads=1, preprocess=(
        ("size", "keep_ratio"), ("limit_side", 320), ("limit_type", "max"), ("multiple", 32))))
    assert not runner.dynamic_batch
    for w, h in ((640, 480), (300, 500)):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, w // 2:, 2] = 255
        res = runner.infer(Frame("cam", 0, img, 0, 0))
        iw, ih = runner.manifest.preprocess.input_size(w, h)
        assert res.mask.shape == (ih // 4, iw // 4)
        assert res.mask[:, -2:].all() and not res.mask[:, :2].any()


# ----------------------------------------------------------------------------- DETR family


def rfdetr_like(path: Path, with_masks: bool = True) -> Path:
    """RF-DETR's export layout: dets [1,Q,4] cx cy w h normalised, labels [1,Q,C] logits,
    masks [1,Q,104,104] logits over the whole 416x416 input."""
    q, c = 5, 3
    boxes = np.tile(np.array([0.5, 0.5, 0.1, 0.1], np.float32), (1, q, 1))
    boxes[0, 0] = (0.25, 0.5, 0.5, 0.5)  # left half, a quarter of the height each way
    boxes[0, 1] = (0.75, 0.25, 0.2, 0.3)
    logits = np.full((1, q, c), -5.0, np.float32)
    logits[0, 0, 1] = 3.0  # 0.953
    logits[0, 1, 2] = 1.0  # 0.731
    logits[0, 1, 0] = 0.5  # 0.622: the same query, a second class (top-k over pairs)
    logits[0, 2, 0] = -1.5  # 0.182: below conf
    outs = [("dets", boxes, None), ("labels", logits, None)]
    if with_masks:
        masks = np.full((1, q, 104, 104), -4.0, np.float32)
        masks[0, 0, :, :52] = 4.0  # query 0: the left half of the input
        masks[0, 1, :52, :] = 4.0  # query 1: the top half
        outs.append(("masks", masks, None))
    return g.const_model(path, outs, input_name="input")


def test_rfdetr_like_exports_are_recognised_and_decoded(tmp_path):
    path = rfdetr_like(tmp_path / "rf.onnx")
    img = np.zeros((480, 640, 3), np.uint8)
    runner, res = run(path, img)
    m = runner.manifest
    assert (m.format, m.options["layout"], m.preprocess.resize) == ("detr", "logits", "stretch")
    assert "DETR-style query detector" in runner.format_reason
    d = res.detections
    # sigmoid scores, best pairs first, the second class of query 1 kept too
    np.testing.assert_allclose(d.scores, 1 / (1 + np.exp(-np.array([3.0, 1.0, 0.5]))),
                               rtol=1e-6)
    assert d.class_ids.tolist() == [1, 2, 0]
    # normalised cx cy w h -> camera xyxy through the stretch: x * 640, y * 480
    np.testing.assert_allclose(d.boxes[0], [0, 120, 320, 360], atol=1e-3)
    np.testing.assert_allclose(d.boxes[1], [416, 48, 544, 192], atol=1e-3)
    np.testing.assert_allclose(d.boxes[2], d.boxes[1])
    masks = frame_masks(res)
    # query 0's mask is the left half of the frame, inside its box
    want0 = np.zeros((480, 640), np.uint8)
    want0[120:360, :320] = 1
    np.testing.assert_array_equal(masks[0], want0)
    # query 1's: the top half, inside its box
    want1 = np.zeros((480, 640), np.uint8)
    want1[48:192, 416:544] = 1
    want1[240:] = 0
    np.testing.assert_array_equal(masks[1], want1)


def test_detr_without_masks_and_with_a_score_table(tmp_path):
    path = rfdetr_like(tmp_path / "rf.onnx", with_masks=False)
    _, res = run(path, np.zeros((416, 416, 3), np.uint8))
    assert len(res.detections) == 3 and res.mask is None
    # one output [1, Q, 4+C] of probabilities (older ultralytics RT-DETR exports)
    table = np.zeros((1, 300, 4 + 3), np.float32)
    table[0, :, :4] = (0.5, 0.5, 0.1, 0.1)
    table[0, 7] = (0.5, 0.5, 0.5, 0.5, 0.1, 0.9, 0.2)
    table[0, 9] = (0.25, 0.25, 0.1, 0.1, 0.6, 0.1, 0.1)
    scores = g.const_model(tmp_path / "scores.onnx", [("output0", table, None)])
    runner, res = run(scores, np.zeros((416, 416, 3), np.uint8))
    assert runner.manifest.options["layout"] == "scores"
    d = res.detections
    assert d.class_ids.tolist() == [1, 0]
    np.testing.assert_allclose(d.scores, [0.9, 0.6], rtol=1e-6)
    np.testing.assert_allclose(d.boxes, [[104, 104, 312, 312], [83.2, 83.2, 124.8, 124.8]],
                               atol=1e-3)


def test_a_query_table_of_six_columns_is_asked_about_without_metadata(tmp_path):
    """[1, 300, 6] reads as a DETR top-k (cx cy w h normalised, score, class) and as an
    end-to-end YOLO table (x1 y1 x2 y2 px, score, class): without an exporter's
    metadata that is a question, and model.format answers it."""
    table = np.zeros((1, 300, 6), np.float32)
    path = g.const_model(tmp_path / "six.onnx", [("out", table, None)])
    with pytest.raises(ModelError, match=r"several formats fit this graph: yolo .*detr .*"
                                         r"set model.format"):
        ModelRunner(ModelOptions(path=path, threads=1))
    assert ModelRunner(ModelOptions(path=path, format="detr", threads=1)).manifest.options[
        "layout"] == "topk"


def test_yolov5_tables_follow_the_yolov5_repositorys_rules_by_default(models):
    """A v5 table comes from the yolov5 repository: its mask rule (probabilities
    resized), its box geometry (exact gain, whole pixels), its IoU 0.45 and max_det 1000,
    and its empty-mask detections kept. Parity with that repository's own code is run by
    hand (tests/yolov5_parity.py: torchvision needed); here the mechanism."""
    runner, res = run(models["yolo-seg-v5"])
    m = runner.manifest
    assert (m.options["mask_mode"], m.iou_threshold, m.max_detections) == ("yolov5", 0.45, 1000)
    d = res.detections
    np.testing.assert_array_equal(d.boxes, np.round(d.boxes))
    exp = g.expected("yolo-seg")
    np.testing.assert_allclose(d.boxes, np.array(exp["boxes"]), atol=0.5)
    for got, want in zip(frame_masks(res), exp["instances"], strict=True):
        assert np.logical_and(got, want).sum() / np.logical_or(got, want).sum() > 0.9
