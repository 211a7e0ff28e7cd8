"""YOLO detection: ultralytics YOLOv8/11 ([1, 4+C, A]) and YOLOv5 ([1, A, 5+C]) exports
without masks. The layouts and options are those of `yolo_seg` with no prototypes; the
same adapter serves both (boxes only, no mask in the result).
"""

from __future__ import annotations

from edged.inference.formats._common import Hints, TensorInfo, image_input
from edged.inference.formats.yolo_seg import (
    Adapter,
    Roles,
    detection_roles,
    manifest_for,
    metadata_match,
)
from edged.inference.manifest import Manifest

__all__ = ["Adapter", "default_manifest", "fits", "metadata_match", "names_match",
           "recognise"]


def roles(inputs: list[TensorInfo], outputs: list[TensorInfo], strict: bool = True,
          hints: Hints | None = None) -> Roles | None:
    if image_input(inputs) is None or len(inputs[0].shape) != 4 or len(outputs) != 1:
        return None
    return detection_roles(inputs, outputs[0], 0, strict, hints, "yolo")


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> str | None:
    r = roles(inputs, outputs, hints=hints)
    return None if r is None else f"YOLO detection, one output: {r.why}"


def fits(inputs: list[TensorInfo], outputs: list[TensorInfo],
         hints: Hints | None = None) -> str | None:
    """For `format: yolo` in the config: any anchor count."""
    r = roles(inputs, outputs, strict=False, hints=hints)
    return None if r is None else f"YOLO detection, one output: {r.why}"


def names_match(outputs: list[TensorInfo]) -> bool:
    return [o.name for o in outputs] == ["output0"]


def default_manifest(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     hints: Hints | None = None) -> Manifest:
    r = roles(inputs, outputs, hints=hints) or roles(inputs, outputs, strict=False, hints=hints)
    if r is None:
        raise ValueError("outputs do not follow the yolo layout")
    return manifest_for(inputs, r, "yolo", hints)
