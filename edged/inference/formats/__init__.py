"""Format adapters: one module per model family, turning its outputs into a Result.

An adapter knows the family's output layout and nothing about cameras or sockets. Each
module provides:

- `recognise(inputs, outputs, hints) -> str | None`: why the graph fits this family, or
  None (specific enough for `format: auto`; `hints`: the ONNX metadata and the config's
  model.layout, or None); FormatError when the graph is this family's but its shapes
  read in more than one way and nothing says which;
- optionally `fits(inputs, outputs, hints) -> str | None`: a looser test used when the
  config names the format (defaults to `recognise`);
- optionally `metadata_match(hints) -> bool | None` and `names_match(outputs) -> bool`:
  the exporter's metadata names this family's head / the outputs carry the names its
  exporter writes; used only to settle a tie between families whose shapes both fit;
- `default_manifest(inputs, outputs, hints) -> Manifest` for a model that ships without one;
- optionally `propose(manifest, inputs, outputs, hints) -> (Manifest, reasons)`: what
  `edged inspect --write-manifest` sets over that plain reading for the family's usual
  training pipeline (ImageNet mean/std, ...), each change with its reason;
- `Adapter(manifest, output_names)`, whose `postprocess(outputs, letterbox, w, h)`
  returns a `_common.Decoded`: the detections with boxes in camera pixels, the mask
  covering the camera frame (or None), and the candidate rows dropped for NaN/Inf values
  (`_common.finite_rows`, `finite_candidates`). Instance formats also fill
  `Detections.instance_masks` and give an adapter attribute `mask_classes` (background +
  their classes) for the painted mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import ModuleType

from edged.inference.formats import (
    detr,
    mask_rcnn,
    semantic,
    sparseinst,
    yoeo,
    yolact,
    yolo,
    yolo_seg,
)
from edged.inference.formats._common import (
    FormatError,
    Hints,
    TensorInfo,
    classes_from_metadata,
    describe,
    parse_names,
)
from edged.inference.manifest import Manifest

__all__ = ["FORMATS", "FormatError", "Hints", "TensorInfo", "apply_metadata_names",
           "classes_from_metadata", "describe", "fits", "manifest_from_graph", "parse_names",
           "propose", "recognise"]

FORMATS: dict[str, ModuleType] = {
    "yoeo": yoeo,
    "yolo-seg": yolo_seg,
    "yolo": yolo,
    "semantic": semantic,
    "yolact": yolact,
    "mask-rcnn": mask_rcnn,
    "sparseinst": sparseinst,
    "detr": detr,
}


def recognise(inputs: list[TensorInfo], outputs: list[TensorInfo],
              hints: Hints | None = None) -> tuple[str, str]:
    """(format name, reason) for `format: auto`; FormatError if none or several fit.

    `hints` carry the ONNX metadata and the config's model.layout: an exporter's own
    words (ultralytics' end2end) settle what the shapes alone cannot."""
    fitting = [(name, why) for name, mod in FORMATS.items()
               if (why := mod.recognise(inputs, outputs, hints)) is not None]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        raise FormatError(f"no known model format fits this graph (inputs: {describe(inputs)}; "
                          f"outputs: {describe(outputs)}); known formats: {', '.join(FORMATS)}; "
                          f"set model.format or write a manifest if it is one of them")
    # shapes fit several families: the exporter's own metadata is evidence (ultralytics
    # names its head), then its output names, if they point at exactly one of them (and
    # the reason says so); otherwise ask
    names = ", ".join(o.name for o in outputs)
    evidence: list[tuple[Callable[[ModuleType], bool], Callable[[str], str]]] = [
        (lambda mod: bool(getattr(mod, "metadata_match", lambda _h: None)(hints)),
         lambda name: f"the exporter's metadata names a {name} head"),
        (lambda mod: bool(getattr(mod, "names_match", lambda _o: False)(outputs)),
         lambda name: f"output names {names} are {name}'s"),
    ]
    for matches, says in evidence:
        told = [(n, w) for n, w in fitting if matches(FORMATS[n])]
        if len(told) == 1:
            name, why = told[0]
            others = ", ".join(n for n, _ in fitting if n != name)
            return name, f"{why} (the shapes also fit {others}; {says(name)})"
    raise FormatError("several formats fit this graph: "
                      + "; ".join(f"{n} ({w})" for n, w in fitting)
                      + "; set model.format in the config to the right one")


def fits(name: str, inputs: list[TensorInfo], outputs: list[TensorInfo],
         hints: Hints | None = None) -> str | None:
    """Whether the graph fits the format the config names (a looser test than auto's)."""
    mod = FORMATS[name]
    return getattr(mod, "fits", mod.recognise)(inputs, outputs, hints)


def apply_metadata_names(m: Manifest, names: tuple[str, ...] | None) -> tuple[Manifest, str]:
    """Class names from the model's metadata in place of generic ones; (manifest, note).

    They name the detection classes, or the segmentation classes of a model without
    detection classes, and only when their count is the one the graph gives (an empty
    list: the graph does not say, so any count).
    """
    if not names:
        return m, ""
    if m.classes and len(names) == len(m.classes) or not m.classes and m.format != "semantic":
        return replace(m, classes=names), f"{len(names)} class names from the ONNX metadata"
    if m.format == "semantic" and (not m.seg_classes or len(names) == len(m.seg_classes)):
        return replace(m, seg_classes=names), (f"{len(names)} segmentation class names from "
                                               f"the ONNX metadata")
    return m, (f"ignored {len(names)} class names in the ONNX metadata: the graph has "
               f"{len(m.classes or m.seg_classes)} classes")


def manifest_from_graph(inputs: list[TensorInfo], outputs: list[TensorInfo],
                        metadata: dict[str, str], fmt: str = "auto",
                        layout: str | None = None,
                        ops: dict[str, tuple[str, ...]] | None = None,
                        output_values: str | None = None) -> tuple[Manifest, str]:
    """The manifest a graph implies (no manifest file, no config overrides), and why.

    `fmt` "auto" recognises the family; a named format only has to fit. Class names come
    from the ONNX metadata where the exporter wrote them. FormatError or ValueError when
    the format cannot be told or the graph does not fit it.
    """
    hints = Hints(metadata, layout, ops or {}, output_values)
    if fmt == "auto":
        fmt, why = recognise(inputs, outputs, hints)
        reason = f"recognised from the graph: {why}"
    else:
        if fmt not in FORMATS:
            raise FormatError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        fit = fits(fmt, inputs, outputs, hints)
        if fit is None:
            raise FormatError(f"the graph's outputs do not fit format {fmt!r} "
                              f"(outputs: {describe(outputs)})")
        reason = f"format set in the config: {fit}"
    m = FORMATS[fmt].default_manifest(inputs, outputs, hints)
    m, note = apply_metadata_names(m, classes_from_metadata(metadata))
    return m, reason + (f"; {note}" if note else "")


def propose(m: Manifest, inputs: list[TensorInfo], outputs: list[TensorInfo],
            metadata: dict[str, str], ops: dict[str, tuple[str, ...]] | None = None
            ) -> tuple[Manifest, list[str]]:
    """The family's proposal over the graph's plain reading `m` (see the module's
    `propose`), and why; `m` unchanged for families without one."""
    fn = getattr(FORMATS[m.format], "propose", None)
    if fn is None:
        return m, []
    proposed: tuple[Manifest, list[str]] = fn(m, inputs, outputs, Hints(metadata, None,
                                                                          ops or {}))
    return proposed
