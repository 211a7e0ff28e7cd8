"""The model manifest: everything model-specific that edged needs to run a model.

A manifest is a JSON file beside the model (`model.onnx` -> `model.json`). It names
the format, the tensors, the pre-processing and the classes, and gives default
post-processing thresholds. Models without one (third-party exports) get a manifest
inferred from the graph by their format adapter, with classes from the config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edged.errors import UserError
from edged.inference.preprocess import PreprocessSpec

MANIFEST_VERSION = 1


class ManifestError(UserError, ValueError):
    """A manifest that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Manifest:
    format: str
    name: str = ""
    input_name: str = "InputLayer"
    outputs: dict[str, str] = field(default_factory=dict)  # role -> tensor name
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    classes: tuple[str, ...] = ()
    seg_classes: tuple[str, ...] = ()
    class_groups: tuple[tuple[str, ...], ...] = ()
    conf_threshold: float = 0.5
    iou_threshold: float = 0.4
    max_detections: int = 300
    multi_label: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # precision, metrics, provenance
    # format-specific settings (e.g. yolo-seg `layout`, `mask_threshold`), documented in
    # each format's module under edged/inference/formats/
    options: dict[str, Any] = field(default_factory=dict)
    # how an int8 model was made from its fp32 parent and what that cost in accuracy and
    # gained in speed (written by `edged quantize`); empty for models not quantized by it
    quantization: dict[str, Any] = field(default_factory=dict)
    # onnxruntime session settings this model runs faster with, as measured where it was
    # quantized: {"disabled_optimizers": ["NhwcTransformer"]} (see docs/quantize.md)
    session: dict[str, Any] = field(default_factory=dict)

    @property
    def disabled_optimizers(self) -> tuple[str, ...]:
        return tuple(self.session.get("disabled_optimizers", ()))

    def to_json(self) -> str:
        d = asdict(self)
        d["manifest_version"] = MANIFEST_VERSION
        d["preprocess"] = {k: v for k, v in asdict(self.preprocess).items() if v is not None}
        for key in ("classes", "seg_classes"):  # an empty list is refused: absent is "none"
            if not d[key]:
                del d[key]
        return json.dumps(d, indent=2) + "\n"

    def with_overrides(self, **kw: Any) -> Manifest:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def manifest_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


# A manifest is a few KB (a quantized model's report included); reading without a bound
# lets a wrong file take the memory.
MAX_MANIFEST_BYTES = 16 << 20
MAX_CLASSES = 10_000  # classes, seg_classes: more than any dataset names
MAX_NAME = 256  # a class or tensor name

_Str = Annotated[str, Field(strict=True, max_length=MAX_NAME)]
_Name = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_NAME)]
# strict: "high" is not a threshold and "field" is not a list of classes f, i, e, l, d
_Unit = Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]
_Classes = Annotated[list[_Name], Field(min_length=1, max_length=MAX_CLASSES)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _PreprocessDoc(_Doc):
    """PreprocessSpec's keys with their bounds (the same as the config's model.preprocess)."""

    input_w: Annotated[int, Field(ge=8, le=8192)] | None = None
    input_h: Annotated[int, Field(ge=8, le=8192)] | None = None
    color: Literal["rgb", "bgr"] | None = None
    resize: Literal["letterbox", "stretch"] | None = None
    align: Literal["center", "topleft"] | None = None
    pad_value: Annotated[int, Field(ge=0, le=255)] | None = None
    scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    mean: Annotated[list[Annotated[float, Field(allow_inf_nan=False)]],
                    Field(min_length=3, max_length=3)] | None = None
    std: Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]],
                   Field(min_length=3, max_length=3)] | None = None
    interpolation: Literal["linear", "area", "nearest", "pil_bilinear", "pil_bicubic"] | None \
        = None
    size: Literal["fixed", "keep_ratio"] | None = None
    limit_side: Annotated[int, Field(ge=8, le=8192)] | None = None
    limit_type: Literal["max", "min"] | None = None
    multiple: Annotated[int, Field(ge=1, le=256)] | None = None


class _SessionDoc(_Doc):
    disabled_optimizers: list[_Name] = []


