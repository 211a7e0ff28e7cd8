"""`model`: the model file (or a packaged one), its format, execution providers and their
options, the runner's overrides of its manifest, the pre-processing and the ladder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edged.config.errors import custom_error, did_you_mean
from edged.config.fields import ConfigPath, Float, Frozen, Int, config_path
from edged.inference.providers import PROVIDER_NAMES, PROVIDER_OPTIONS
from edged.inference.triton.config import TritonConfig

if TYPE_CHECKING:
    from edged.inference.runner import ModelOptions

# The providers the runner can map to onnxruntime's (edged.inference.providers, a table
# without imports). The formats are `known_formats()`, read lazily (see there).
KNOWN_PROVIDERS: Final = tuple(PROVIDER_NAMES)
BUILTIN_PREFIX: Final = "builtin:"
BUILTIN_MODELS_DIR: Final = Path(__file__).parents[1] / "models"
# Upper bounds where a larger value would hurt: onnxruntime takes C ints (1e12 overflows),
# and a huge thread count or warm-up stalls the daemon long before it does anything useful.
MAX_THREADS: Final = 256  # model.threads: intra-op threads per worker
MAX_WORKERS: Final = 64  # model.workers
MAX_BATCH: Final = 64  # model.batch
MAX_WARMUP_RUNS: Final = 100  # model.warmup_runs: each one delays READY
MAX_STUCK_AFTER_S: Final = 3600.0  # model.stuck_after_s
MAX_DETECTIONS: Final = 10_000  # model.max_detections: per frame, after NMS


def known_formats() -> tuple[str, ...]:
    """"auto" and the formats of the runner's registry (edged.inference.formats.FORMATS).

    Imported on first use, not with this module: the registry's adapters pull in numpy
    and OpenCV, which reading a config does not otherwise need.
    """
    from edged.inference.formats import FORMATS

    return ("auto", *FORMATS)


def _provider_name(name: object) -> str:
    if not isinstance(name, str):
        raise custom_error("provider_name", "a provider name must be a string")
    lowered = name.lower()
    if lowered not in KNOWN_PROVIDERS:
        raise custom_error(
            "provider_name", f"unknown provider; {did_you_mean(name, KNOWN_PROVIDERS)}"
        )
    return lowered


class ProviderSpec(Frozen):
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
        raise custom_error(
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
        raise custom_error("provider_options", f"{name} options must be a mapping")
    known = PROVIDER_OPTIONS.get(name)
    for key, value in options.items():
        if not isinstance(value, str | int | float | bool):
            raise custom_error(
                "provider_options", f"{name} option {key!r} must be a string, number or true/false"
            )
        if known is not None and key not in known:
            raise custom_error(
                "provider_options",
                f"unknown {name} option {key!r}; {did_you_mean(str(key), sorted(known))}",
            )
        if key == "cudnn_conv_algo_search" and value not in _CUDNN_SEARCH:
            raise custom_error(
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
        raise custom_error("model_path", "the model path is empty")
    if value.startswith(BUILTIN_PREFIX):
        name = value[len(BUILTIN_PREFIX):]
        # A bare file name only: builtin: must not reach outside the package.
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise custom_error(
                "model_path", "write builtin:<file name>, e.g. builtin:yoeo-demo-int8.onnx"
            )
        if "." not in name:  # a variant set: the file validated for this CPU's int8 class
            return builtin_variant(name, (info.context or {}).get("int8_class"))
        return BUILTIN_MODELS_DIR / name
    return config_path(value, info)


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
        raise custom_error(
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
    raise custom_error("model_path", f"builtin:{name} has no variant for int8 class {mine} "
                        "and no fp32 one")


def _default_providers() -> list[ProviderSpec]:
    return [ProviderSpec(name="cpu")]


class VariantConfig(Frozen):
    """One rung of the degradation ladder: another export of the model (int8, smaller input)."""

    path: Path
    name: str | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _resolve_path(cls, value: Any, info: ValidationInfo) -> Any:
        return _model_path(value, info)


class PreprocessConfig(Frozen):
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


class LadderConfig(Frozen):
    """Fall back to cheaper variants when the latency budget is missed persistently."""

    variants: list[VariantConfig] = Field(min_length=1)  # after model.path, cheapest last
    down_after_s: Float = Field(2.0, gt=0, le=3600)  # misses this long -> one rung down
    up_after_s: Float = Field(10.0, gt=0, le=3600)  # headroom this long -> one rung back up
    miss_ratio: Float = Field(0.1, gt=0, lt=1)  # share of frames stale or late that is a miss
    headroom: Float = Field(0.7, gt=0, le=1)  # the rung above must fit this share of the budget


class ModelConfig(Frozen):
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
    # run the model on a Triton server; the local session of `path` is the fallback
    triton: TritonConfig | None = None
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
            raise custom_error("model_format", f"unknown format; {did_you_mean(value, known)}")
        return value

    def runner_options(self) -> ModelOptions:
        """The runner's options: each `ModelOptions` field is the key of the same name
        here (the runner is used without a config too, so its type lives below the
        config), as the runner's immutable types."""
        from edged.inference.runner import ModelOptions  # numpy and onnxruntime: on use

        def tupled(items: list[Any] | None) -> tuple[Any, ...] | None:
            return tuple(tuple(i) if isinstance(i, list) else i for i in items) \
                if items else None

        converted: dict[str, Any] = {
            "providers": tuple((p.name, dict(p.options)) for p in self.providers),
            "classes": tupled(self.classes), "seg_classes": tupled(self.seg_classes),
            "class_groups": tupled(self.class_groups),
            "preprocess": tuple(sorted(
                (k, tuple(v) if isinstance(v, list) else v)
                for k, v in (self.preprocess.model_dump().items() if self.preprocess else ())
                if v is not None)),
        }
        return ModelOptions(**{
            f.name: converted.get(f.name, getattr(self, f.name))
            for f in dataclasses.fields(ModelOptions) if f.name in type(self).model_fields})
