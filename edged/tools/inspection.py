"""`edged inspect MODEL`: what a model file is, which format edged takes it for and why,
the manifest it would use, and what one frame costs on this machine.

Works without the `onnx` package (not a runtime dependency): the few ModelProto fields
shown (IR version, producer, opsets) are read straight from the protobuf wire format
(`edged.inference.graph`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import UserError
from edged.inference.graph import model_header
from edged.inference.manifest import manifest_path

__all__ = ["InspectError", "inspect_model", "model_header", "render_report", "write_manifest"]


class InspectError(UserError, RuntimeError):
    """The model cannot be inspected at all, or the manifest cannot be written."""


# ----------------------------------------------------------------------------- inspect

def _tensors(infos: list[Any]) -> list[dict[str, Any]]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in infos]


def inspect_model(path: Path, fmt: str = "auto", runs: int = 10) -> dict[str, Any]:
    """Everything `edged inspect` shows, as JSON-ready data.

    A model edged cannot serve (unknown format, ambiguous, bad manifest) still gets its
    tensors listed, with the reason under "error". InspectError if it cannot be read.
    """
    import onnxruntime as ort

    from edged.inference.runner import ModelError, ModelOptions, ModelRunner, tensor_infos

    if not path.is_file():
        raise InspectError(f"model file not found: {path}")
    info: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size}
    try:
        info.update(model_header(path))
    except (ValueError, OSError) as e:
        raise InspectError(f"{path} is not an ONNX model: {e}") from None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several unrelated types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InspectError(f"cannot load model {path}: {first}") from None
    info["inputs"] = _tensors(tensor_infos(session.get_inputs()))
    info["outputs"] = _tensors(tensor_infos(session.get_outputs()))
    info["metadata"] = dict(session.get_modelmeta().custom_metadata_map)
    del session
    info.update(format=None, why=None, manifest=None, manifest_source=None, latency=None,
                error=None)
    # what the graph itself says, whatever manifest lies beside it: a manifest written by
    # an earlier run (or edited since) is shown against it, never taken for it
    info["graph"] = graph_reading(path, info, fmt)
    try:
        runner = ModelRunner(ModelOptions(path=path, format=fmt, threads=1, warmup_runs=0))
    except ModelError as e:
        info["error"] = str(e)
        return info
    m = runner.manifest
    info["format"], info["why"] = m.format, runner.format_reason
    info["manifest_source"] = ("file " + str(manifest_path(path))
                               if manifest_path(path).is_file() else "derived from the graph")
    info["manifest"] = _manifest_dict(m)
    graph = info["graph"]
    if manifest_path(path).is_file() and graph.get("manifest") is not None:
        info["differs"] = _differences(graph["manifest"], info["manifest"])
    info["latency"] = _latency(runner, runs)
    return info


def _graph_tensors(info: dict[str, Any], kind: str) -> list[Any]:
    from edged.inference.formats import TensorInfo

    return [TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in info[kind]]


def graph_reading(path: Path, info: dict[str, Any], fmt: str = "auto") -> dict[str, Any]:
    """{"format", "why", "manifest", "proposed"} the graph alone implies (its shapes, the
    ops that make its outputs, its metadata) with the family's proposals over the plain
    reading (what --write-manifest writes), or {"error"} where it implies none."""
    from edged.inference.formats import FormatError, manifest_from_graph, propose
    from edged.inference.graph import output_ops

    try:
        ops = output_ops(path, [t["name"] for t in info["outputs"]])
    except (OSError, ValueError):
        ops = {}
    try:
        m, why = manifest_from_graph(_graph_tensors(info, "inputs"),
                                     _graph_tensors(info, "outputs"), info["metadata"], fmt,
                                     ops=ops)
    except (FormatError, ValueError) as e:
        return {"error": str(e)}
    m, proposed = propose(m, _graph_tensors(info, "inputs"), _graph_tensors(info, "outputs"),
                          info["metadata"], ops)
    return {"format": m.format, "why": why, "manifest": _manifest_dict(m),
            "proposed": proposed}


def _differences(graph: dict[str, Any], used: dict[str, Any], where: str = ""
                 ) -> list[dict[str, Any]]:
    """Keys whose value in the manifest in use is not the graph's reading, dotted."""
    out: list[dict[str, Any]] = []
    for key in sorted(set(graph) | set(used)):
        if key in ("extra", "quantization"):  # provenance, not a reading of the graph
            continue
        a, b = graph.get(key), used.get(key)
        name = f"{where}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, name + ".")
        elif a != b:
            out.append({"key": name, "graph": a, "manifest": b})
    return out


