"""Format adapters: one module per model family, turning its outputs into a Result.

An adapter knows the family's output layout and nothing about cameras or sockets. Each
module provides:

- `recognise(inputs, outputs) -> str | None`: why the graph fits this family, or None;
- `default_manifest(inputs, outputs) -> Manifest` for a model that ships without one;
- `Adapter(manifest, output_names)`, whose `postprocess(outputs, letterbox, w, h)`
  returns `(Detections, mask | None)` with boxes in camera pixels and the mask cropped to
  the camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from edged.formats import yoeo

FORMATS: dict[str, ModuleType] = {"yoeo": yoeo}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str  # numpy dtype name


class FormatError(ValueError):
    """The graph does not fit the requested format, or fits none."""


def describe(tensors: list[TensorInfo]) -> str:
    return ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in tensors)


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> tuple[str, str]:
    """(format name, reason) for `format: auto`; FormatError if none or several fit."""
    fits = [(name, why) for name, mod in FORMATS.items()
            if (why := mod.recognise(inputs, outputs)) is not None]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise FormatError(f"no known model format fits this graph (inputs: {describe(inputs)}; "
                          f"outputs: {describe(outputs)}); known formats: {', '.join(FORMATS)}")
    raise FormatError("several formats fit this graph: "
                      + "; ".join(f"{n} ({w})" for n, w in fits)
                      + "; set model.format in the config")
