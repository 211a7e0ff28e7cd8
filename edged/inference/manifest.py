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
from typing import Any

from edged.inference.preprocess import PreprocessSpec

MANIFEST_VERSION = 1
SESSION_KEYS = frozenset({"disabled_optimizers"})


class ManifestError(ValueError):
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
        d["preprocess"] = asdict(self.preprocess)
        return json.dumps(d, indent=2) + "\n"

    def with_overrides(self, **kw: Any) -> Manifest:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def manifest_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def load_manifest(path: Path) -> Manifest:
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a manifest must be a JSON object")
    version = raw.pop("manifest_version", MANIFEST_VERSION)
    if version != MANIFEST_VERSION:
        raise ManifestError(f"{path}: manifest_version {version!r} is not supported "
                            f"(this edged reads version {MANIFEST_VERSION})")
    known = set(Manifest.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ManifestError(f"{path}: unknown key(s) {', '.join(unknown)}")
    if "format" not in raw:
        raise ManifestError(f"{path}: missing key 'format'")
    for key in ("outputs", "extra", "options", "quantization", "session"):
        if not isinstance(raw.get(key, {}), dict):
            raise ManifestError(f"{path}: {key!r} must be a JSON object")
    session = raw.get("session", {})
    unknown = sorted(set(session) - SESSION_KEYS)
    if unknown:
        raise ManifestError(f"{path}: unknown key(s) in 'session': {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(SESSION_KEYS))})")
    disabled = session.get("disabled_optimizers", [])
    if not isinstance(disabled, list) or not all(isinstance(x, str) for x in disabled):
        raise ManifestError(f"{path}: 'session.disabled_optimizers' must be a list of "
                            "onnxruntime optimizer names")
    try:
        pre = PreprocessSpec(**raw.pop("preprocess", {}))
        for key in ("mean", "std"):
            v = getattr(pre, key)
            if v is not None:
                # as many values as the JSON gives (not checked to be 3 here)
                floats: dict[str, Any] = {key: tuple(float(x) for x in v)}
                pre = replace(pre, **floats)
        return Manifest(
            preprocess=pre,
            classes=tuple(raw.pop("classes", ())),
            seg_classes=tuple(raw.pop("seg_classes", ())),
            class_groups=tuple(tuple(g) for g in raw.pop("class_groups", ())),
            **raw,
        )
    except TypeError as e:
        raise ManifestError(f"{path}: {e}") from None
