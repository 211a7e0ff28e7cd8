"""Issue 29's fuzzing pass (hypothesis): config documents built from the known keys with
values of every type, through what `edged check` does before loading the model; manifest
documents through the model runner; and valid wire messages, mutated, through the
decoder. Each may succeed or fail with its own user-facing error type, nothing else."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from modelgen import yoeo_model  # noqa: E402
from resultgen import make_result, regions_mask  # noqa: E402

from edged.app import SECTIONS  # noqa: E402
from edged.cli.report import error_message  # noqa: E402
from edged.config import ConfigError, parse_config  # noqa: E402
from edged.wire.codec import (  # noqa: E402
    EndOfStream,
    MaskEncoder,
    Message,
    ProtocolError,
    decode,
    encode_eos,
    encode_result,
)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# values of every kind a YAML file can hold, biased to the edges of numbers and sizes
numbers = (st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 8, 2**31, 10**9, 100000])
           | st.floats(allow_nan=True, allow_infinity=True))
texts = st.text(max_size=12) | st.sampled_from(
    ["synthetic", "auto", "letterbox", "rgb", "raw", "zstd", "tcp://127.0.0.1:5555", "info",
     "builtin:yoeo-demo", "1e9", "nan", "inf", "-1", "0", "", "   ", "${A}", "\x00"])
scalars = st.none() | st.booleans() | numbers | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(texts, inner, max_size=3), max_leaves=8)


def section(keys: list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


def usually(valid: st.SearchStrategy, weight: int = 4) -> st.SearchStrategy:
    """Mostly a value of the key's type near its bounds, sometimes anything: most
    documents get past the first error, so the later checks are reached too."""
    return st.one_of(*[valid] * weight, values)


sizes = st.integers(0, 20000) | st.sampled_from([1, 8, 16, 3840, 8192, 16384, 16385])
rates = st.floats(0, 2000, allow_nan=False) | st.sampled_from([0.001, 1000.0, 1000.5])
TYPED = {
    "type": usually(st.sampled_from(["auto", "synthetic", "video", "images", "url"])),
    "enabled": usually(st.booleans()), "fps": usually(rates), "max_fps": usually(rates),
    "width": usually(sizes), "height": usually(sizes), "loop": usually(st.booleans()),
    "mode": usually(st.sampled_from(["auto", "realtime", "every_frame"])),
    "seed": usually(st.integers(-1, 2**33)), "weight": usually(st.floats(0, 2000)),
    "budget": usually(st.fixed_dictionaries({}, optional={
        "latency_ms": st.floats(-1, 4e6), "on_late": st.sampled_from(["publish", "drop"])})),
    "stall_timeout_s": usually(st.floats(0, 4000)),
    "max_reconnects": usually(st.integers(-1, 2 * 10**6)),
    "max_corrupt_frames": usually(st.integers(0, 2 * 10**6)),
    "max_pixels": usually(st.integers(0, 2**29)), "fourcc": usually(st.sampled_from(
        ["MJPG", "YUYV", "MJP"])),
    "threads": usually(st.integers(-1, 300)), "workers": usually(st.integers(-1, 70)),
    "batch": usually(st.integers(-1, 70)), "conf_threshold": usually(st.floats(0, 1.5)),
    "iou_threshold": usually(st.floats(0, 1.5)),
    "max_detections": usually(st.integers(0, 20000)),
    "classes": usually(st.lists(st.text(min_size=1, max_size=5), max_size=3)),
    "seg_classes": usually(st.lists(st.text(min_size=1, max_size=5), max_size=3)),
    "warmup_runs": usually(st.integers(-1, 200)),
    "preprocess": usually(st.fixed_dictionaries({}, optional={
        "input_w": sizes, "input_h": sizes, "resize": st.sampled_from(["letterbox", "stretch"]),
        "size": st.sampled_from(["fixed", "keep_ratio"]), "limit_side": sizes,
        "multiple": st.integers(0, 300)})),
}


def typed(key: str) -> st.SearchStrategy:
    return TYPED.get(key, values)


CAMERA_KEYS = ["source", "type", "enabled", "fps", "width", "height", "fourcc", "loop",
               "mode", "seed", "weight", "max_fps", "budget", "stall_timeout_s",
               "max_reconnects", "max_corrupt_frames", "max_pixels", "frame_id"]
MODEL_KEYS = ["format", "providers", "threads", "workers", "batch", "conf_threshold",
              "iou_threshold", "max_detections", "classes", "seg_classes", "class_groups",
              "mask_threshold", "layout", "mask_mode", "output_values", "preprocess",
              "warmup_runs", "stuck_after_s", "ladder"]
camera = st.fixed_dictionaries({"source": usually(st.just("synthetic"))},
                               optional={k: typed(k) for k in CAMERA_KEYS[1:]})
documents = st.fixed_dictionaries(
    {"model": st.fixed_dictionaries({"path": st.just("m.onnx")},
                                    optional={k: typed(k) for k in MODEL_KEYS}),
     "cameras": st.dictionaries(st.sampled_from(["a", "b", "_x", "a/b"]), camera,
                                min_size=1, max_size=2)},
    optional={"camera_defaults": st.fixed_dictionaries(
                  {}, optional={k: typed(k) for k in CAMERA_KEYS[1:4]}),
              "budget": section(["latency_ms", "on_late"]),
              "publish": section(["endpoints", "mask_encoding", "sndhwm", "insecure"]),
              "log": section(["level", "stats_interval_s", "metrics"]),
              "view": section(["listen", "fps", "token", "quality"]),
              "record": section(["dir", "frames", "quality", "max_mb", "rotate_mb",
                                 "trigger", "before_s", "after_s", "buffer_mb"])})


def check_logic(text: str) -> None:
    """`edged check` up to the model load: parse, then what it derives from the config
    (the pixel bound, the worker plan, the warm-up sizes)."""
    from edged.capture.readers.images import limit_image_decoding
    from edged.daemon.models import plan, warmup_sizes

    try:
        cfg = parse_config(text, file="fuzz.yaml", env={"A": "x"}, int8_class="x86-avx2",
                           sections=SECTIONS)
    except ConfigError as e:
        assert error_message(e) is not None and str(e)
        return
    limit_image_decoding(max(c.max_pixels for c in cfg.cameras.values()))
    plan(cfg, cores=2)
    for w, h in warmup_sizes(cfg):
        assert 0 < w * h <= max(c.max_pixels for c in cfg.cameras.values())


@FUZZ
@given(documents)
def test_fuzz_config_documents_give_config_errors_only(doc):
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    check_logic(text)


# --------------------------------------------------------------------------- manifests


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return yoeo_model(tmp_path_factory.mktemp("fuzz") / "m.onnx")


MANIFEST_KEYS = ["manifest_version", "name", "input_name", "outputs", "preprocess",
                 "classes", "seg_classes", "class_groups", "conf_threshold", "iou_threshold",
                 "max_detections", "multi_label", "extra", "options", "quantization",
                 "session"]
PRE_KEYS = ["input_w", "input_h", "color", "resize", "align", "pad_value", "scale", "mean",
            "std", "interpolation", "size", "limit_side", "limit_type", "multiple"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | texts, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
manifests = st.fixed_dictionaries(
    {"format": st.sampled_from(["yoeo", "yolo", "semantic", "detr", "x"]) | json_values},
    optional={**{k: json_values for k in MANIFEST_KEYS},
              "preprocess": st.dictionaries(st.sampled_from(PRE_KEYS), json_values,
                                            max_size=4),
              "options": st.dictionaries(st.sampled_from(
                  ["mask_threshold", "layout", "mask_mode", "output_values", "priors",
                   "variances"]), json_values, max_size=3),
              "outputs": st.dictionaries(st.sampled_from(["detections", "segmentation",
                                                          "boxes"]),
                                         st.sampled_from(["Detections", "Segmentations"])
                                         | json_values, max_size=2)})


GOOD = {"format": "yoeo", "input_name": "InputLayer",
        "outputs": {"detections": "Detections", "segmentation": "Segmentations"},
        "classes": ["ball", "goalpost", "robot"], "seg_classes": ["bg", "lines", "field"],
        "preprocess": {"input_w": 416, "input_h": 416}}
# a working manifest with one or two keys changed: gets past the schema to the graph
# checks, the format's adapter and a frame
near_good = st.builds(lambda a, b: {**GOOD, **a, **b},
                      manifests.map(lambda d: dict(list(d.items())[:1])),
                      st.fixed_dictionaries({}, optional={
                          "conf_threshold": st.floats(0, 1), "max_detections": st.integers(1, 5),
                          "preprocess": st.fixed_dictionaries({
                              "input_w": st.sampled_from([8, 32, 416, 8192]),
                              "input_h": st.sampled_from([8, 416]),
                              "size": st.sampled_from(["fixed", "keep_ratio"])}),
                          "options": st.dictionaries(st.sampled_from(
                              ["mask_threshold", "layout", "mask_mode", "priors"]),
                              st.floats(0.01, 0.99) | texts, max_size=2)}))


@FUZZ
@given(manifests | near_good)
def test_fuzz_manifest_documents_give_model_errors_only(fuzz_model, tmp_path_factory, doc):
    from edged.inference.runner import ModelError, ModelOptions, ModelRunner
    from edged.results import Frame

    where = tmp_path_factory.mktemp("m")
    model = where / "m.onnx"
    shutil.copyfile(fuzz_model, model)
    model.with_suffix(".json").write_text(json.dumps(doc))
    try:
        runner = ModelRunner(ModelOptions(path=model, threads=1))
        runner.warmup(1, (64, 48))  # as check and run do: a frame that fails is said here
        runner.infer(Frame("a", 0, np.zeros((48, 64, 3), np.uint8), 0, 0))
    except ModelError as e:
        assert error_message(e) is not None and str(e).startswith(str(where)), e
    finally:
        shutil.rmtree(where, ignore_errors=True)


# --------------------------------------------------------------------------- wire


def _valid_messages() -> list[list[bytes]]:
    from edged.results import Detections, Letterbox, Result

    res = make_result(mask=regions_mask())
    inst = Result(**{**{f: getattr(res, f) for f in res.__slots__},  # type: ignore[attr-defined]
                     "detections": Detections(
                         np.array([[10, 10, 20, 30]], np.float32), np.array([0.9], np.float32),
                         np.array([1], np.int32), [np.ones((20, 10), np.uint8)]),
                     "letterbox": Letterbox.fit(640, 480, 416, 416)})
    return [[bytes(f) for f in encode_result(res, MaskEncoder(enc))]
            for enc in ("raw", "zstd", "png")] + [
        [bytes(f) for f in encode_result(inst, MaskEncoder("zstd"))],
        [bytes(f) for f in encode_eos("cam1", 7, "stopped")]]


VALID = _valid_messages()


def _mutate_header(header: bytes, path: list[str], value: object) -> bytes | None:
    h = msgpack.unpackb(header, raw=False)
    node = h
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if not isinstance(node, dict):
        return None
    node[path[-1]] = value
    try:
        return msgpack.packb(h, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None


header_paths = st.sampled_from([
    ["v"], ["type"], ["camera"], ["seq"], ["t_capture_ns"], ["frame"], ["frame", "w"],
    ["frame", "h"], ["boxes"], ["scores"], ["class_ids"], ["classes"], ["mask"],
    ["mask", "w"], ["mask", "h"], ["mask", "encoding"], ["mask", "classes"], ["letterbox"],
    ["instances"], ["timing_ms"], ["flags"], ["last_seq"], ["reason"], ["model"]])
wire_values = st.none() | st.booleans() | numbers | texts | st.binary(max_size=16) | st.lists(
    numbers | texts, max_size=4) | st.dictionaries(texts, numbers, max_size=3)


def _check_decoded(frames: list[bytes]) -> None:
    try:
        out = decode(frames)
    except ProtocolError:
        return
    assert isinstance(out, Message | EndOfStream)
    if isinstance(out, Message):  # what it accepts is what the protocol allows
        assert np.isfinite(out.boxes).all() and np.isfinite(out.scores).all()
        assert len(out.boxes) == len(out.scores) == len(out.class_ids)
        if out.mask is not None:
            assert out.mask.ndim == 2 and out.mask.size > 0


@FUZZ
@given(st.integers(0, len(VALID) - 1), header_paths, wire_values)
def test_fuzz_wire_headers_with_a_mutated_value_raise_protocol_errors_only(which, path, value):
    frames = list(VALID[which])
    header = _mutate_header(frames[1], path, value)
    if header is not None:
        frames[1] = header
        _check_decoded(frames)


@FUZZ
@given(st.integers(0, len(VALID) - 1), st.data())
def test_fuzz_wire_bytes_flipped_or_cut_raise_protocol_errors_only(which, data):
    frames = list(VALID[which])
    i = data.draw(st.integers(0, len(frames) - 1))
    part = bytearray(frames[i])
    if part and data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            part[data.draw(st.integers(0, len(part) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        part = part[:data.draw(st.integers(0, len(part)))]
    frames[i] = bytes(part)
    if data.draw(st.booleans()):
        frames = frames[:data.draw(st.integers(0, len(frames)))]
    _check_decoded(frames)


# --------------------------------------------------------------------------- recordings


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from recordings import write_recording

    path = tmp_path_factory.mktemp("rec") / "r.mcap"
    write_recording(path, n=40)
    return path.read_bytes()


@FUZZ
@given(st.data())
def test_fuzz_mutated_recordings_replay_or_give_record_errors_only(recording, tmp_path_factory,
                                                                   data):
    """What `edged replay` reads of a damaged file (bytes flipped, cut, or a piece
    repeated): its messages in order, or a RecordError naming the file."""
    from edged.outputs.record import RecordError
    from edged.outputs.record.replay import _guarded, _indexed, recover

    blob = bytearray(recording)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "cut", "repeat"]))
        if not blob:
            break
        at = data.draw(st.integers(0, len(blob) - 1))
        if kind == "flip":
            blob[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del blob[at:]
        else:
            blob[at:at] = blob[at:at + data.draw(st.integers(1, 64))]
    path = tmp_path_factory.mktemp("m") / "x.mcap"
    path.write_bytes(bytes(blob))
    with open(path, "rb") as fh:
        try:
            messages = _indexed(fh)
            if messages is None:
                found, rec = recover(fh, path)
                assert rec.messages == len(found) and rec.good_bytes <= rec.size
                assert [t for t, *_ in found] == sorted(t for t, *_ in found)
            else:
                for t, encoding, _schema, payload in _guarded(messages, path):
                    assert isinstance(t, int) and isinstance(payload, bytes | memoryview)
                    assert encoding == "edged.multipart"
        except RecordError as e:
            assert str(e).startswith(f"{path}: "), e
