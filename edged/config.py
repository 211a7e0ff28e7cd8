"""The configuration layer: one YAML file, parsed once into typed, frozen pydantic models.

Loading runs in three steps, each kept separate so that every mistake can be traced back to
the line of the file that caused it:

1. ``_Reader`` composes the YAML into nodes and turns them into plain dicts/lists/scalars,
   recording the line of every key and list item (keyed by its path in the document),
   rejecting duplicate keys and substituting ``${VAR}`` in string scalars.
2. ``_merge_cameras`` applies ``camera_defaults`` and the global ``budget`` to each camera,
   remembering for every merged key which path of the document it came from.
3. pydantic validates the merged data; each of its errors is mapped back through those two
   tables to ``file:line: key.path: message (got value)``.

All problems found are collected and raised together as one ``ConfigError``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import ipaddress
import json
import os
import re
import stat
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edged.capture.defaults import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from edged.errors import UserError
from edged.inference.providers import PROVIDER_NAMES, PROVIDER_OPTIONS
from edged.names import CAMERA_NAME_RE, camera_name_problem, parse_endpoint, parse_host_port
from edged.redaction import Redactor
from edged.tracking.config import TrackingConfig

__all__ = [
    "CAMERA_NAME_RE",
    "KNOWN_PROVIDERS",
    "NO_VALUE",
    "BudgetConfig",
    "CameraConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "LogConfig",
    "ModelConfig",
    "ProviderSpec",
    "PublishConfig",
    "default_config_path",
    "known_formats",
    "load_config",
    "parse_config",
]

# The providers the runner can map to onnxruntime's (edged.inference.providers, a table
# without imports). The formats are `known_formats()`, read lazily (see there).
KNOWN_PROVIDERS: Final = tuple(PROVIDER_NAMES)
BUILTIN_PREFIX: Final = "builtin:"
BUILTIN_MODELS_DIR: Final = Path(__file__).parent / "models"
URL_SCHEMES: Final = frozenset({"rtsp", "rtsps", "http", "https", "udp"})
# Upper bounds where a larger value would hurt: onnxruntime and ZeroMQ take C ints (1e12
# overflows), and a huge thread count, queue or interval starves or stalls the daemon
# long before it does anything useful.
MAX_THREADS: Final = 256  # model.threads: intra-op threads per worker
MAX_WORKERS: Final = 64  # model.workers
MAX_BATCH: Final = 64  # model.batch
MAX_WARMUP_RUNS: Final = 100  # model.warmup_runs: each one delays READY
MAX_STUCK_AFTER_S: Final = 3600.0  # model.stuck_after_s
# publish.sndhwm: messages queued per subscriber; memory is about sndhwm x message size
# (a frame with its mask is up to a few hundred KB) for every subscriber
MAX_SNDHWM: Final = 10_000
MIN_STATS_INTERVAL_S: Final = 0.1  # log.stats_interval_s: each report costs a snapshot
MAX_STATS_INTERVAL_S: Final = 3600.0
# The sections a config file may have; `source_file` is a Config field but is set by the
# loader, never written in the file.
# Cameras one daemon serves (enabled ones; disabled ones cost nothing). Measured up to
# 100 synthetic cameras on 2 cores in docs/benchmarks.md ("Scale: many cameras"); far
# beyond it start-up and stop outgrow systemd's timeouts, so more is a config error.
MAX_CAMERAS: Final = 128
# Sizes of a camera (issue 29: a 100000 x 100000 synthetic camera passed validation and
# then died of a 28 GiB MemoryError in `check`, `run` and after a reload).
MAX_SIDE: Final = 16384  # width / height asked of any camera, in pixels
MAX_PIXELS_BOUND: Final = 1 << 28  # camera max_pixels: 268 Mpx, 805 MB a BGR frame
# the synthetic renderer needs ~1.5 GB and 3 s a frame at 8K: 4K UHD is its limit
MAX_SYNTHETIC_PIXELS: Final = 3840 * 2160
MAX_FPS: Final = 1000.0  # fps, max_fps: pacing of a frame every millisecond at most
MAX_SEED: Final = 2**32 - 1  # numpy's seed range
MAX_LATENCY_MS: Final = 3_600_000.0  # budget.latency_ms: an hour
MAX_DETECTIONS: Final = 10_000  # model.max_detections: per frame, after NMS
FILE_SECTIONS: Final = ("model", "camera_defaults", "cameras", "publish", "budget", "log",
                        "view", "foxglove", "record", "ros2")

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- errors


class _NoValue:
    """Marks an issue that has no offending value (a missing key, a YAML syntax error)."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Final = _NoValue()