def _manifest_dict(m: Any) -> dict[str, Any]:
    import json

    return json.loads(m.to_json())


def _latency(runner: Any, runs: int) -> dict[str, Any]:
    """Median of `runs` frames (after one untimed warm-up) on a black frame of the
    model's input size, 1 intra-op thread: what one camera frame costs at least."""
    from edged.results import Frame

    pre = runner.manifest.preprocess
    img = np.zeros((pre.input_h, pre.input_w, 3), np.uint8)
    stages: dict[str, list[float]] = {"total": [], "preprocess": [], "inference": [],
                                      "postprocess": []}
    for i in range(runs + 1):
        t = time.perf_counter()
        res = runner.infer(Frame("_inspect", i, img, 0, 0))
        total = (time.perf_counter() - t) * 1e3
        if i == 0:
            continue
        stages["total"].append(total)
        for k in ("preprocess", "inference", "postprocess"):
            stages[k].append(res.timings_ms[k])
    out: dict[str, Any] = {k: round(statistics.median(v), 3) for k, v in stages.items()}
    out.update(runs=runs, threads=runner.threads, providers=runner.providers,
               frame=[pre.input_w, pre.input_h])
    return out


def write_manifest(info: dict[str, Any], fmt: str = "auto", force: bool = False) -> Path:
    """Write the manifest derived from the graph beside the model (<model>.json).

    Derived, never read back: with --force an existing manifest is replaced by what the
    graph (and its metadata) says, the way to start over after a bad edit.
    """
    import json

    path = Path(info["path"])
    target = manifest_path(path)
    if target.exists() and not force:
        raise InspectError(f"{target} exists; pass --force to overwrite it")
    graph = info.get("graph") or graph_reading(path, info, fmt)
    if graph.get("manifest") is None:
        raise InspectError(f"{path}: {graph['error']}")
    m = dict(graph["manifest"])
    target.write_text(json.dumps(m, indent=2) + "\n")
    return target


# ----------------------------------------------------------------------------- text

def _dims(shape: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def render_report(info: dict[str, Any]) -> str:
    import json

    size = info["size_bytes"]
    lines = [f"model    {info['path']}",
             f"size     {size / 1e6:.2f} MB ({size} bytes)",
             f"onnx     IR {info['ir_version']}, opsets "
             + (", ".join(f"{d} {v}" for d, v in info["opsets"].items()) or "none")
             + (f", produced by {info['producer']}" if info["producer"] else "")]
    for kind in ("inputs", "outputs"):
        for i, t in enumerate(info[kind]):
            label = kind[:-1] if i == 0 else ""
            lines.append(f"{label:<8} {t['name']} {t['dtype']}{_dims(t['shape'])}")
    if info["metadata"]:
        lines.append("metadata " + ", ".join(
            f"{k}={v if len(v) <= 60 else v[:57] + '...'}"
            for k, v in sorted(info["metadata"].items())))
    if info["error"] is not None:
        lines.append(f"format   none: {info['error']}")
        return "\n".join(lines)
    lines.append(f"format   {info['format']}: {info['why']}")
    lat = info["latency"]
    lines.append(f"latency  {lat['total']:.2f} ms per frame (median of {lat['runs']} runs, "
                 f"black {lat['frame'][0]}x{lat['frame'][1]} frame, {lat['threads']} thread, "
                 f"{lat['providers'][0]}; inference {lat['inference']:.2f} ms, post-processing "
                 f"{lat['postprocess']:.2f} ms)")
    lines.append(f"manifest ({info['manifest_source']}):")
    lines.append(json.dumps(info["manifest"], indent=2))
    graph = info.get("graph") or {}
    derived = info["manifest_source"] == "derived from the graph"
    for reason in graph.get("proposed") or ():
        lines.append(f"proposes {reason}" + (" (--write-manifest writes it)" if derived else ""))
    if not derived:
        if graph.get("manifest") is None:
            lines.append(f"graph    implies no manifest of its own: {graph.get('error')}")
        else:
            lines.append(f"graph    reads as {graph['format']}: {graph['why']}")
            differs = info.get("differs") or []
            if not differs:
                lines.append("graph    the manifest file says what the graph implies")
            for d in differs:
                lines.append(f"differs  {d['key']}: manifest {json.dumps(d['manifest'])}, "
                             f"graph {json.dumps(d['graph'])}")
    if "wrote" in info:
        lines.append(f"wrote    {info['wrote']}")
    return "\n".join(lines)
