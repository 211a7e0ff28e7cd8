"""The config layer: real YAML files in, typed config or located errors out."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pydantic
import pytest

import edged
from edged.app import SECTIONS
from edged.config import (
    NO_VALUE,
    BudgetConfig,
    CameraConfig,
    Config,
    ConfigError,
    ConfigIssue,
    ProviderSpec,
    PublishConfig,
    Section,
    builtin_variant,
    config_class,
    default_config_path,
    load_config,
    parse_config,
)
from edged.inference.cpu import int8_numerics, validated_class
from edged.outputs.record.settings import RecordConfig
from edged.outputs.ros2.settings import Ros2Config
from edged.outputs.view.settings import ViewConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ENV = {"CAM_USER": "viewer", "CAM_PASSWORD": "p@ss: #{x}!"}

MINIMAL = """\
model:
  path: model.onnx
cameras:
  front:
    source: synthetic
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of the file containing needle."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def issues_of(path: Path, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, sections=SECTIONS)
    return info.value.issues


def only_issue(path: Path, env: dict[str, str] | None = None) -> ConfigIssue:
    issues = issues_of(path, env)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


# --------------------------------------------------------------------------- valid files

def test_builtin_yoeo_demo_picks_the_variant_validated_for_the_cpu_class() -> None:
    models = Path(edged.__file__).parent / "models"

    def pick(int8_class: str) -> str:
        text = "model:\n  path: builtin:yoeo-demo\ncameras:\n  a:\n    source: synthetic\n"
        return parse_config(text, int8_class=int8_class).model.path.name

    def validated(name: str) -> str | None:
        q = json.loads((models / name).with_suffix(".json").read_text()).get("quantization")
        return validated_class(q) if q else None

    for cls in ("x86-vnni", "x86-amx", "x86-avx2", "x86-avx512", "x86", "arm-dotprod"):
        chosen = pick(cls)
        got = validated(chosen)
        # int8 validated on a class with the same kernel numerics, or fp32 where none is
        assert got is None or int8_numerics(got) == int8_numerics(cls), (cls, chosen, got)
        if got is None:
            assert not any(
                (models / f).is_file() and validated(f)
                and int8_numerics(validated(f) or "") == int8_numerics(cls)
                for f in json.loads((models / "variants.json").read_text())["yoeo-demo"])
    assert pick("x86-vnni") == "yoeo-demo-int8.onnx"
    assert pick("x86-avx2") == pick("x86-avx512") == "yoeo-demo-int8-avx2.onnx"
    assert pick("riscv") == "yoeo-demo-fp32.onnx"  # no rule for the class: the float model
    with pytest.raises(ConfigError) as e:
        parse_config("model:\n  path: builtin:yoeo-dem\ncameras:\n  a:\n    source: synthetic\n")
    assert "no packaged variant set named 'yoeo-dem' (there is builtin:yoeo-demo)" in str(e.value)


def test_packaged_default_parses() -> None:
    config = load_config()
    assert config.source_file == default_config_path().absolute()
    # builtin:yoeo-demo: the variant for this CPU's int8 class
    assert config.model.path == builtin_variant("yoeo-demo")
    assert config.model.path.parent == Path(edged.__file__).parent / "models"
    assert config.model.format == "yoeo"
    assert config.model.threads == 0
    assert config.model.providers == [ProviderSpec(name="cpu", options={})]
    assert list(config.cameras) == ["synthetic"]
    cam = config.cameras["synthetic"]
    assert (cam.source, cam.width, cam.height, cam.fps, cam.seed) == ("synthetic", 640, 480, 15, 0)
    assert cam.resolved_type() == "synthetic"
    assert cam.resolved_mode() == "realtime"
    assert config.publish.endpoints == ["tcp://127.0.0.1:5555"]
    assert config.publish.mask_encoding == "zstd"


def test_repo_default_is_the_packaged_default() -> None:
    assert (REPO / "configs" / "default.yaml").read_bytes() == default_config_path().read_bytes()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    config = load_config(path, env=EXAMPLE_ENV)
    assert config.cameras
    assert config.source_file == path.absolute()


def test_examples_are_the_promised_ones() -> None:
    env = EXAMPLE_ENV
    usb = load_config(REPO / "configs" / "usb-camera.yaml", env=env).cameras["usb"]
    assert (usb.resolved_type(), usb.width, usb.height, usb.fps, usb.fourcc) == (
        "v4l2", 640, 480, 30, "MJPG")

    rtsp = load_config(REPO / "configs" / "rtsp-two-cameras.yaml", env=env)
    assert len(rtsp.cameras) == 2
    for cam in rtsp.cameras.values():
        # The password's YAML-special characters survive: substitution follows parsing.
        assert cam.source.startswith("rtsp://viewer:p@ss: #{x}!@192.0.2.")
        assert cam.resolved_type() == "url"

    replay = load_config(REPO / "configs" / "video-replay.yaml", env=env)
    cam = replay.cameras["replay"]
    assert (cam.resolved_type(), cam.resolved_mode(), cam.loop) == ("video", "every_frame", False)
    assert any(e.startswith("ipc://") for e in replay.publish.endpoints)


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    m = config.model
    assert (m.format, m.threads, m.conf_threshold, m.iou_threshold) == ("auto", 0, None, None)
    assert (m.max_detections, m.warmup_runs, m.classes, m.class_groups) == (None, 3, None, None)
    assert m.providers == [ProviderSpec(name="cpu")]
    cam = config.cameras["front"]
    assert (cam.type, cam.enabled, cam.fps, cam.width, cam.height, cam.fourcc) == (
        "auto", True, None, None, None, None)
    assert (cam.loop, cam.mode, cam.seed, cam.weight, cam.max_fps) == (True, "auto", 0, 1.0, None)
    assert cam.budget == config.budget == BudgetConfig(latency_ms=250.0, on_late="publish")
    p = config.publish
    assert (p.endpoints, p.mask_encoding, p.zstd_level, p.send_masks, p.sndhwm) == (
        ["tcp://127.0.0.1:5555"], "zstd", 1, True, 8)
    assert (config.log.level, config.log.stats_interval_s) == ("info", 5.0)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(pydantic.ValidationError):
        config.cameras["front"].fps = 3  # type: ignore[misc]