_MAX_VALUE_REPR = 120  # a wrong-typed section can be large; the line number says where it is


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, located as precisely as the file allows."""

    file: str
    line: int | None  # 1-based; None when the problem has no place in the file (missing section)
    path: str  # dotted key path, list items as [i]: "publish.endpoints[1]"; "" for the file
    value: object  # the offending value, or NO_VALUE
    message: str
    column: int | None = None  # 1-based, only for YAML syntax errors
    # the values ${VAR} substitutions inserted: hidden, with URL credentials, wherever the
    # rendered value would show them (a list or map holding a substituted string)
    secrets: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.value is not NO_VALUE:
            try:
                shown = Redactor(self.secrets)(repr(self.value))
            except ValueError:  # an int of over 4300 digits (0x... in YAML) has no repr
                shown = "a number too long to show"
            if len(shown) > _MAX_VALUE_REPR:
                shown = shown[: _MAX_VALUE_REPR - 3] + "..."
            text += f" (got {shown})"
        return text


class ConfigError(UserError):
    """Raised with every issue found in a config file; str() lists them one per line."""

    prefix = "invalid configuration:\n"

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def _custom_error(kind: str, message: str) -> PydanticCustomError:
    # PydanticCustomError keeps our message verbatim, without pydantic's "Value error, " prefix.
    return PydanticCustomError(kind, message)


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"did you mean {by_lower[close[0]]!r}?"
    return "expected one of " + ", ".join(repr(c) for c in choices)


# --------------------------------------------------------------------------- registries

def known_formats() -> tuple[str, ...]:
    """"auto" and the formats of the runner's registry (edged.inference.formats.FORMATS).

    Imported on first use, not with this module: the registry's adapters pull in numpy
    and OpenCV, which reading a config does not otherwise need.
    """
    from edged.inference.formats import FORMATS

    return ("auto", *FORMATS)


# --------------------------------------------------------------------------- schema

def _not_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; in a config file that is always a slip.
    if isinstance(value, bool):
        raise _custom_error("bool_not_number", "expected a number, not true/false")
    return value


# Lax otherwise, on purpose: a ${VAR} substitution always yields a string, so "15" must be
# accepted where a number is expected.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


def _check_camera_name(name: str) -> str:
    # the codec's rule (edged.names): the name becomes the ZeroMQ topic
    problem = camera_name_problem(name)
    if problem is not None:
        raise _custom_error("camera_name", problem)
    return name


CameraName = Annotated[str, AfterValidator(_check_camera_name)]


def _check_endpoint(endpoint: str) -> str:
    # the publisher's own parser: what passes here, the publisher accepts
    try:
        parse_endpoint(endpoint)
    except ValueError as e:
        raise _custom_error("endpoint", str(e)) from None
    return endpoint


Endpoint = Annotated[str, AfterValidator(_check_endpoint)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _provider_name(name: object) -> str:
    if not isinstance(name, str):
        raise _custom_error("provider_name", "a provider name must be a string")
    lowered = name.lower()
    if lowered not in KNOWN_PROVIDERS:
        raise _custom_error(
            "provider_name", f"unknown provider; {_did_you_mean(name, KNOWN_PROVIDERS)}"
        )
    return lowered


class ProviderSpec(_Frozen):
    """An onnxruntime execution provider and its options, e.g. cuda with {device_id: 0}."""

    name: str
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        # The file writes `cpu` or `{cuda: {device_id: 0}}`; Python code may pass
        # name=/options= directly. Validating the name here puts an error on the list item.
        if isinstance(data, str):
            return {"name": _provider_name(data), "options": {}}
        if isinstance(data, dict):
            if "name" in data and set(data) <= {"name", "options"}:
                return data
            if len(data) == 1:
                ((name, options),) = data.items()
                name = _provider_name(name)
                options = {} if options is None else options
                return {"name": name, "options": _provider_options(name, options)}
        if isinstance(data, ProviderSpec):
            return data
        raise _custom_error(
            "provider",
            "a provider is a name like 'cpu' or a one-key mapping like {cuda: {device_id: 0}}",
        )

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return _provider_name(name)

    @field_validator("options", mode="before")
    @classmethod
    def _scalar_options(cls, options: Any, info: ValidationInfo) -> Any:
        return _provider_options(str(info.data.get("name", "provider")), options)


_CUDNN_SEARCH: Final = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


def _provider_options(name: str, options: object) -> object:
    # Checked up front so a bad option gives one clear error instead of one per union member.
    if not isinstance(options, dict):
        raise _custom_error("provider_options", f"{name} options must be a mapping")
    known = PROVIDER_OPTIONS.get(name)
    for key, value in options.items():
        if not isinstance(value, str | int | float | bool):
            raise _custom_error(
                "provider_options", f"{name} option {key!r} must be a string, number or true/false"
            )
        if known is not None and key not in known:
            raise _custom_error(
                "provider_options",
                f"unknown {name} option {key!r}; {_did_you_mean(str(key), sorted(known))}",
            )
        if key == "cudnn_conv_algo_search" and value not in _CUDNN_SEARCH:
            raise _custom_error(
                "provider_options",
                f"cudnn_conv_algo_search must be one of {', '.join(_CUDNN_SEARCH)}",
            )
    return options


def _model_path(value: Any, info: ValidationInfo) -> Any:
    """A model path as written -> absolute (builtin: -> the packaged models)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        return value  # let pydantic report the type error
    if not value.strip():
        raise _custom_error("model_path", "the model path is empty")
    if value.startswith(BUILTIN_PREFIX):
        name = value[len(BUILTIN_PREFIX):]
        # A bare file name only: builtin: must not reach outside the package.
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise _custom_error(
                "model_path", "write builtin:<file name>, e.g. builtin:yoeo-demo-int8.onnx"
            )
        if "." not in name:  # a variant set: the file validated for this CPU's int8 class
            return builtin_variant(name, (info.context or {}).get("int8_class"))
        return BUILTIN_MODELS_DIR / name
    return _config_path(value, info)


def builtin_variant(name: str, int8_class: str | None = None) -> Path:
    """The packaged model file of variant set `name` (models/variants.json) for a CPU of
    `int8_class` (default: this machine's): the first file whose manifest says it was
    validated on that class, else on a class whose kernels compute the same integers,
    else the first without a quantization record (fp32)."""
    from edged.inference.cpu import detect, int8_numerics, validated_class

    try:
        sets = json.loads((BUILTIN_MODELS_DIR / "variants.json").read_text())
    except (OSError, ValueError):
        sets = {}
    files = sets.get(name) if isinstance(sets, dict) else None
    if not isinstance(files, list) or not files:
        known = ", ".join(f"builtin:{k}" for k in sets) if isinstance(sets, dict) else ""
        raise _custom_error(
            "model_path", f"no packaged variant set named {name!r}"
            + (f" (there is {known})" if known else "")
            + "; or write builtin:<file name>, e.g. builtin:yoeo-demo-int8.onnx")
    mine = int8_class or detect().int8_class
    classes: list[str | None] = []
    for file in files:
        try:
            manifest = json.loads((BUILTIN_MODELS_DIR / Path(file).with_suffix(".json").name)
                                  .read_text())
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or not (BUILTIN_MODELS_DIR / file).is_file():
            classes.append(None)  # not shipped in this build
            continue
        quantization = manifest.get("quantization")
        classes.append(validated_class(quantization) if quantization else "fp32")
    for want in (lambda c: c == mine,
                 lambda c: c not in (None, "fp32") and int8_numerics(mine) != "unknown"
                 and int8_numerics(c) == int8_numerics(mine),
                 lambda c: c == "fp32"):
        for file, cls in zip(files, classes, strict=True):
            if want(cls):
                return BUILTIN_MODELS_DIR / file
    raise _custom_error("model_path", f"builtin:{name} has no variant for int8 class {mine} "
                        "and no fp32 one")


