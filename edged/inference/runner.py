"""The model runner: pre-process -> ONNX Runtime session -> format adapter -> Result.

One `ModelRunner` owns one ONNX Runtime session. `infer()` may be called from several
threads at once (ONNX Runtime sessions are thread-safe and release the GIL); each
calling thread gets its own pre-processing buffers.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import UserError
from edged.inference.formats import (
    FORMATS,
    FormatError,
    TensorInfo,
    apply_metadata_names,
    classes_from_metadata,
    manifest_from_graph,
)
from edged.inference.graph import output_ops
from edged.inference.manifest import Manifest, ManifestError, load_manifest, manifest_path
from edged.inference.preprocess import Preprocessor
from edged.inference.session import (
    io_binding_device,
    open_session,
    plan_providers,
    profile_placement,
)
from edged.results import Frame, Result

log = logging.getLogger("edged.inference.runner")


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


# "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : " before onnxruntime's actual message
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")
_ORT_SUFFIX = " Please fix either the inputs/outputs or the model."


class ModelError(UserError, RuntimeError):
    """The model cannot be loaded or run; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """How to run a model (None: take the manifest's value). The config's `model` section
    has a key of the same name for each field but `io_binding`, and builds these with
    `ModelConfig.runner_options()`; tools and tests build them directly."""

    path: Path
    format: str = "auto"
    providers: tuple[tuple[str, dict[str, Any]], ...] = (("cpu", {}),)
    threads: int = 0
    conf_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    classes: tuple[str, ...] | None = None
    seg_classes: tuple[str, ...] | None = None
    class_groups: tuple[tuple[str, ...], ...] | None = None
    mask_threshold: float | None = None
    layout: str | None = None
    mask_mode: str | None = None
    output_values: str | None = None
    # model.preprocess: PreprocessSpec fields set over the manifest's
    preprocess: tuple[tuple[str, Any], ...] = ()
    warmup_runs: int = 3
    cache_dir: Path | None = None  # None: default_cache_dir()
    # "auto": IOBinding with outputs on the device when a CUDA provider runs the model;
    # "off": plain run(); "cpu"/"cuda": force it (tests exercise the path on a CPU build)
    io_binding: str = "auto"