def test_providers_names_and_options(tmp_path: Path) -> None:
    providers = "[{tensorrt: {fp16: true}}, {cuda: {device_id: 1}}, CPU]"
    text = MINIMAL.replace("model.onnx\n", f"model.onnx\n  providers: {providers}\n")
    path = write(tmp_path, text)
    assert load_config(path).model.providers == [
        ProviderSpec(name="tensorrt", options={"fp16": True}),
        ProviderSpec(name="cuda", options={"device_id": 1}),
        ProviderSpec(name="cpu"),
    ]


def test_scalar_conveniences(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model:
          path: m.onnx
        cameras:
          cam0:
            source: 0          # a V4L2 index, kept as text
        log:
          level: DEBUG
    """)
    config = load_config(path)
    assert config.cameras["cam0"].source == "0"
    assert config.cameras["cam0"].resolved_type() == "v4l2"
    assert config.log.level == "debug"


def test_yaml_merge_keys_and_anchors(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model: {path: m.onnx}
        cameras:
          a: &base
            source: synthetic
            fps: 10
          b:
            <<: *base
            fps: 20
    """)
    cams = load_config(path).cameras
    assert (cams["a"].fps, cams["b"].fps, cams["b"].source) == (10, 20, "synthetic")


# --------------------------------------------------------------------------- env substitution

def test_env_substitution_default_and_escape(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model:
          path: ${MODEL_DIR}/m.onnx
        cameras:
          gate:
            source: "rtsp://${CAM_USER}:${CAM_PASSWORD}@host:${PORT:-554}/s"
            fps: ${FPS:-12.5}
          literal:
            source: video-$${NOT_A_VAR}-${EMPTY:-x}.mp4
    """)
    env = {"MODEL_DIR": "/opt/models", "CAM_USER": "u", "CAM_PASSWORD": "a'b\"c: [d], #e",
           "EMPTY": ""}
    config = load_config(path, env=env)
    assert config.model.path == Path("/opt/models/m.onnx")
    assert config.cameras["gate"].source == "rtsp://u:a'b\"c: [d], #e@host:554/s"
    assert config.cameras["gate"].fps == 12.5  # substituted text still validates as a number
    # $${ escapes; an empty variable takes the :- default, as in the shell.
    assert config.cameras["literal"].source == "video-${NOT_A_VAR}-x.mp4"


def test_env_defaults_to_process_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGED_TEST_SOURCE", "synthetic")
    path = write(tmp_path, MINIMAL.replace("source: synthetic", "source: ${EDGED_TEST_SOURCE}"))
    assert load_config(path).cameras["front"].source == "synthetic"


def test_unset_env_var_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace(
        "source: synthetic", "source: rtsp://${CAM_USER}:${CAM_PASSWORD}@host/s"))
    issue = only_issue(path, env={"CAM_USER": "u"})
    assert (issue.file, issue.line, issue.path) == (str(path), 5, "cameras.front.source")
    assert "CAM_PASSWORD" in issue.message and "not set" in issue.message
    assert issue.value == "rtsp://${CAM_USER}:${CAM_PASSWORD}@host/s"


def test_malformed_reference(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("source: synthetic", "source: ${1BAD}"))
    issue = only_issue(path)
    assert issue.path == "cameras.front.source" and "malformed" in issue.message


def test_errors_show_the_text_as_written_not_the_secret(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'publish:\n  endpoints: ["udp://${SECRET}@x"]\n')
    issue = only_issue(path, env={"SECRET": "hunter2"})
    assert issue.path == "publish.endpoints[0]"
    assert issue.value == "udp://${SECRET}@x"
    assert "hunter2" not in str(issue)


# --------------------------------------------------------------------------- camera defaults

def test_camera_defaults_merge_key_by_key(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model: {path: m.onnx}
        budget:
          latency_ms: 300
          on_late: drop
        camera_defaults:
          fps: 10
          width: 320
          budget:
            latency_ms: 100
        cameras:
          a:
            source: synthetic
            fps: 25
          b:
            source: synthetic
            budget:
              on_late: publish
          c:
            source: synthetic
            budget:
              latency_ms: 50
    """)
    config = load_config(path)
    a, b, c = (config.cameras[n] for n in "abc")
    assert (a.fps, a.width, b.fps, b.width) == (25, 320, 10, 320)
    assert a.budget == BudgetConfig(latency_ms=100, on_late="drop")
    assert b.budget == BudgetConfig(latency_ms=100, on_late="publish")
    assert c.budget == BudgetConfig(latency_ms=50, on_late="drop")
    assert config.budget == BudgetConfig(latency_ms=300, on_late="drop")


def test_global_budget_reaches_cameras_without_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "budget:\n  on_late: drop\n")
    assert load_config(path).cameras["front"].budget == BudgetConfig(on_late="drop")