def _config_path(value: str | Path, info: ValidationInfo) -> Path:
    """A path as written in the config -> absolute, relative ones from the config's folder."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
    # normpath, not resolve(): keep symlinks as the user wrote them, only drop "..".
    return Path(os.path.normpath(path.absolute()))


def _path_in_config(value: Any, info: ValidationInfo) -> Any:
    return _config_path(value, info) if isinstance(value, str | Path) else value


# a file or folder named in the config: relative ones from the config's folder
ConfigPath = Annotated[Path, BeforeValidator(_path_in_config)]


def _default_providers() -> list[ProviderSpec]:
    return [ProviderSpec(name="cpu")]


class VariantConfig(_Frozen):
    """One rung of the degradation ladder: another export of the model (int8, smaller input)."""

    path: Path
    name: str | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _resolve_path(cls, value: Any, info: ValidationInfo) -> Any:
        return _model_path(value, info)


class PreprocessConfig(_Frozen):
    """`model.preprocess`: set over the manifest's (or the graph's default) pre-processing,
    key by key; see edged.inference.preprocess.PreprocessSpec."""

    input_w: Int | None = Field(None, ge=8, le=8192)
    input_h: Int | None = Field(None, ge=8, le=8192)
    color: Literal["rgb", "bgr"] | None = None
    resize: Literal["letterbox", "stretch"] | None = None
    pad_value: Int | None = Field(None, ge=0, le=255)
    scale: Float | None = Field(None, gt=0)
    mean: list[Float] | None = Field(None, min_length=3, max_length=3)
    std: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=3, max_length=3)
    size: Literal["fixed", "keep_ratio"] | None = None
    limit_side: Int | None = Field(None, ge=8, le=8192)
    limit_type: Literal["max", "min"] | None = None
    multiple: Int | None = Field(None, ge=1, le=256)


class LadderConfig(_Frozen):
    """Fall back to cheaper variants when the latency budget is missed persistently."""

    variants: list[VariantConfig] = Field(min_length=1)  # after model.path, cheapest last
    down_after_s: Float = Field(2.0, gt=0, le=3600)  # misses this long -> one rung down
    up_after_s: Float = Field(10.0, gt=0, le=3600)  # headroom this long -> one rung back up
    miss_ratio: Float = Field(0.1, gt=0, lt=1)  # share of frames stale or late that is a miss
    headroom: Float = Field(0.7, gt=0, le=1)  # the rung above must fit this share of the budget


class ModelConfig(_Frozen):
    path: Path  # absolute after loading; the file is checked by `edged check`, not here
    format: str = "auto"
    providers: list[ProviderSpec] = Field(default_factory=_default_providers, min_length=1)
    threads: Int = Field(0, ge=0, le=MAX_THREADS)  # intra-op threads; 0 = the runner decides
    # inference workers running frames in parallel (each with `threads` intra-op threads);
    # 0 = chosen from the cores and the cameras (see edged.inference.runner.plan_workers)
    workers: Int = Field(0, ge=0, le=MAX_WORKERS)
    # frames from several cameras run as one batch: 0 = when measured faster (models with
    # a dynamic batch dimension), 1 = never, N = up to N frames
    batch: Int = Field(0, ge=0, le=MAX_BATCH)
    ladder: LadderConfig | None = None  # cheaper variants to fall back to under overload
    # None: the model manifest's value (its format's default for a model without one)
    conf_threshold: Float | None = Field(None, gt=0, le=1)
    iou_threshold: Float | None = Field(None, gt=0, le=1)
    max_detections: Int | None = Field(None, ge=1, le=MAX_DETECTIONS)
    classes: list[str] | None = None  # for models without a manifest
    seg_classes: list[str] | None = None
    class_groups: list[list[str]] | None = None  # classes suppressed together in NMS
    # instance/binary masks: a pixel is in where the probability > this (manifest option)
    mask_threshold: Float | None = Field(None, gt=0, lt=1)
    # YOLO: how the detections table reads when its shapes allow several readings
    layout: Literal["anchors_last", "rows", "end2end"] | None = None
    # YOLO-seg: "ultralytics" (its retina_masks rule, the default), "yolov5" (the yolov5
    # repository's, the default for its tables) or "direct" (one bilinear sample per
    # camera pixel: cheaper, masks differ at the edges)
    mask_mode: Literal["ultralytics", "yolov5", "direct"] | None = None
    # semantic one-channel float maps: what the values are, where the graph does not say
    output_values: Literal["probability", "logit", "class_ids"] | None = None
    preprocess: PreprocessConfig | None = None
    warmup_runs: Int = Field(3, ge=0, le=MAX_WARMUP_RUNS)
    # an inference running longer than this is reported and stops the systemd watchdog
    stuck_after_s: Float = Field(10.0, gt=0, le=MAX_STUCK_AFTER_S)
    # TensorRT engines / OpenVINO blobs; None: /var/cache/edged if writable, else
    # ~/.cache/edged (created at the first start that needs it)
    cache_dir: ConfigPath | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _resolve_path(cls, value: Any, info: ValidationInfo) -> Any:
        return _model_path(value, info)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value == "auto":
            return value  # without importing the registry
        known = known_formats()
        if value not in known:
            raise _custom_error("model_format", f"unknown format; {_did_you_mean(value, known)}")
        return value


class BudgetConfig(_Frozen):
    latency_ms: Float = Field(250.0, gt=0, le=MAX_LATENCY_MS)
    on_late: Literal["publish", "drop"] = "publish"


SourceType = Literal["auto", "synthetic", "video", "images", "v4l2", "url", "gstreamer"]
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class CameraConfig(_Frozen):
    source: str
    type: SourceType = "auto"
    enabled: bool = True
    # pacing for synthetic/images/video; requested for v4l2
    fps: Float | None = Field(None, gt=0, le=MAX_FPS)
    width: Int | None = Field(None, gt=0, le=MAX_SIDE)
    height: Int | None = Field(None, gt=0, le=MAX_SIDE)
    fourcc: str | None = None
    loop: bool = True  # files and folders: start again at the end instead of ending the stream
    mode: Literal["auto", "realtime", "every_frame"] = "auto"
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    weight: Float = Field(1.0, gt=0, le=1000)
    max_fps: Float | None = Field(None, gt=0, le=MAX_FPS)
    # After loading this is the global budget with camera_defaults' and the camera's own
    # keys merged over it.
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    # Live sources: no frame for this long while open (or an open that hangs for the
    # longer of twice this and 10 s) is a stall: the source is abandoned and reopened.
    stall_timeout_s: Float = Field(5.0, gt=0, le=3600)
    # Live sources: give up (state failed) after this many reconnects in a row without a
    # frame in between; none = retry forever with capped backoff.
    max_reconnects: Int | None = Field(None, ge=0, le=1_000_000)
    # Live sources: this many undecodable/malformed frames in a row restart the source.
    max_corrupt_frames: Int = Field(10, ge=1, le=1_000_000)
    # frames above this many pixels are skipped as corrupt (a 20000x20000 PNG in a folder
    # would cost 1.2 GB decoded); image files are measured from their header first
    max_pixels: Int = Field(DEFAULT_MAX_PIXELS, ge=1, le=MAX_PIXELS_BOUND)
    # rtsp:// cameras: how RTP travels. auto: over the RTSP connection (TCP) if the camera
    # allows it, else UDP (OpenCV's default); tcp or udp: only that (edged.capture.sources).
    # Other sources ignore it, so camera_defaults can set it for a mixed set of cameras.
    rtsp_transport: Literal["auto", "tcp", "udp"] = "auto"
    # header.frame_id of this camera's ROS 2 messages (live and in rosbag2 output); None:
    # the camera name
    frame_id: str | None = None
    # the global `tracking:` with camera_defaults' and the camera's own keys merged over it
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("source", mode="before")
    @classmethod
    def _source_text(cls, value: Any) -> Any:
        # `source: 0` is a V4L2 index; keep every source a string so there is one type to handle.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise _custom_error("camera_source", "the camera source is empty")
        return value

    @field_validator("fourcc")
    @classmethod
    def _fourcc_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 4:
            raise _custom_error("fourcc", "a FourCC is exactly 4 characters, e.g. MJPG")
        return value

    @model_validator(mode="after")
    def _frame_size(self) -> CameraConfig:
        synthetic = self.resolved_type() == "synthetic"
        if synthetic:  # its default size (edged.capture.sources.make_source)
            width, height = self.width or 640, self.height or 480
        elif self.width is None or self.height is None:
            return self
        else:
            width, height = self.width, self.height
        pixels = width * height
        if pixels > self.max_pixels:
            raise _custom_error(
                "frame_too_large", f"width x height is {width} x {height} = "
                f"{pixels} pixels, more than max_pixels ({self.max_pixels})")
        if synthetic and pixels > MAX_SYNTHETIC_PIXELS:
            raise _custom_error(
                "synthetic_too_large", f"a synthetic camera renders at most {MAX_SYNTHETIC_PIXELS} "
                f"pixels (3840 x 2160), not {width} x {height}")
        return self

    def resolved_type(self) -> str:
        """The source type, inferred from `source` when `type` is auto."""
        if self.type != "auto":
            return self.type
        source = self.source.strip()
        if source.lower() == "synthetic":
            return "synthetic"
        if source.isdigit() or source.startswith("/dev/video"):
            return "v4l2"
        # URLs before GStreamer: a password may contain "!".
        match = _URL_RE.match(source)
        if match and match.group(1).lower() in URL_SCHEMES:
            return "url"
        if "!" in source:
            return "gstreamer"
        if (
            any(ch in source for ch in "*?[")
            or Path(source).suffix.lower() in IMAGE_EXTENSIONS
            or Path(source).expanduser().is_dir()
        ):
            return "images"
        return "video"

    def resolved_mode(self) -> str:
        """realtime (drop stale frames) or every_frame (process them all)."""
        if self.mode != "auto":
            return self.mode
        return "every_frame" if self.resolved_type() in ("video", "images") else "realtime"


class CurveConfig(_Frozen):
    """`publish.curve`: encrypt every publish connection and admit only the subscribers
    whose public keys are in `clients_dir` (see edged.wire.curve; `edged keygen`)."""

    secret_key_file: ConfigPath  # the daemon's NAME.key_secret
    clients_dir: ConfigPath  # one NAME.key (public) per admitted subscriber; re-read on SIGHUP


class PublishConfig(_Frozen):
    curve: CurveConfig | None = None
    # publish unencrypted to anyone who reaches a non-loopback tcp endpoint (no CURVE):
    # only when said so, and warned about at every start
    insecure: bool = False
    # the cameras start once this many subscriptions have arrived (or wait_timeout_s has
    # passed): a lossless replay is then lossless at its subscribers too
    wait_for_subscribers: Int = Field(0, ge=0, le=1000)
    wait_timeout_s: Float = Field(30.0, gt=0, le=3600)
    # ipc socket files: created with this mode (octal text) and, if set, this group
    ipc_mode: str = "0600"
    ipc_group: str | None = None

    @field_validator("ipc_mode")
    @classmethod
    def _octal_mode(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise _custom_error("ipc_mode", "an octal file mode such as \"0600\" or \"0660\"")
        return value

    @property
    def ipc_mode_bits(self) -> int:
        return int(self.ipc_mode, 8)
    endpoints: list[Endpoint] = Field(
        default_factory=lambda: ["tcp://127.0.0.1:5555"], min_length=1
    )
    mask_encoding: Literal["raw", "zstd", "png"] = "zstd"
    zstd_level: Int = Field(1, ge=1, le=22)
    send_masks: bool = True
    sndhwm: Int = Field(8, ge=1, le=MAX_SNDHWM)

    @field_validator("endpoints")
    @classmethod
    def _distinct(cls, endpoints: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for i, ep in enumerate(endpoints):
            if ep in seen:
                raise _custom_error("endpoint_duplicate",
                                    f"{ep} is listed twice (items {seen[ep]} and {i}); "
                                    "an endpoint can be bound once")
            seen[ep] = i
        return endpoints

    def exposed(self) -> list[str]:
        """The tcp endpoints other machines can reach (not loopback)."""
        out = []
        for ep in self.endpoints:
            hp = parse_endpoint(ep).tcp
            if hp is not None and not is_loopback_host(hp.host):
                out.append(ep)
        return out

    def unencrypted_exposed(self) -> list[str]:
        """The exposed endpoints without CURVE (allowed only with `insecure`; warned
        about at every start)."""
        return self.exposed() if self.curve is None else []

    @model_validator(mode="after")
    def _curve_off_loopback(self) -> PublishConfig:
        exposed = self.unencrypted_exposed()
        if exposed and not self.insecure:
            raise _custom_error(
                "publish_needs_curve",
                f"{exposed[0]} is reachable from other machines and publish.curve is not "
                "set: anyone who reaches it would read every camera's results. Set "
                "publish.curve (keys from `edged keygen`), bind 127.0.0.1, or set "
                "publish.insecure: true to publish unencrypted on purpose")
        return self


class LogConfig(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval_s: Float = Field(5.0, ge=MIN_STATS_INTERVAL_S, le=MAX_STATS_INTERVAL_S)
    # Prometheus text endpoint "HOST:PORT" (e.g. "127.0.0.1:9464", "[::1]:9464"); None: off
    metrics: str | None = None

    @field_validator("metrics")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        # the parser edged.daemon.metrics binds with
        if value is not None:
            try:
                parse_host_port(value)
            except ValueError as e:
                raise _custom_error("metrics_address", str(e)) from None
        return value

    def metrics_exposed(self) -> bool:
        """Whether /metrics is reachable from other machines: allowed without a flag (a
        Prometheus server scrapes from elsewhere; it serves counters, never results,
        images or secrets), and warned about at every start and by `edged check`."""
        return self.metrics is not None and \
            not is_loopback_host(parse_host_port(self.metrics).host)

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # Case-insensitive, but an invalid level is reported as written.
        if isinstance(value, str) and value.lower() in ("debug", "info", "warning", "error"):
            return value.lower()
        return value


MIN_VIEW_TOKEN: Final = 16  # characters: a token is a password typed by nobody


def is_loopback_host(host: str) -> bool:
    """Whether a listen host reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to any interface