def tensor_infos(args: list[Any]) -> list[TensorInfo]:
    return [TensorInfo(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]


def auto_threads() -> int:
    """Intra-op threads when the config says 0: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def plan_workers(workers: int, threads: int, *, cores: int, cameras: int,
                 single_realtime: bool) -> tuple[int, int]:
    """(inference workers, intra-op threads each) for `model.workers`/`model.threads`, 0 = auto.

    One realtime camera wants its frame done soonest: one worker with every core. Several
    cameras or a file replayed frame by frame want throughput: parallel single-frame
    runs scale better than intra-op threads on small convolutions (docs/benchmarks.md
    has the figures), so about one worker per two cores, at least two, at most four.
    """
    if workers <= 0:
        if single_realtime or cores <= 1:
            workers = 1
        else:
            workers = max(1, min(max(2, cores // 2), 4, max(cameras, 2)))
    if threads <= 0:
        threads = max(1, cores // workers)
    return workers, threads


def time_interleaved(runners: list[ModelRunner], inputs: list[list[np.ndarray]], runs: int,
                     warmup: int = 2) -> list[list[float]]:
    """Milliseconds of each run of each runner, the runners taking turns run by run so
    that all of them see the same machine load (a fair ratio on a shared machine).

    `inputs[k]` holds runner k's pre-processed tensors, used in rotation.
    """
    for r, tensors in zip(runners, inputs):
        for i in range(warmup):  # first runs are 1.2-2x slower
            r.run_tensor(tensors[i % len(tensors)])
    times: list[list[float]] = [[] for _ in runners]
    for i in range(runs):
        for r, tensors, t in zip(runners, inputs, times):
            tensor = tensors[i % len(tensors)]
            t0 = time.perf_counter()
            r.run_tensor(tensor)
            t.append((time.perf_counter() - t0) * 1e3)
    return times


class ModelRunner:
    def __init__(self, options: ModelOptions) -> None:
        self.options = options
        path = options.path
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        threads = options.threads or auto_threads()
        plan = plan_providers(options.providers, options.cache_dir)
        self.provider_plan = plan
        if plan.log_line():
            log.warning("%s", plan.log_line())
        self._file_manifest = self._read_manifest_file()
        # e.g. NhwcTransformer off: `edged quantize` measured the model faster without it
        self.disabled_optimizers = self._file_manifest.disabled_optimizers \
            if self._file_manifest else ()
        profile_dir = Path(tempfile.mkdtemp(prefix="edged-placement-"))
        try:
            self.session = open_session(path, plan, threads=threads, profile_dir=profile_dir,
                                        disabled_optimizers=self.disabled_optimizers)
        except Exception as e:  # onnxruntime raises several unrelated types for bad files
            shutil.rmtree(profile_dir, ignore_errors=True)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot load model {path}: {first}") from None
        self.threads = threads
        self.providers = self.session.get_providers()
        # the provider that runs the session's first nodes ("" if none): what a figure
        # measured on this runner is a figure of
        self.active_provider: str = self.providers[0] if self.providers else ""
        self.inputs = tensor_infos(self.session.get_inputs())
        self.outputs = tensor_infos(self.session.get_outputs())
        self.output_names = [o.name for o in self.outputs]
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.manifest, self.format_reason = self._manifest()
        m = self.manifest
        # a tensor the manifest file names that the graph lacks is the manifest's mistake
        where = manifest_path(path) if self._file_manifest is not None else path
        if m.input_name not in [i.name for i in self.inputs]:
            raise ModelError(f"{where}: input_name: manifest input {m.input_name!r} is not a "
                             f"graph input ({', '.join(i.name for i in self.inputs)})")
        try:
            self.adapter = FORMATS[m.format].Adapter(m, self.output_names)
        except (ValueError, KeyError) as e:
            raise ModelError(f"{where}: {e}") from None
        # instance formats paint "background" + their classes into the mask
        self.mask_classes: tuple[str, ...] = getattr(self.adapter, "mask_classes",
                                                     m.seg_classes)
        # torchvision detection exports take one un-batched [3, H, W] image
        model_input = next(i for i in self.inputs if i.name == m.input_name)
        self._unbatched = len(model_input.shape) == 3
        # a symbolic batch dimension lets frames of several cameras run as one batch
        # (not with a size rule that follows the frame: cameras' inputs differ in size)
        self.dynamic_batch = (not self._unbatched and not isinstance(model_input.shape[0], int)
                              and m.preprocess.size == "fixed")
        self.model_id = f"{m.name or path.stem}"
        self.cost_ms: float | None = None  # measured ms per frame, when someone measured it
        self._local = threading.local()
        self._bind_device, self._bind_device_id = io_binding_device(options.io_binding,
                                                                     self.session)
        w, h = m.preprocess.input_size(640, 480)
        self.placement, self.placement_summary = profile_placement(
            self.session, self.run_tensor, (1, 3, h, w), profile_dir)
        log.info("model %s: providers requested %s; session %s; %s%s%s", self.model_id,
                 ", ".join(plan.requested), ", ".join(self.providers), self.placement_summary,
                 f"; IOBinding outputs on {self._bind_device}" if self._bind_device else "",
                 f"; optimizers off (manifest): {', '.join(self.disabled_optimizers)}"
                 if self.disabled_optimizers else "")

    def close(self) -> None:
        """Release what outlives a run (a remote model's connections and shared memory)."""

    def reloaded(self) -> ModelRunner:
        """A fresh runner of the same kind, model and options (not warmed up)."""
        return ModelRunner(self.options)

    def _output_ops(self) -> dict[str, tuple[str, ...]]:
        """The ops that make each output (evidence for `format: auto`); {} where the
        file cannot be read that way (the shapes then have to do)."""
        try:
            return output_ops(self.options.path, [o.name for o in self.outputs])
        except (OSError, ValueError) as e:
            log.debug("%s: graph not read for its output ops: %s", self.options.path, e)
            return {}

    def _read_manifest_file(self) -> Manifest | None:
        mpath = manifest_path(self.options.path)
        if not mpath.is_file():
            return None
        try:
            return load_manifest(mpath)
        except ManifestError as e:
            raise ModelError(str(e)) from None

    def _manifest(self) -> tuple[Manifest, str]:
        o = self.options
        mpath = manifest_path(o.path)
        if self._file_manifest is not None:
            m = self._file_manifest
            reason = f"manifest {mpath.name}"
            if o.format not in ("auto", m.format):
                raise ModelError(f"config says format {o.format!r} but the manifest "
                                 f"{mpath} says {m.format!r}")
            if m.format not in FORMATS:
                raise ModelError(f"{mpath}: unknown format {m.format!r}; known: "
                                 f"{', '.join(FORMATS)}")
            if not m.classes and not m.seg_classes:
                m, note = apply_metadata_names(m, classes_from_metadata(self.metadata))
                reason += f"; {note}" if note else ""
        else:
            try:
                m, reason = manifest_from_graph(self.inputs, self.outputs, self.metadata,
                                                o.format, o.layout, self._output_ops(),
                                                o.output_values)
            except (FormatError, ValueError) as e:
                raise ModelError(f"{o.path}: {e}") from None
        m = m.with_overrides(conf_threshold=o.conf_threshold, iou_threshold=o.iou_threshold,
                             max_detections=o.max_detections, classes=o.classes,
                             seg_classes=o.seg_classes, class_groups=o.class_groups)
        # the config's mask and layout settings are manifest options, set over the file's
        options = {k: v for k, v in (("mask_threshold", o.mask_threshold),
                                     ("layout", o.layout), ("mask_mode", o.mask_mode),
                                     ("output_values", o.output_values))
                   if v is not None}
        if options:
            m = replace(m, options={**m.options, **options})
        if o.preprocess:
            m = replace(m, preprocess=replace(m.preprocess, **dict(o.preprocess)))
            reason += "; pre-processing from model.preprocess: " + ", ".join(
                f"{k} {v}" for k, v in o.preprocess)
        return m, reason

    # ------------------------------------------------------------------ running

    def _preprocessor(self, batch: int = 1) -> Preprocessor:
        cache: dict[int, Preprocessor] | None = getattr(self._local, "pre", None)
        if cache is None:
            cache = self._local.pre = {}
        pre = cache.get(batch)
        if pre is None:
            pre = cache[batch] = Preprocessor(self.manifest.preprocess, batch)
        return pre

    def warmup(self, runs: int | None = None, size: tuple[int, int] = (640, 480)) -> float:
        """Run a few frames of `size` (width, height) so that the first real frame is not
        1.2-2x slower; returns ms. ModelError if the model cannot run such a frame (a
        manifest whose input size is not the graph's, a graph that wants another number
        of channels, ...): the same error for `edged check` as for `edged run`."""
        n = self.options.warmup_runs if runs is None else runs
        img = np.zeros((size[1], size[0], 3), np.uint8)
        t = time.perf_counter()
        try:
            for i in range(n):
                self.infer(Frame("_warmup", i, img, 0, 0))
        except ModelError:
            raise
        except Exception as e:  # onnxruntime's own types, or an adapter meeting odd outputs
            raise ModelError(self._run_failed(e, size)) from None
        return (time.perf_counter() - t) * 1000

    def _run_failed(self, e: Exception, size: tuple[int, int]) -> str:
        m = self.manifest
        graph = next((i for i in self.inputs if i.name == m.input_name), None)
        shape = ("x".join(str(d) if isinstance(d, int) else "?" for d in graph.shape)
                 if graph is not None else "?")
        text = " ".join(str(e).split()) or type(e).__name__
        text = _ORT_PREFIX.sub("", text).removesuffix(_ORT_SUFFIX)
        source = (f"the manifest {manifest_path(self.options.path).name}"
                  if self._file_manifest is not None else "the graph")
        if {k for k, _ in self.options.preprocess} & {"input_w", "input_h", "size"}:
            source = "model.preprocess in the config"
        iw, ih = m.preprocess.input_size(*size)
        rule = ("" if m.preprocess.size == "fixed" else
                f" for this frame by its size rule ({m.preprocess.size_rule()})")
        return (f"{self.options.path}: the warm-up inference on a {size[0]}x{size[1]} frame "
                f"failed: {text} (edged feeds input {m.input_name} as 1x3x{ih}x{iw}"
                f"{rule}, as {source} says; the graph takes {shape})")

    def run_tensor(self, tensor: np.ndarray) -> list[np.ndarray]:
        if self._unbatched:
            tensor = tensor[0]
        if self._bind_device is None:
            return self.session.run(None, {self.manifest.input_name: tensor})
        # IOBinding: the input is copied to the device once, outputs are allocated there
        # (no per-run host allocation by the provider), then copied out in one step
        binding = getattr(self._local, "binding", None)
        if binding is None:
            binding = self._local.binding = self.session.io_binding()
        binding.bind_cpu_input(self.manifest.input_name, tensor)
        for name in self.output_names:
            binding.bind_output(name, self._bind_device, self._bind_device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def infer(self, frame: Frame) -> Result:
        return self.infer_batch([frame])[0]

    def infer_batch(self, frames: list[Frame]) -> list[Result]:
        """Frames (of any cameras and sizes) through one session run.

        More than one frame needs `dynamic_batch`. Each result's `inference` timing is the
        whole batch's run: that is how long each of its frames waited for it.
        """
        n = len(frames)
        if n > 1 and not self.dynamic_batch:
            raise ModelError(f"{self.options.path}: the model's batch dimension is fixed; "
                             f"cannot run {n} frames at once")
        t0 = time.perf_counter()
        pre = self._preprocessor(n)
        boxes = [pre(f.image, i) for i, f in enumerate(frames)]
        t1 = time.perf_counter()
        outputs = self.run_tensor(pre.tensor)
        t2 = time.perf_counter()
        results = []
        m = self.manifest
        for i, frame in enumerate(frames):
            tp = time.perf_counter()
            h, w = frame.image.shape[:2]
            outs = outputs if n == 1 else [o[i:i + 1] for o in outputs]
            # the formats drop NaN/Inf candidate rows before their arithmetic (no numpy
            # overflow / invalid-value warnings) and count them
            decoded = self.adapter.postprocess(outs, boxes[i], w, h)
            # the formats' own count, then any box or score a format derived as NaN/Inf
            dets, bad = decoded.detections.finite()
            mask = decoded.mask
            nonfinite = decoded.nonfinite + bad
            results.append(Result(
                camera=frame.camera, seq=frame.seq, t_capture_wall_ns=frame.t_wall_ns,
                t_capture_mono_ns=frame.t_mono_ns, frame_w=w, frame_h=h, detections=dets,
                class_names=m.classes, mask=mask, mask_classes=self.mask_classes,
                letterbox=boxes[i], model_id=self.model_id, conf_threshold=m.conf_threshold,
                timings_ms={"preprocess": (t1 - t0) * 1e3 / n, "inference": (t2 - t1) * 1e3,
                            "postprocess": (time.perf_counter() - tp) * 1e3},
                nonfinite=nonfinite))
        return results

    def batch_speedup(self, sizes: tuple[int, ...] = (2, 4), runs: int = 8,
                      frame_size: tuple[int, int] = (640, 480),
                      max_s: float = 1.0) -> dict[int, float]:
        """Measured ms per frame for batch 1 and each size in `sizes` (median of up to
        `runs`, fewer once a size's timed runs pass `max_s`: a model that takes seconds
        per frame would otherwise hold the start for a minute).

        Sizes the model cannot run (a fixed batch dimension, an output without one) are
        left out.
        """
        img = np.zeros((frame_size[1], frame_size[0], 3), np.uint8)
        out: dict[int, float] = {}
        for b in (1, *sizes):
            if b > 1 and not self.dynamic_batch:
                break
            frames = [Frame("_probe", i, img, 0, 0) for i in range(b)]
            try:
                pre = self._preprocessor(b)
                for i, f in enumerate(frames):
                    pre(f.image, i)
                outputs = self.run_tensor(pre.tensor)  # warm-up, and a shape check
                if b > 1 and any(o.ndim == 0 or o.shape[0] != b for o in outputs):
                    log.info("batching off: an output of %s has no batch dimension",
                             self.model_id)
                    break
                times: list[float] = []
                spent = 0.0
                while len(times) < runs and (not times or spent < max_s):
                    t = time.perf_counter()
                    self.run_tensor(pre.tensor)
                    took = time.perf_counter() - t
                    spent += took
                    times.append(took * 1e3 / b)
            except Exception as e:  # a graph with a hard-coded batch of 1 inside
                log.info("batching off: %s cannot run a batch of %d (%s)", self.model_id, b,
                         str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                break
            out[b] = float(np.median(times))
        return out

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"path": str(self.options.path), "format": m.format, "why": self.format_reason,
                "providers": self.provider_report(), "threads": self.threads,
                "input": (f"{m.input_name} {m.preprocess.size_rule()}"
                          if m.preprocess.size == "fixed" else
                          f"{m.input_name} follows the frame ({m.preprocess.size_rule()})"),
                "classes": list(m.classes), "seg_classes": list(self.mask_classes),
                "disabled_optimizers": list(self.disabled_optimizers)}

    def provider_report(self) -> dict[str, Any]:
        """Requested, available, chosen (with options) and per-node placement."""
        p = self.provider_plan
        return {"requested": list(p.requested), "available": list(p.available),
                "missing": list(p.missing),
                "chosen": [{"name": n, "options": o} for n, o in p.chosen],
                "session": list(self.providers), "placement": self.placement,
                "summary": self.placement_summary,
                "io_binding": self._bind_device}