def test_bad_default_is_reported_once_at_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model: {path: m.onnx}
        camera_defaults:
          fps: -3
        cameras:
          a: {source: synthetic}
          b: {source: synthetic}
    """)
    issue = only_issue(path)
    assert (issue.line, issue.path, issue.value) == (3, "camera_defaults.fps", -3)


def test_camera_defaults_cannot_set_source(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "camera_defaults:\n  source: synthetic\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (7, "camera_defaults.source")


def test_restart_keys_default_inherit_and_reach_the_capture_policy(tmp_path: Path) -> None:
    from edged.capture.base import RestartPolicy

    path = write(tmp_path, """\
        model: {path: m.onnx}
        camera_defaults:
          stall_timeout_s: 2.5
          max_reconnects: 20
        cameras:
          a: {source: synthetic}
          b: {source: synthetic, stall_timeout_s: 8, max_corrupt_frames: 3}
          c: {source: "http://cam/x.mjpg", max_reconnects: null}
    """)
    cams = load_config(path).cameras
    a, b, c = cams["a"], cams["b"], cams["c"]
    assert (a.stall_timeout_s, a.max_reconnects, a.max_corrupt_frames) == (2.5, 20, 10)
    assert (b.stall_timeout_s, b.max_reconnects, b.max_corrupt_frames) == (8, 20, 3)
    assert c.max_reconnects is None  # explicitly unlimited again
    plain = CameraConfig(source="synthetic")
    assert (plain.stall_timeout_s, plain.max_reconnects, plain.max_corrupt_frames) == \
        (5.0, None, 10)
    assert RestartPolicy.from_camera(b) == RestartPolicy(stall_timeout_s=8, max_reconnects=20,
                                                         max_corrupt_frames=3)


@pytest.mark.parametrize("key, value", [("stall_timeout_s", "0"), ("stall_timeout_s", "soon"),
                                        ("max_reconnects", "-1"), ("max_corrupt_frames", "0")])
def test_bad_restart_keys_are_located(tmp_path: Path, key: str, value: str) -> None:
    path = write(tmp_path, MINIMAL + f"    {key}: {value}\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (6, f"cameras.front.{key}"), str(issue)


# --------------------------------------------------------------------------- located errors

def test_unknown_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    fsp: 15\n")
    issue = only_issue(path)
    assert str(issue) == f"{path}:6: cameras.front.fsp: unknown key; did you mean 'fps'? (got 15)"


def test_unknown_section_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "publsh:\n  sndhwm: 2\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (6, "publsh")
    assert "did you mean 'publish'?" in issue.message


def test_unknown_section_lists_the_output_sections(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, MINIMAL + "vieww:\n  fps: 2\n"))
    assert (issue.line, issue.path) == (6, "vieww")
    assert issue.message == "unknown key; did you mean 'view'?"
    issue = only_issue(write(tmp_path, MINIMAL + "zzz: 1\n"))
    assert issue.message == (
        "unknown key; expected one of 'model', 'camera_defaults', 'cameras', 'publish', "
        "'budget', 'log', 'tracking', 'view', 'foxglove', 'record', 'ros2'")
    # without the outputs' sections (the loader is handed them) a file has the core ones
    with pytest.raises(ConfigError) as e:
        parse_config(MINIMAL + "view:\n  fps: 2\n")
    assert str(e.value) == ("<string>:6: view: unknown key; expected one of 'model', "
                            "'camera_defaults', 'cameras', 'publish', 'budget', 'log', "
                            "'tracking' (got {'fps': 2})")


def test_output_sections_are_validated_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "view:\n  fps: 0\n  quality: 70\n"
                 "record:\n  dir: rec\n  formt: mcap\n")
    issues = issues_of(path)
    assert [(i.line, i.path) for i in issues] == [(7, "view.fps"), (11, "record.formt")], \
        [str(i) for i in issues]
    assert issues[0].message == "Input should be greater than 0"
    assert issues[1].message == "unknown key; did you mean 'format'?"
    # a section's own rule across its fields
    issue = only_issue(write(tmp_path, MINIMAL + "record:\n  dir: rec\n  rotate_mb: 50\n"
                             "  max_mb: 10\n"))
    assert (issue.line, issue.path) == (6, "record")
    assert issue.message == "record.rotate_mb (50) is more than record.max_mb (10): one " \
        "file could not fit"
    # a section's rule about the rest of the file (Section.check_with): ros2's camera names
    issue = only_issue(write(tmp_path, MINIMAL.replace("front:", "front-1:") + "ros2: {}\n"))
    assert (issue.line, issue.path) == (None, "")
    assert issue.message.startswith("camera 'front-1': with ros2 on, each camera name is "
                                    "part of its ROS 2 topics")


def test_output_sections_are_typed_and_off_when_absent(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "view:\n  fps: 2\nrecord: {dir: rec}\n"),
                         sections=SECTIONS)
    view = config.section(ViewConfig)
    assert isinstance(view, ViewConfig) and view.fps == 2.0 and view.listen == "127.0.0.1:8080"
    record = config.section(RecordConfig)
    assert record is not None and record.dir == Path("rec")
    assert config.section(Ros2Config) is None  # not in the file: off
    assert config.section(type(config.publish)) is config.publish  # the core's section
    assert load_config(write(tmp_path, MINIMAL)).section(ViewConfig) is None  # not given


def test_config_class_refuses_bad_sections() -> None:
    assert config_class({}) is Config
    assert config_class(SECTIONS) is config_class(dict(SECTIONS))  # one class per set
    with pytest.raises(ValueError, match="output section 'publish'"):
        config_class({"publish": ViewConfig})
    with pytest.raises(ValueError, match="a model of its own"):
        config_class({"view": ViewConfig, "view2": ViewConfig})
    with pytest.raises(ValueError, match="a model of its own"):
        config_class({"zmq": PublishConfig})  # publish is a core section already

    class NotASection(pydantic.BaseModel):
        x: int = 0

    with pytest.raises(ValueError, match="is not a Section model"):
        config_class({"extra": NotASection})  # type: ignore[dict-item]
    assert issubclass(ViewConfig, Section)


def test_unknown_key_without_close_match_lists_the_keys(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "budget:\n  zzz: 1\n")
    issue = only_issue(path)
    assert issue.path == "budget.zzz"
    assert "'latency_ms', 'on_late'" in issue.message


def test_source_file_is_not_a_file_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "source_file: x.yaml\n")
    assert only_issue(path).path == "source_file"


# Each case: a mistake appended to/replacing part of MINIMAL, the text on the line the error
# must point at, its key path, a fragment of the message and the reported value.
ERROR_CASES = [
    pytest.param("    fps: -3\n", "fps: -3", "cameras.front.fps", "greater than 0", -3,
                 id="negative-fps"),
    pytest.param("    fps: fast\n", "fps: fast", "cameras.front.fps", "valid number", "fast",
                 id="wrong-type"),
    pytest.param("    enabled: maybe\n", "enabled", "cameras.front.enabled", "valid boolean",
                 "maybe", id="not-a-bool"),
    pytest.param("    width: true\n", "width", "cameras.front.width", "not true/false", True,
                 id="bool-as-number"),
    pytest.param("    fourcc: MJPEG\n", "fourcc", "cameras.front.fourcc", "exactly 4", "MJPEG",
                 id="fourcc-length"),
    pytest.param("    type: webcam\n", "type", "cameras.front.type", "'v4l2'", "webcam",
                 id="bad-source-type"),
    pytest.param("    budget: {latency_ms: 0}\n", "budget", "cameras.front.budget.latency_ms",
                 "greater than 0", 0, id="camera-budget"),
    pytest.param("    source: ''\n", "source: ''", "cameras.front.source", "empty", "",
                 id="empty-source"),
    pytest.param("publish:\n  mask_encoding: lz5\n", "lz5", "publish.mask_encoding",
                 "'raw', 'zstd' or 'png'", "lz5", id="bad-enum"),
    pytest.param("publish:\n  mask_encoding: zsdt\n", "zsdt", "publish.mask_encoding",
                 "did you mean 'zstd'?", "zsdt", id="enum-suggestion"),
    pytest.param("publish:\n  endpoints:\n    - tcp://127.0.0.1:5555\n    - udp://1.2.3.4:9\n",
                 "udp://", "publish.endpoints[1]", "tcp://, ipc:// or inproc://",
                 "udp://1.2.3.4:9", id="endpoint-scheme"),
    pytest.param("publish:\n  endpoints: ['tcp://']\n", "endpoints", "publish.endpoints[0]",
                 "no address", "tcp://", id="endpoint-without-address"),
    pytest.param("publish:\n  endpoints: []\n", "endpoints", "publish.endpoints",
                 "at least 1", [], id="no-endpoints"),
    pytest.param("publish:\n  zstd_level: 23\n", "zstd_level", "publish.zstd_level",
                 "less than or equal to 22", 23, id="zstd-level"),
    pytest.param("log:\n  level: loud\n", "level", "log.level", "'debug'", "loud",
                 id="log-level"),
    pytest.param("budget:\n  on_late: later\n", "on_late", "budget.on_late", "'drop'",
                 "later", id="on-late"),
]


@pytest.mark.parametrize(("extra", "needle", "key_path", "fragment", "value"), ERROR_CASES)
def test_located_errors(tmp_path: Path, extra: str, needle: str, key_path: str,
                        fragment: str, value: object) -> None:
    text = MINIMAL.replace("    source: synthetic\n", "") if "source:" in extra else MINIMAL
    path = write(tmp_path, text + extra)
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.path) == (str(path), line_of(path, needle), key_path)
    assert fragment in issue.message
    assert issue.value == value
    assert str(issue).startswith(f"{path}:{issue.line}: {key_path}: ")


MODEL_CASES = [
    pytest.param("  conf_threshold: 1.5\n", "conf_threshold", "model.conf_threshold",
                 "less than or equal to 1", 1.5, id="out-of-range"),
    pytest.param("  iou_threshold: 0\n", "iou_threshold", "model.iou_threshold",
                 "greater than 0", 0, id="zero-iou"),
    pytest.param("  threads: -1\n", "threads", "model.threads", "greater than or equal to 0",
                 -1, id="threads"),
    # "yolo" itself became a format; a near miss still gets the suggestion
    pytest.param("  format: yolo_seg\n", "format", "model.format", "did you mean 'yolo-seg'?",
                 "yolo_seg", id="format"),
    pytest.param("  providers: [cpu, cdua]\n", "providers", "model.providers[1]",
                 "did you mean 'cuda'?", "cdua", id="provider-name"),
    pytest.param("  providers:\n    - cuda: {device_id: [0]}\n", "cuda", "model.providers[0]",
                 "cuda option 'device_id'", {"cuda": {"device_id": [0]}},
                 id="provider-options"),
    pytest.param("  providers:\n    - cuda: 0\n", "cuda", "model.providers[0]",
                 "cuda options must be a mapping", {"cuda": 0}, id="provider-options-type"),
    pytest.param("  providers:\n    - {cuda: {}, cpu: {}}\n", "cuda", "model.providers[0]",
                 "one-key mapping", {"cuda": {}, "cpu": {}}, id="provider-two-keys"),
    pytest.param("  classes: person\n", "classes", "model.classes", "valid list", "person",
                 id="classes-not-list"),
    pytest.param("  path: builtin:../secret.onnx\n", "builtin:", "model.path", "builtin:<file",
                 "builtin:../secret.onnx", id="builtin-escape"),
]


@pytest.mark.parametrize(("extra", "needle", "key_path", "fragment", "value"), MODEL_CASES)
def test_located_model_errors(tmp_path: Path, extra: str, needle: str, key_path: str,
                              fragment: str, value: object) -> None:
    text = MINIMAL.replace("  path: model.onnx\n", "" if "path:" in extra else "  path: m\n")
    path = write(tmp_path, text.replace("model:\n", "model:\n" + extra))
    issue = only_issue(path)
    assert (issue.line, issue.path) == (line_of(path, needle), key_path)
    assert fragment in issue.message
    assert issue.value == value


def test_missing_cameras_section(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  path: m.onnx\n")
    issue = only_issue(path)
    assert (issue.line, issue.path, issue.value) == (None, "cameras", NO_VALUE)
    assert str(issue) == f"{path}: cameras: required key is missing"


def test_camera_without_source(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  path: m.onnx\ncameras:\n  front:\n    fps: 5\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (4, "cameras.front.source")
    assert issue.message == "required key is missing"
    assert "(got" not in str(issue)


def test_empty_camera_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  path: m.onnx\ncameras:\n  front:\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (4, "cameras.front.source")


def test_no_cameras(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  path: m.onnx\ncameras: {}\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (3, "cameras")
    assert "at least one camera" in issue.message


def test_missing_model_path(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("  path: model.onnx\n", "  threads: 1\n"))
    issue = only_issue(path)
    assert (issue.line, issue.path) == (1, "model.path")


def test_bad_camera_name(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "  front door:\n    source: synthetic\n")
    issue = only_issue(path)
    assert (issue.line, issue.path, issue.value) == (6, "cameras.front door", "front door")
    assert "ZeroMQ topic" in issue.message


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    source: /dev/video0\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (6, "cameras.front.source")
    assert "duplicate key (first given on line 5)" in issue.message


def test_duplicate_camera(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "  front:\n    source: synthetic\n")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (6, "cameras.front")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    fps: 15: 20\n")
    issue = only_issue(path)
    assert (issue.line, issue.column) == (6, len("    fps: 15:"))
    assert "mapping values are not allowed here" in issue.message
    assert str(issue).startswith(f"{path}:6:{issue.column}: YAML syntax error: ")


def test_unclosed_flow_sequence(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "publish:\n  endpoints: [tcp://a:1\nlog: {}\n")
    issue = only_issue(path)
    assert issue.line is not None and issue.column is not None
    assert "flow sequence" in issue.message


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("# only a comment\n", "empty"),
    ("- model\n- cameras\n", "not a list"),
    ("just text\n", "must be a mapping"),
])
def test_empty_or_non_mapping_file(tmp_path: Path, text: str, fragment: str) -> None:
    issue = only_issue(write(tmp_path, text))
    assert fragment in issue.message


def test_unreadable_file(tmp_path: Path) -> None:
    issue = only_issue(tmp_path / "missing.yaml")
    assert "cannot read" in issue.message


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model:
          path: m.onnx
          conf_threshold: 1.5
        cameras:
          front:
            source: synthetic
            fsp: 15
          back:
            fps: 5
        publish:
          mask_encoding: lz5
          endpoints: [udp://x:1]
    """)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    got = [(i.line, i.path) for i in info.value.issues]
    assert got == [
        (3, "model.conf_threshold"),
        (7, "cameras.front.fsp"),
        (8, "cameras.back.source"),
        (11, "publish.mask_encoding"),
        (12, "publish.endpoints[0]"),
    ]
    lines = str(info.value).splitlines()
    assert lines == [str(i) for i in info.value.issues]