class TlsConfig(_Frozen):
    """`view.tls` / `foxglove.tls`: serve https / wss with this certificate, so that the
    view's token and every frame are encrypted off the robot (edged.outputs.base.listen)."""

    cert_file: ConfigPath  # PEM certificate (chain), the server's first
    key_file: ConfigPath  # PEM private key (PKCS#8, `openssl genpkey` writes it so)


class ViewConfig(_Frozen):
    """The live view in the browser (`edged[view]`); off unless the section is present."""

    listen: str = "127.0.0.1:8080"  # HOST:PORT; anything but loopback needs `token`
    fps: Float = Field(5.0, gt=0, le=30)  # per camera, the most a viewer is sent
    quality: Int = Field(70, ge=10, le=100)  # JPEG quality
    token: str | None = None  # asked for on the page and the stream when set
    max_viewers: Int = Field(8, ge=1, le=64)
    tls: TlsConfig | None = None  # https (and wss) instead of http

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        try:
            parse_host_port(value)  # the parser edged.outputs.base.listen binds with
        except ValueError as e:
            raise _custom_error("listen_address", str(e)) from None
        return value

    @field_validator("token")
    @classmethod
    def _token_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_VIEW_TOKEN:
            raise _custom_error("short_token", f"a view token needs at least {MIN_VIEW_TOKEN} "
                                "characters (e.g. from `openssl rand -hex 16`)")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ViewConfig:
        host = parse_host_port(self.listen).host
        if self.token is None and not is_loopback_host(host):
            raise _custom_error(
                "view_needs_token",
                f"view.listen {self.listen!r} is reachable from other machines: set "
                "view.token (e.g. token: ${EDGED_VIEW_TOKEN}) so that only those who have "
                "it can watch, or listen on 127.0.0.1")
        return self