class _OptionsDoc(BaseModel):
    """The options several formats read; others are each format's own (kept as given)."""

    model_config = ConfigDict(extra="allow", strict=True)

    mask_threshold: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] | None = None
    layout: _Name | None = None
    mask_mode: Literal["ultralytics", "yolov5", "direct"] | None = None
    output_values: Literal["probability", "logit", "class_ids"] | None = None
    priors: dict[str, Any] | None = None


class _ManifestDoc(_Doc):
    manifest_version: Literal[1] = 1
    format: _Name
    name: _Str = ""
    input_name: _Name = "InputLayer"
    outputs: dict[_Name, _Name] = {}
    preprocess: _PreprocessDoc = _PreprocessDoc()
    # absent: the model's metadata or the config names them; present: at least one
    classes: _Classes | None = None
    seg_classes: _Classes | None = None
    class_groups: list[Annotated[list[_Name], Field(min_length=1)]] = []
    conf_threshold: _Unit = 0.5
    iou_threshold: _Unit = 0.4
    max_detections: Annotated[int, Field(ge=1, le=10_000)] = 300
    multi_label: bool = True
    extra: dict[str, Any] = {}
    options: _OptionsDoc = _OptionsDoc()
    quantization: dict[str, Any] = {}
    session: _SessionDoc = _SessionDoc()


# pydantic's error types in the manifest's words (JSON's names for the types)
_TYPE_WORDS = {"list_type": "a list", "dict_type": "a JSON object", "string_type": "a string",
               "bool_type": "true or false", "int_type": "a whole number",
               "float_type": "a number"}


def _where(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_manifest(path: Path) -> Manifest:
    """The manifest at `path`; ManifestError naming the file and the key otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest: {e.strerror or e}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes: "
                            "is it the right file?")
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a JSON text file (not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    except RecursionError:  # json nests recursively: [[[[... thousands deep
        raise ManifestError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:  # a number of over 4300 digits (int_max_str_digits)
        raise ManifestError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a manifest must be a JSON object")
    version = raw.get("manifest_version", MANIFEST_VERSION)
    if version != MANIFEST_VERSION:
        raise ManifestError(f"{path}: manifest_version {version!r} is not supported "
                            f"(this edged reads version {MANIFEST_VERSION})")
    try:
        doc = _ManifestDoc.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors(include_url=False):
            loc = tuple(err["loc"])
            kind = err["type"]
            if kind == "extra_forbidden":
                inside = f" in '{_where(loc[:-1])}'" if len(loc) > 1 else ""
                lines.append(f"{path}: unknown key{inside}: {loc[-1]}")
            elif kind == "missing":
                lines.append(f"{path}: {_where(loc)}: required key is missing")
            elif kind == "too_short" and loc in (("classes",), ("seg_classes",)):
                lines.append(f"{path}: {loc[0]}: an empty list names no class (leave the key "
                             "out to take the names from the model's metadata)")
            elif kind in _TYPE_WORDS:
                lines.append(f"{path}: {_where(loc)}: must be {_TYPE_WORDS[kind]} "
                             f"(got {_shown(err.get('input'))})")
            else:
                lines.append(f"{path}: {_where(loc)}: {err['msg']} "
                             f"(got {_shown(err.get('input'))})")
        raise ManifestError("\n".join(dict.fromkeys(lines))) from None
    given = doc.preprocess.model_dump(exclude_none=True)
    for key in ("mean", "std"):
        if key in given:
            given[key] = tuple(given[key])
    classes = doc.classes or []
    seg_classes = doc.seg_classes or []
    for key, names in (("classes", classes), ("seg_classes", seg_classes)):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ManifestError(f"{path}: {key}: the same name twice: {', '.join(dup)}")
    return Manifest(
        format=doc.format, name=doc.name, input_name=doc.input_name, outputs=doc.outputs,
        preprocess=PreprocessSpec(**given), classes=tuple(classes),
        seg_classes=tuple(seg_classes),
        class_groups=tuple(tuple(g) for g in doc.class_groups),
        conf_threshold=doc.conf_threshold, iou_threshold=doc.iou_threshold,
        max_detections=doc.max_detections, multi_label=doc.multi_label, extra=doc.extra,
        options=doc.options.model_dump(exclude_none=True), quantization=doc.quantization,
        session=doc.session.model_dump(exclude_defaults=True))