def test_parse_config_names_the_given_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("model: {path: m}\ncameras: {a: {source: synthetic, fps: 0}}\n",
                     file="inline.yaml")
    assert str(info.value).startswith("inline.yaml:2: cameras.a.fps: ")


# --------------------------------------------------------------------------- model paths

def test_relative_model_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write(tmp_path, MINIMAL.replace("model.onnx", "../models/m.onnx"), "sub/cfg.yaml")
    assert load_config(path).model.path == tmp_path / "models" / "m.onnx"


def test_absolute_and_builtin_model_paths(tmp_path: Path) -> None:
    absolute = write(tmp_path, MINIMAL.replace("model.onnx", "/opt/m.onnx"))
    assert load_config(absolute).model.path == Path("/opt/m.onnx")
    builtin = write(tmp_path, MINIMAL.replace("model.onnx", "builtin:x.onnx"), "b.yaml")
    assert load_config(builtin).model.path == Path(edged.__file__).parent / "models" / "x.onnx"


def test_parse_config_resolves_against_base_dir(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.model.path == tmp_path / "model.onnx"
    assert config.source_file is None


# --------------------------------------------------------------------------- source types

@pytest.mark.parametrize(("source", "expected"), [
    ("synthetic", "synthetic"),
    ("0", "v4l2"),
    ("12", "v4l2"),
    ("/dev/video2", "v4l2"),
    ("rtsp://u:p!w@cam/stream", "url"),  # "!" in a password is not a GStreamer pipeline
    ("rtsps://cam/stream", "url"),
    ("http://cam/mjpg", "url"),
    ("HTTPS://cam/mjpg", "url"),
    ("udp://@:5000", "url"),
    ("videotestsrc ! videoconvert ! appsink", "gstreamer"),
    ("v4l2src!appsink", "gstreamer"),
    ("frames/*.png", "images"),
    ("shot_??.jpg", "images"),
    ("frame[0-9].bmp", "images"),
    ("still.JPG", "images"),
    ("scan.tiff", "images"),
    ("pic.webp", "images"),
    ("match.mp4", "video"),
    ("recordings/match.mkv", "video"),
    ("file:///tmp/x.avi", "video"),
])
def test_resolved_type_inference(source: str, expected: str) -> None:
    assert CameraConfig(source=source).resolved_type() == expected


def test_existing_directory_is_images(tmp_path: Path) -> None:
    assert CameraConfig(source=str(tmp_path)).resolved_type() == "images"
    assert CameraConfig(source=str(tmp_path / "nope")).resolved_type() == "video"


def test_explicit_type_wins() -> None:
    assert CameraConfig(source="synthetic", type="video").resolved_type() == "video"
    assert CameraConfig(source="rtsp://x", type="gstreamer").resolved_type() == "gstreamer"


@pytest.mark.parametrize(("source", "mode", "expected"), [
    ("match.mp4", "auto", "every_frame"),
    ("frames/*.png", "auto", "every_frame"),
    ("synthetic", "auto", "realtime"),
    ("/dev/video0", "auto", "realtime"),
    ("rtsp://cam/s", "auto", "realtime"),
    ("a ! b", "auto", "realtime"),
    ("match.mp4", "realtime", "realtime"),
    ("rtsp://cam/s", "every_frame", "every_frame"),
])
def test_resolved_mode(source: str, mode: str, expected: str) -> None:
    assert CameraConfig(source=source, mode=mode).resolved_mode() == expected  # type: ignore[arg-type]


def test_config_type_is_exported() -> None:
    core = {"model", "cameras", "publish", "budget", "log", "tracking", "source_file",
            "secrets"}
    assert Config.model_fields.keys() == core
    assert config_class(SECTIONS).model_fields.keys() == core | {"view", "foxglove", "record",
                                                                 "ros2"}


def test_tracking_is_global_and_merged_per_camera() -> None:
    config = parse_config("""
model: {path: m.onnx}
tracking: {classes: [ball], lost_timeout_s: 3}
camera_defaults: {tracking: {min_hits: 3}}
cameras:
  a: {source: synthetic}
  b: {source: synthetic, tracking: {enabled: false}}
""")
    a, b = config.cameras["a"].tracking, config.cameras["b"].tracking
    assert (a.enabled, a.classes, a.lost_timeout_s, a.min_hits) == (True, ("ball",), 3.0, 3)
    assert (b.enabled, b.classes, b.lost_timeout_s) == (False, ("ball",), 3.0)
    assert config.tracking.min_hits == 2  # camera_defaults reach the cameras only
    assert parse_config(MINIMAL).cameras["front"].tracking.enabled  # on by default
    with pytest.raises(ConfigError) as e:
        parse_config(MINIMAL + "tracking:\n  min_hit: 3\n")
    assert "<string>:" in str(e.value) and "tracking.min_hit: unknown key; did you mean " \
        "'min_hits'?" in str(e.value)


def test_too_many_cameras_is_a_config_error(tmp_path: Path) -> None:
    from edged.config import MAX_CAMERAS

    cams = "".join(f"  c{i}:\n    source: synthetic\n" for i in range(MAX_CAMERAS + 1))
    path = write(tmp_path, f"model:\n  path: m.onnx\ncameras:\n{cams}")
    issue = only_issue(path)
    assert (issue.line, issue.path) == (3, "cameras")
    assert f"{MAX_CAMERAS + 1} enabled cameras" in issue.message
    assert f"MAX_CAMERAS = {MAX_CAMERAS}" in issue.message
    # disabled cameras do not count
    disabled = cams.replace("  c0:\n    source: synthetic\n",
                            "  c0:\n    source: synthetic\n    enabled: false\n")
    ok = write(tmp_path, f"model:\n  path: m.onnx\ncameras:\n{disabled}")
    assert len(load_config(ok).cameras) == MAX_CAMERAS + 1


# --------------------------------------------------------------------------- one source of truth

ENDPOINT_CASES = [
    pytest.param("tcp://127.0.0.1:0", "explicit port", id="port-0"),
    pytest.param("tcp://127.0.0.1:70000", "out of range (1-65535)", id="port-70000"),
    pytest.param("tcp://127.0.0.1:65536", "out of range (1-65535)", id="port-65536"),
    pytest.param("tcp://*:*", "explicit port", id="wildcard-port"),
    pytest.param("tcp://127.0.0.1", "port is missing", id="no-port"),
    pytest.param("tcp://127.0.0.1:55x", "not a number", id="port-not-number"),
    pytest.param("tcp://:5555", "host is missing", id="no-host"),
    pytest.param("tcp://::1:5555", "IPv6 address in brackets", id="ipv6-no-brackets"),
    pytest.param("udp://127.0.0.1:5555", "must start with tcp://", id="scheme"),
    pytest.param("ipc://", "has no address", id="ipc-empty"),
    pytest.param("ipc:///run/" + "x" * 120, "at most 107", id="ipc-too-long"),
]


@pytest.mark.parametrize(("endpoint", "fragment"), ENDPOINT_CASES)
def test_endpoints_validated_with_the_publishers_parser(tmp_path: Path, endpoint: str,
                                                        fragment: str) -> None:
    from edged.wire.publisher import Publisher, PublishError

    path = write(tmp_path, MINIMAL + "publish:\n  endpoints:\n    - inproc://first\n"
                 f"    - {endpoint}\n")
    issue = only_issue(path)
    assert (issue.line, issue.path, issue.value) == (line_of(path, endpoint),
                                                     "publish.endpoints[1]", endpoint)
    assert fragment in issue.message
    # the publisher refuses it with the same words, before touching a socket
    with pytest.raises(PublishError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Publisher([endpoint], linger_ms=0)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:1", "tcp://127.0.0.1:65535",
                                      "tcp://*:5555", "tcp://eth0:5555", "tcp://[::1]:5555",
                                      "tcp://localhost:5555", "ipc:///run/edged/pub.sock",
                                      "ipc://@edged", "inproc://x"])