class FoxgloveConfig(_Frozen):
    """Foxglove live (`edged[foxglove]`): a Foxglove WebSocket server in the daemon."""

    listen: str = "127.0.0.1:8765"  # HOST:PORT
    quality: Int = Field(80, ge=10, le=100)  # JPEG quality of the camera image channel
    # the Foxglove WebSocket protocol has no authentication: off loopback only on request
    allow_remote: bool = False
    tls: TlsConfig | None = None  # wss:// instead of ws:// (encryption, not authentication)
    # messages queued per client; a client that reads slower keeps the newest ones. The
    # worst case is this many of the largest message (a 720p mono8 mask: 0.9 MB): with 32
    # a stalled client cost +19 MB at 720p 30 fps, with foxglove-sdk's default (1024)
    # +274 MB (docs/benchmarks.md, "Foxglove clients")
    client_backlog: Int = Field(32, ge=1, le=100_000)

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        try:
            parse_host_port(value)
        except ValueError as e:
            raise _custom_error("listen_address", str(e)) from None
        return value

    @model_validator(mode="after")
    def _remote_on_request(self) -> FoxgloveConfig:
        if not self.allow_remote and not is_loopback_host(parse_host_port(self.listen).host):
            raise _custom_error(
                "foxglove_remote",
                f"foxglove.listen {self.listen!r} is reachable from other machines, and the "
                "Foxglove WebSocket protocol has no authentication: listen on 127.0.0.1 and "
                "tunnel (ssh -L 8765:127.0.0.1:8765 robot), or set foxglove.allow_remote: "
                "true on a trusted network")
        return self


class RecordConfig(_Frozen):
    """MCAP recording (`edged[record]`): everything, or a flight recorder of the seconds
    around a missed budget, a stall, a reconnect or a failed inference."""

    dir: Path
    # mcap: edged's files (Foxglove messages + the wire protocol); rosbag2: one ROS 2 bag
    # (MCAP storage) in a new directory, for `ros2 bag play`
    format: Literal["mcap", "rosbag2"] = "mcap"
    frames: bool = True  # the camera images (JPEG) too; results alone are much smaller
    quality: Int = Field(80, ge=10, le=100)
    max_mb: Float = Field(500.0, gt=0)  # edged's files in `dir`, oldest deleted past it
    rotate_mb: Float = Field(100.0, gt=0)  # a file is closed and a new one begun past it
    trigger: Literal["always", "on_miss"] = "always"
    before_s: Float = Field(10.0, ge=0, le=600)  # on_miss: kept in memory before the event
    after_s: Float = Field(5.0, ge=0, le=600)  # on_miss: written after the (last) event
    buffer_mb: Float = Field(64.0, gt=0, le=4096)  # on_miss: memory bound of that buffer

    @model_validator(mode="after")
    def _sizes(self) -> RecordConfig:
        if self.format == "rosbag2" and self.trigger != "always":
            raise _custom_error("rosbag_trigger",
                                "record.format rosbag2 records everything into one bag: "
                                "use trigger: always (the flight recorder writes mcap)")
        if self.rotate_mb > self.max_mb:
            raise _custom_error("rotate_over_max",
                                f"record.rotate_mb ({self.rotate_mb:g}) is more than "
                                f"record.max_mb ({self.max_mb:g}): one file could not fit")
        return self


