"""Fuzzing the two parsers that face outside input (hypothesis)."""

from __future__ import annotations

import contextlib

import msgpack
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.config import ConfigError, parse_config
from edged.wire.codec import EndOfStream, Message, ProtocolError, decode
from edged.wire.telemetry import (
    CameraState,
    ModelEvent,
    Stats,
    decode_model_event,
    decode_state,
    decode_stats,
)

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(
    max_size=20)
keys = st.sampled_from(["model", "cameras", "publish", "budget", "log", "camera_defaults",
                        "path", "source", "fps", "width", "endpoints", "mask_encoding",
                        "latency_ms", "on_late", "level", "providers", "threads", "front",
                        "type", "mode", "weight", "max_fps", "classes"]) | st.text(max_size=8)
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    keys, inner, max_size=5), max_leaves=25)


def assert_config_error_only(text: str) -> None:
    try:
        parse_config(text, file="fuzz.yaml", env={"A": "x"})
    except ConfigError as e:
        assert str(e)  # always says something
        for issue in e.issues:
            assert issue.file == "fuzz.yaml"


@SETTINGS
@given(trees)
def test_arbitrary_yaml_structures_give_config_errors_only(tree):
    assert_config_error_only(yaml.safe_dump(tree))


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text_gives_config_errors_only(text):
    assert_config_error_only(text)


@SETTINGS
@given(st.sampled_from(["model:\n  path: m.onnx\ncameras:\n  a:\n    source: synthetic\n",
                        "cameras:\n  a:\n    source: ${A:-x}\n    fps: 3\n"]),
       st.integers(0, 80), st.text(max_size=6))
def test_mutated_valid_configs_give_config_errors_only(base, pos, insert):
    pos = min(pos, len(base))
    assert_config_error_only(base[:pos] + insert + base[pos:])


frames = st.lists(st.binary(max_size=64), min_size=0, max_size=5)
headers = st.dictionaries(st.sampled_from(
    ["v", "type", "camera", "seq", "t_capture_ns", "t_publish_ns", "frame", "model", "classes",
     "boxes", "scores", "class_ids", "mask", "timing_ms", "flags", "reason", "instances"]),
    trees, max_size=12)


@SETTINGS
@given(frames)
def test_arbitrary_frames_never_crash_the_decoder(parts):
    try:
        out = decode(parts)
        assert isinstance(out, Message | EndOfStream)
    except ProtocolError:
        pass


@SETTINGS
@given(st.sampled_from([b"cam/result", b"cam/eos", b"x"]), headers,
       st.lists(st.binary(max_size=32), max_size=2))
def test_structured_garbage_headers_never_crash_the_decoder(topic, header, extra):
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    with contextlib.suppress(ProtocolError):
        decode([topic, packed, *extra])


@SETTINGS
@given(headers)
def test_stats_decoder_rejects_garbage_cleanly(header):
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_stats([b"_stats", packed]), Stats)


def test_control_character_is_located():
    """Found by the fuzzer: PyYAML's reader raised outside the config error path."""
    import pytest

    with pytest.raises(ConfigError) as e:
        parse_config("model:\n  path: m.onnx\ncameras:\n  a:\n    source: syn\x1fthetic\n",
                     file="c.yaml")
    (issue,) = e.value.issues
    assert (issue.line, issue.column) == (5, 16)
    assert "character #x001f is not allowed" in str(e.value)


@SETTINGS
@given(headers, st.sampled_from([b"cam/state", b"x/state", b""]))
def test_state_decoder_rejects_garbage_cleanly(header, topic):
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_state([topic, packed]), CameraState)


@SETTINGS
@given(headers)
def test_model_event_decoder_rejects_garbage_cleanly(header):
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_model_event([b"_model", packed]), ModelEvent)


def test_model_event_round_trip():
    from edged.wire.telemetry import encode_model_event

    ev = decode_model_event(encode_model_event("int8", 1, "fp32", "35% missed"))
    assert (ev.variant, ev.rung, ev.previous, ev.reason) == ("int8", 1, "fp32", "35% missed")
    import pytest

    with pytest.raises(ProtocolError, match="model: expected 2 frames on '_model'"):
        decode_model_event([b"_stats", encode_model_event("a", 0, "b", "c")[1]])