def test_good_endpoints(endpoint: str) -> None:
    from edged.names import parse_endpoint

    # off loopback only with publish.insecure (or curve): tested below
    cfg = parse_config(MINIMAL + f"publish:\n  endpoints: ['{endpoint}']\n  insecure: true\n")
    assert cfg.publish.endpoints == [endpoint]
    assert parse_endpoint(endpoint).scheme == endpoint.split(":")[0]


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5555",
                                      "tcp://eth0:5555", "tcp://192.168.1.10:5555"])
def test_a_reachable_endpoint_needs_curve_or_insecure(tmp_path: Path, endpoint: str) -> None:
    path = write(tmp_path, MINIMAL + f"publish:\n  endpoints: ['{endpoint}']\n")
    issue = only_issue(path)
    assert issue.path == "publish"
    assert "reachable from other machines and publish.curve is not set" in issue.message
    assert "publish.insecure: true" in issue.message
    with_curve = parse_config(MINIMAL + f"publish:\n  endpoints: ['{endpoint}']\n  curve:\n"
                              f"    secret_key_file: k/d.key_secret\n    clients_dir: c\n")
    assert with_curve.publish.curve is not None and with_curve.publish.exposed() == [endpoint]
    for local in ("tcp://127.0.0.1:5555", "tcp://[::1]:5555", "tcp://localhost:5555",
                  "ipc:///run/edged/p.sock"):
        assert parse_config(MINIMAL + f"publish:\n  endpoints: ['{local}']\n").publish \
            .exposed() == []