ROS_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Ros2Config(_Frozen):
    """ROS 2 topics over DDS (`edged[ros2]`): Cyclone DDS in the daemon, no ROS runtime."""

    namespace: str = "edged"  # topics /<namespace>/<camera>/...; "" for /<camera>/...
    # the DDS domain; None: the ROS_DOMAIN_ID environment variable, else 0
    domain_id: Int | None = Field(None, ge=0, le=232)
    # a Cyclone DDS XML file (interfaces, multicast, unicast peers); None: CYCLONEDDS_URI,
    # else Cyclone's defaults
    cyclonedds_config: Path | None = None
    mask_color: bool = False  # also /<ns>/<camera>/mask_color (rgb8)
    image: bool = False  # also /<ns>/<camera>/image/compressed (JPEG)
    image_fps: Float = Field(5.0, gt=0, le=60)  # the most images per second per camera
    quality: Int = Field(80, ge=10, le=100)
    # samples each stream writer keeps for reliable readers' repairs (keep last N): with 1,
    # a 300 KB mask still being repaired is replaced by the next and lost
    # (memory: at most N samples per writer, N x 300 KB for a 640x480 raw mask); 10 is a
    # ROS 2 reader's default depth
    history_depth: Int = Field(10, ge=1, le=100)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        parts = value.strip("/").split("/") if value.strip("/") else []
        bad = [p for p in parts if not ROS_NAME_RE.fullmatch(p)]
        if bad:
            raise _custom_error("ros_name", f"{bad[0]!r} is not a ROS 2 name token: use "
                                "letters, digits and _, not starting with a digit")
        return "/".join(parts)

    @field_validator("cyclonedds_config")
    @classmethod
    def _xml_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = value if value.is_absolute() else \
            Path((info.context or {}).get("base_dir") or Path.cwd()) / value
        if not path.is_file():
            raise _custom_error("file_not_found", f"Cyclone DDS config not found: {path}")
        return path