def test_duplicate_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "publish:\n  endpoints: [tcp://127.0.0.1:5555, "
                 "ipc:///tmp/x.sock, tcp://127.0.0.1:5555]\n")
    issue = only_issue(path)
    assert issue.path == "publish.endpoints"
    assert "listed twice (items 0 and 2)" in issue.message


BOUND_CASES = [
    pytest.param("publish:\n  sndhwm: 1000000000000\n", "sndhwm", "publish.sndhwm",
                 "less than or equal to 10000", id="sndhwm"),
    pytest.param("publish:\n  sndhwm: 1.0e+12\n", "sndhwm", "publish.sndhwm",
                 "less than or equal to 10000", id="sndhwm-float"),
    pytest.param("model:\n  path: m\n  threads: 1000\n", "threads", "model.threads",
                 "less than or equal to 256", id="threads"),
    pytest.param("model:\n  path: m\n  workers: 65\n", "workers", "model.workers",
                 "less than or equal to 64", id="workers"),
    pytest.param("model:\n  path: m\n  batch: 1000000000\n", "batch", "model.batch",
                 "less than or equal to 64", id="batch"),
    pytest.param("model:\n  path: m\n  warmup_runs: 100000\n", "warmup_runs",
                 "model.warmup_runs", "less than or equal to 100", id="warmup-runs"),
    pytest.param("model:\n  path: m\n  stuck_after_s: 1e9\n", "stuck_after_s",
                 "model.stuck_after_s", "less than or equal to 3600", id="stuck-after"),
    pytest.param("log:\n  stats_interval_s: 86400\n", "stats_interval_s",
                 "log.stats_interval_s", "less than or equal to 3600", id="stats-interval-max"),
    pytest.param("log:\n  stats_interval_s: 0.001\n", "stats_interval_s",
                 "log.stats_interval_s", "greater than or equal to 0.1", id="stats-interval-min"),
    pytest.param("log:\n  metrics: 127.0.0.1:0\n", "metrics", "log.metrics",
                 "explicit port", id="metrics-port-0"),
    pytest.param("log:\n  metrics: 127.0.0.1:70000\n", "metrics", "log.metrics",
                 "out of range (1-65535)", id="metrics-port-70000"),
    pytest.param("log:\n  metrics: '9464'\n", "metrics", "log.metrics",
                 "port is missing", id="metrics-no-host"),
]


@pytest.mark.parametrize(("extra", "needle", "key_path", "fragment"), BOUND_CASES)
def test_upper_bounds(tmp_path: Path, extra: str, needle: str, key_path: str,
                      fragment: str) -> None:
    text = MINIMAL.replace("model:\n  path: model.onnx\n", "") if "model:" in extra else MINIMAL
    path = write(tmp_path, text + extra)
    issue = only_issue(path)
    assert (issue.line, issue.path) == (line_of(path, needle), key_path)
    assert fragment in issue.message


@pytest.mark.parametrize("name", ["front", "cam-1", "a.b", "x_y", "0", "_stats", "_x", "a/b",
                                  "", "é", "a" * 64, "a" * 65, "-", ".", "a b"])
def test_camera_names_one_rule_for_config_and_codec(name: str) -> None:
    from edged.wire.codec import CAMERA_RE, check_camera, encode_eos

    assert CAMERA_RE is edged.config.CAMERA_NAME_RE
    try:
        parse_config(f"model:\n  path: m\ncameras:\n  '{name}':\n    source: synthetic\n")
        config_ok = True
    except ConfigError as e:
        assert "invalid camera name" in str(e)
        config_ok = False
    try:
        check_camera(name)
        encode_eos(name, 0, "end")
        codec_ok = True
    except ValueError:
        codec_ok = False
    assert config_ok == codec_ok
    assert config_ok == (name in ("front", "cam-1", "a.b", "x_y", "0", "a" * 64, "-", "."))