class Config(_Frozen):
    model: ModelConfig
    cameras: dict[CameraName, CameraConfig]  # camera_defaults and budget already merged in
    publish: PublishConfig = Field(default_factory=PublishConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    view: ViewConfig | None = None  # the live view; None: off
    foxglove: FoxgloveConfig | None = None  # Foxglove live; None: off
    record: RecordConfig | None = None  # MCAP recording; None: off
    ros2: Ros2Config | None = None  # ROS 2 topics over DDS; None: off
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # merged into cameras
    source_file: Path | None = None  # None: parsed from a string
    # the values ${VAR} substitutions inserted (set by the loader, never in the file):
    # hidden in every output by `redactor()`
    secrets: frozenset[str] = Field(default_factory=frozenset, exclude=True, repr=False)

    def redactor(self) -> Redactor:
        """The redaction every rendering of a source or config value goes through."""
        return Redactor(self.secrets)

    @model_validator(mode="after")
    def _ros_camera_names(self) -> Config:
        if self.ros2 is not None:
            bad = [n for n, c in self.cameras.items() if c.enabled and not ROS_NAME_RE.fullmatch(n)]
            if bad:
                raise _custom_error(
                    "ros_camera_name",
                    f"camera {bad[0]!r}: with ros2 on, each camera name is part of its ROS 2 "
                    "topics (/<namespace>/<camera>/...), so it must be letters, digits and _, "
                    "not starting with a digit: rename the camera")
        return self

    @field_validator("cameras")
    @classmethod
    def _at_least_one(cls, cameras: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        if not cameras:
            raise _custom_error("no_cameras", "at least one camera is required")
        enabled = sum(c.enabled for c in cameras.values())
        if enabled > MAX_CAMERAS:
            raise _custom_error(
                "too_many_cameras",
                f"{enabled} enabled cameras; edged serves at most MAX_CAMERAS = {MAX_CAMERAS} "
                "per daemon (each is a capture thread, a publish queue share and, when "
                "synthetic, 15 to 35 MB of scene; see docs/benchmarks.md, \"Scale: many "
                "cameras\"): disable some (enabled: false) or run a second edged")
        return cameras


# --------------------------------------------------------------------------- YAML reading

# values a config may expand to; a 64-camera config with every option set is ~5,000
MAX_YAML_VALUES: Final = 100_000
# Nesting of mappings and lists: a real config is 5 deep (cameras.NAME.budget.latency_ms);
# PyYAML composes recursively, so thousands of levels would exhaust Python's stack.
MAX_YAML_DEPTH: Final = 64
# The config file is read up to this many bytes; a real one is a few KB, and reading
# without a bound lets `-c /dev/zero` (or a wrong file) take all the memory.
MAX_CONFIG_BYTES: Final = 1 << 20


class _LineLoader(yaml.SafeLoader):
    """Our own SafeLoader subclass, so nothing we do touches yaml.SafeLoader's tables."""

    file = "<string>"
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # bounded before PyYAML recurses into it: a located error, not a RecursionError
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError([ConfigIssue(
                    self.file, mark.line + 1, "", NO_VALUE,
                    f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep",
                    mark.column + 1)])
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_MERGE_TAG = "tag:yaml.org,2002:merge"
# `$${` is an escaped literal `${`; `${NAME}` / `${NAME:-default}`; any other `${` is malformed.
_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return f"the scalar {node.value!r}"


class _Reader:
    """Turns YAML text into plain data plus the line of every key path."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.lines: dict[Loc, int] = {}
        # path -> (text as written, text after ${VAR} substitution); error messages show the
        # text as written so a substituted password never ends up in a log.
        self.substituted: dict[Loc, tuple[str, str]] = {}
        # every value a ${VAR} put into the text: never shown anywhere (edged.redaction)
        self.inserted: set[str] = set()
        self.issues: list[ConfigIssue] = []
        # Paths whose ${VAR} could not be substituted: validating the raw text there would
        # only add a confusing follow-on error.
        self.unsubstituted: set[Loc] = set()
        self._active: set[int] = set()  # nodes being walked, to stop on recursive aliases
        self._walked = 0  # values expanded so far, aliases counted each time they are used

    def read(self, text: str) -> dict[str, Any]:
        try:
            # the reader rejects control characters already in its constructor
            loader = _LineLoader(text)
            loader.file = self.file
        except yaml.reader.ReaderError as err:
            line = text.count("\n", 0, err.position) + 1
            col = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
            raise ConfigError([ConfigIssue(
                self.file, line, "", NO_VALUE,
                f"YAML syntax error: character #x{err.character:04x} is not allowed in YAML",
                col)]) from None
        try:
            node = loader.get_single_node()
            if node is None:
                raise ConfigError([ConfigIssue(
                    self.file, None, "", NO_VALUE,
                    "the config file is empty; it needs at least 'model' and 'cameras'",
                )])
            if not isinstance(node, yaml.MappingNode):
                raise ConfigError([ConfigIssue(
                    self.file, node.start_mark.line + 1, "", NO_VALUE,
                    "the top level must be a mapping of sections (model, cameras, ...), "
                    f"not {_node_kind(node)}",
                )])
            return self._mapping(loader, node, ())
        except yaml.YAMLError as err:
            raise ConfigError([self._yaml_issue(err)]) from None
        finally:
            loader.dispose()

    def _yaml_issue(self, err: yaml.YAMLError) -> ConfigIssue:
        if isinstance(err, yaml.MarkedYAMLError):
            mark = err.problem_mark or err.context_mark
            message = "YAML syntax error: " + ", ".join(p for p in (err.context, err.problem) if p)
            if err.context_mark and mark and err.context_mark.line != mark.line:
                message += f" (the construct starts on line {err.context_mark.line + 1})"
            if mark:
                return ConfigIssue(self.file, mark.line + 1, "", NO_VALUE, message, mark.column + 1)
            return ConfigIssue(self.file, None, "", NO_VALUE, message)
        return ConfigIssue(self.file, None, "", NO_VALUE, f"YAML error: {err}")

    def _issue(self, loc: Loc, line: int | None, value: object, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, line, _format_loc(loc), value, message))

    def _walk(self, loader: _LineLoader, node: yaml.Node, loc: Loc) -> Any:
        self._walked += 1
        if self._walked > MAX_YAML_VALUES:
            # nested aliases ("billion laughs") expand exponentially: stop before the memory
            raise ConfigError([ConfigIssue(
                self.file, node.start_mark.line + 1, _format_loc(loc), NO_VALUE,
                f"the config expands to more than {MAX_YAML_VALUES} values (YAML aliases are "
                "expanded each time they are used): nested aliases? A real config has a few "
                "hundred")])
        if len(loc) > MAX_YAML_DEPTH:
            # aliases nest what each stayed within the bound when it was composed
            raise ConfigError([ConfigIssue(
                self.file, node.start_mark.line + 1, "", NO_VALUE,
                f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep (with "
                "YAML aliases expanded)")])
        if id(node) in self._active:
            self._issue(loc, node.start_mark.line + 1, NO_VALUE, "recursive YAML alias")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(loader, node, loc)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = item.start_mark.line + 1
                    items.append(self._walk(loader, item, (*loc, index)))
                return items
            try:
                value = loader.construct_object(node, deep=True)
            except ValueError as err:  # an int of over 4300 digits (int_max_str_digits)
                self._issue(loc, node.start_mark.line + 1, NO_VALUE, f"not a usable value: {err}")
                return None
            if isinstance(value, str):
                value = self._substitute(value, loc, node.start_mark.line + 1)
            return value
        finally:
            self._active.discard(id(node))

    def _mapping(self, loader: _LineLoader, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # YAML merge keys (`<<: *anchor`): merged keys first, the mapping's own keys override
        # them; earlier merge sources take precedence over later ones.
        sources: list[yaml.MappingNode] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            candidates = (value_node.value if isinstance(value_node, yaml.SequenceNode)
                          else [value_node])
            for candidate in candidates:
                if isinstance(candidate, yaml.MappingNode):
                    sources.append(candidate)
                else:
                    self._issue(loc, key_node.start_mark.line + 1, NO_VALUE,
                                "'<<' must merge a mapping or a list of mappings")
        for source in reversed(sources):
            result.update(self._walk(loader, source, loc) or {})
        first_line: dict[str, int] = {}
        for key_node, value_node in own:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(loc, line, NO_VALUE, "keys must be plain strings")
                continue
            # The key's text as written: `on:` or `1:` stay strings instead of YAML 1.1's
            # True or 1, so camera names and field names are always what the user typed.
            key = key_node.value
            if key in first_line:
                shown = value_node.value if isinstance(value_node, yaml.ScalarNode) else NO_VALUE
                self._issue((*loc, key), line, shown,
                            f"duplicate key (first given on line {first_line[key]})")
                continue
            first_line[key] = line
            if key in result:  # a value merged in by '<<' is replaced (only then: O(n) keys)
                _forget_below(self.lines, (*loc, key))
            self.lines[(*loc, key)] = line
            result[key] = self._walk(loader, value_node, (*loc, key))
        return result

    def _substitute(self, text: str, loc: Loc, line: int) -> str:
        if "$" not in text:
            return text
        problems: list[str] = []

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "$${":
                return "${"
            name = match.group(1)
            if name is None:
                problems.append(
                    "malformed variable reference: write ${NAME} or ${NAME:-default}, "
                    "or $${ for a literal '${'"
                )
                return token
            value = self.env.get(name)
            default = match.group(2)
            # Shell semantics for ':-': an empty variable also takes the default.
            if default is not None and not value:
                return default
            if value is None:
                problems.append(
                    f"environment variable {name} is not set "
                    f"(set it, or give a default: ${{{name}:-default}})"
                )
                return token
            self.inserted.add(value)
            return value

        result = _ENV_RE.sub(replace, text)
        for problem in dict.fromkeys(problems):
            self._issue(loc, line, text, problem)
        if problems:
            self.unsubstituted.add(loc)
        if result != text:
            self.substituted[loc] = (text, result)
        return result


def _forget_below(table: dict[Loc, Any], prefix: Loc) -> None:
    """Drop the entries for paths strictly inside `prefix` (its value was replaced)."""
    n = len(prefix)
    for loc in [loc for loc in table if len(loc) > n and loc[:n] == prefix]:
        del table[loc]


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


# --------------------------------------------------------------------------- merging

def _overlay(
    dst: dict[str, Any], dst_loc: Loc, src: Mapping[str, Any], src_loc: Loc,
    origin: dict[Loc, Loc],
) -> None:
    """Merge src over dst key by key (nested mappings too), recording where values came from."""
    for key, value in src.items():
        here = (*dst_loc, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _overlay(dst[key], here, value, (*src_loc, key), origin)
        else:
            _forget_below(origin, here)
            dst[key] = copy.deepcopy(value)
            origin[here] = (*src_loc, key)


def _merge_cameras(
    data: dict[str, Any], origin: dict[Loc, Loc], issue: Callable[[Loc, object, str], None]
) -> None:
    """Apply camera_defaults and the global budget and tracking to every camera, in place."""
    defaults = data.pop("camera_defaults", None)
    if defaults is None:
        defaults = {}
    elif not isinstance(defaults, dict):
        issue(("camera_defaults",), defaults, "camera_defaults must be a mapping of camera keys")
        defaults = {}
    elif "source" in defaults:
        issue(("camera_defaults", "source"), defaults["source"],
              "source cannot have a default; give each camera its own")
        defaults = {k: v for k, v in defaults.items() if k != "source"}

    cameras = data.get("cameras")
    if not isinstance(cameras, dict):
        return  # pydantic reports the wrong type
    shared = {k: data[k] for k in ("budget", "tracking") if isinstance(data.get(k), dict)}
    merged_cameras: dict[str, Any] = {}
    for name, camera in cameras.items():
        loc: Loc = ("cameras", name)
        origin[loc] = loc
        if camera is None:
            camera = {}  # `front:` alone: pydantic then reports the missing source
        if not isinstance(camera, dict):
            merged_cameras[name] = camera
            continue
        merged: dict[str, Any] = {}
        _overlay(merged, loc, shared, (), origin)
        _overlay(merged, loc, defaults, ("camera_defaults",), origin)
        _overlay(merged, loc, camera, loc, origin)
        merged_cameras[name] = merged
    data["cameras"] = merged_cameras


def _origin_of(loc: Loc, origin: Mapping[Loc, Loc]) -> Loc:
    for n in range(len(loc), 0, -1):
        source = origin.get(loc[:n])
        if source is not None:
            return source + loc[n:]
    return loc


def _line_of(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    for n in range(len(loc), 0, -1):
        line = lines.get(loc[:n])
        if line is not None:
            return line
    return None


# --------------------------------------------------------------------------- error mapping

def _strip_type(tp: Any) -> Any:
    """X from Annotated[X, ...] and from X | None."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _keys_at(loc: Loc) -> list[str]:
    """The keys allowed in the mapping at `loc` (validated data path), for suggestions."""
    if not loc:
        return list(FILE_SECTIONS)
    tp: Any = Config
    for part in loc:
        tp = _strip_type(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _strip_type(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _message(err: Mapping[str, Any], loc: Loc) -> str:
    kind = err["type"]
    message = str(err["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return f"unknown key; {_did_you_mean(str(loc[-1]), _keys_at(loc[:-1]))}"
    if kind == "literal_error" and isinstance(err.get("input"), str):
        # "Input should be 'raw', 'zstd' or 'png'" + a suggestion when one is close.
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(err["input"].lower(), choices, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return message
    return message.removeprefix("Value error, ")


# --------------------------------------------------------------------------- public API

def default_config_path() -> Path:
    """The default config packaged with edged: one synthetic camera and the demo model."""
    return Path(__file__).parent / "configs" / "default.yaml"


def parse_config(
    text: str, *, file: str = "<string>", base_dir: Path | None = None,
    env: Mapping[str, str] | None = None, int8_class: str | None = None,
) -> Config:
    """Parse config text; relative model paths are resolved against base_dir (default: cwd);
    a builtin variant set picks its file for int8_class (default: this machine's)."""
    return _parse(text, file=file, base_dir=base_dir, env=env, source_file=None,
                  int8_class=int8_class)


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                int8_class: str | None = None) -> Config:
    """Load a config file (default: the packaged default.yaml); env defaults to os.environ;
    a builtin variant set picks its file for int8_class (default: this machine's)."""
    file_path = default_config_path() if path is None else Path(path)

    def refuse(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(str(file_path), None, "", NO_VALUE, message)])

    try:
        # O_NONBLOCK: a named pipe with no writer opens at once (and reads as empty)
        # instead of blocking forever; reads block again below
        fd = os.open(file_path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        with open(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            # a regular file or a pipe (`-c <(generate)`); a device never ends (/dev/zero)
            # or waits for a person (/dev/tty)
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise refuse("not a regular file (a config is a YAML text file)")
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise refuse(f"the config file is larger than {MAX_CONFIG_BYTES} bytes "
                         "(1 MiB; a real one is a few KB): is it the right file?")
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([ConfigIssue(str(file_path), None, "", NO_VALUE,
                                       f"not a UTF-8 text file ({err.reason})")]) from None
    except OSError as err:
        raise ConfigError([ConfigIssue(str(file_path), None, "", NO_VALUE,
                                       f"cannot read the config file: {err.strerror or err}")]
                          ) from None
    absolute = file_path.expanduser().absolute()
    return _parse(text, file=str(file_path), base_dir=absolute.parent, env=env,
                  source_file=absolute, int8_class=int8_class)


def _parse(
    text: str, *, file: str, base_dir: Path | None, env: Mapping[str, str] | None,
    source_file: Path | None, int8_class: str | None = None,
) -> Config:
    reader = _Reader(file, os.environ if env is None else env)
    data = reader.read(text)
    issues = reader.issues

    def issue(loc: Loc, value: object, message: str) -> None:
        issues.append(ConfigIssue(file, _line_of(loc, reader.lines), _format_loc(loc), value,
                                  message))

    for key in ("source_file", "secrets"):  # Config fields set by the loader, not the file
        if key in data:
            issue((key,), data.pop(key), f"unknown key; {_did_you_mean(key, FILE_SECTIONS)}")
    origin: dict[Loc, Loc] = {}
    _merge_cameras(data, origin, issue)
    data["source_file"] = source_file

    config: Config | None = None
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir,
                                                      "int8_class": int8_class})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc: Loc = tuple(err["loc"])
            if loc[-1:] == ("[key]",):  # an invalid dict key: the error is about the key itself
                loc = loc[:-1]
            source = _origin_of(loc, origin)
            if source in reader.unsubstituted:
                continue
            value = NO_VALUE if err["type"] == "missing" else err.get("input", NO_VALUE)
            written = reader.substituted.get(source)
            if written is not None and value == written[1]:
                value = written[0]
            issue(source, value, _message(err, loc))

    secrets = tuple(sorted(reader.inserted))
    if issues:
        # A bad value in camera_defaults or the global budget fails once per camera; the
        # mapped issues are identical, so report each once, in file order.
        shown = [dataclasses.replace(i, secrets=secrets) for i in issues]
        unique = {str(i): i for i in shown}.values()
        raise ConfigError(sorted(unique, key=lambda i: (i.line or 0, i.column or 0, i.path)))
    assert config is not None
    return config.model_copy(update={"secrets": frozenset(secrets)})