def test_registries_are_the_runtimes() -> None:
    from edged.config import KNOWN_PROVIDERS, known_formats
    from edged.inference.formats import FORMATS
    from edged.inference.providers import OPTION_ALIASES, PROVIDER_NAMES, PROVIDER_OPTIONS

    assert known_formats() == ("auto", *FORMATS)
    assert tuple(PROVIDER_NAMES) == KNOWN_PROVIDERS
    assert set(PROVIDER_OPTIONS) == set(PROVIDER_NAMES)
    assert all(set(a) <= PROVIDER_OPTIONS[p] for p, a in OPTION_ALIASES.items())
    for name in FORMATS:
        assert parse_config(MINIMAL.replace("model:\n", f"model:\n  format: {name}\n")
                            ).model.format == name


def test_config_import_stays_light() -> None:
    """Importing the config imports none of the runtime's heavy modules; parsing one that
    names a format reads the format registry, still without onnxruntime or zmq."""
    import subprocess
    import sys

    heavy = "sorted(m for m in ('onnxruntime', 'cv2', 'zmq', 'numpy') if m in sys.modules)"
    code = (f"import sys, edged.config as c; print({heavy}); "
            f"c.parse_config(open(sys.argv[1]).read()); print({heavy})")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "configs" / "default.yaml")],
                         capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "['cv2', 'numpy']"]


def test_nested_yaml_aliases_are_rejected_before_they_expand(tmp_path: Path) -> None:
    """A "billion laughs" file (nine levels of nine aliases: 9**9 values) is an error
    naming the cause, found after a bounded walk, not after gigabytes."""
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nmodel:\n  path: m.onnx\ncameras:\n  a:\n"
                    "    source: synthetic\n")
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert len(e.value.issues) == 1
    assert "the config expands to more than 100000 values (YAML aliases" in str(e.value)
    # aliases used a normal number of times are still fine
    ok = tmp_path / "ok.yaml"
    ok.write_text("model:\n  path: m.onnx\ncameras:\n  a: &cam\n    source: synthetic\n"
                  "  b: *cam\n")
    assert list(load_config(ok).cameras) == ["a", "b"]


def test_every_runner_option_is_a_model_key(tmp_path: Path) -> None:
    """The runner's options are built from the model section by name: each field but
    io_binding (the runner's test switch) is a key there, and every value arrives."""
    import dataclasses

    from edged.config import ModelConfig
    from edged.inference.runner import ModelOptions

    names = {f.name for f in dataclasses.fields(ModelOptions)} - {"io_binding"}
    assert names - set(ModelConfig.model_fields) == set()
    path = write(tmp_path, MINIMAL.replace("  path: model.onnx\n", """\
  path: model.onnx
  format: yolo
  providers: [{cpu: {}}]
  threads: 2
  conf_threshold: 0.4
  iou_threshold: 0.6
  max_detections: 50
  classes: [ball, robot]
  seg_classes: [field, line]
  class_groups: [[ball, robot]]
  warmup_runs: 1
  cache_dir: cache
"""))
    opts = load_config(path, env={}).model.runner_options()
    assert (opts.format, opts.providers, opts.threads, opts.conf_threshold,
            opts.iou_threshold, opts.max_detections) == ("yolo", (("cpu", {}),), 2, 0.4, 0.6, 50)
    assert (opts.classes, opts.seg_classes, opts.class_groups) == (
        ("ball", "robot"), ("field", "line"), (("ball", "robot"),))
    assert (opts.warmup_runs, opts.cache_dir, opts.path) == (
        1, tmp_path / "cache", tmp_path / "model.onnx")


def test_model_mask_layout_and_preprocess_keys(tmp_path: Path) -> None:
    """The keys that let a user serve a foreign export without writing a manifest reach
    the runner's options; a bad one is located like any other key."""
    path = write(tmp_path, MINIMAL.replace("  path: model.onnx\n", """\
  path: model.onnx
  mask_threshold: 0.3
  layout: end2end
  mask_mode: direct
  output_values: probability
  preprocess:
    color: bgr
    mean: [0.5, 0.5, 0.5]
    std: [0.5, 0.5, 0.5]
    size: keep_ratio
    limit_side: 736
    limit_type: min
"""))
    opts = load_config(path, env={}).model.runner_options()
    assert (opts.mask_threshold, opts.layout, opts.mask_mode, opts.output_values) == (
        0.3, "end2end", "direct", "probability")
    assert dict(opts.preprocess) == {"color": "bgr", "mean": (0.5, 0.5, 0.5),
                                     "std": (0.5, 0.5, 0.5), "size": "keep_ratio",
                                     "limit_side": 736, "limit_type": "min"}
    bad = write(tmp_path, MINIMAL.replace("  path: model.onnx\n", """\
  path: model.onnx
  preprocess:
    limit_typ: min
"""), "bad.yaml")
    issue = only_issue(bad)
    assert issue.path == "model.preprocess.limit_typ" and "did you mean 'limit_type'" in \
        issue.message
    assert only_issue(write(tmp_path, MINIMAL.replace(
        "  path: model.onnx\n", "  path: model.onnx\n  mask_threshold: 1.5\n"), "t.yaml")
    ).path == "model.mask_threshold"
