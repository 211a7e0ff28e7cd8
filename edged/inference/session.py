"""The ONNX Runtime session a `ModelRunner` runs: the providers this build offers for
what the config asks, the session's options, where its nodes ran (from a profile of one
run) and where IOBinding keeps the outputs."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edged.inference.providers import OPTION_ALIASES, PROVIDER_NAMES

log = logging.getLogger("edged.inference.session")


# providers that run on a CUDA device: their outputs can stay there (IOBinding)
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def default_cache_dir() -> Path:
    """/var/cache/edged when this process may write there (a system service), else the
    user's ~/.cache/edged. TensorRT engines and OpenVINO blobs live there across restarts."""
    system = Path("/var/cache/edged")
    if os.access(system if system.exists() else system.parent, os.W_OK):
        return system
    return Path.home() / ".cache" / "edged"


def _ort_value(v: Any) -> str:
    # onnxruntime's Python API takes option values as strings; its TensorRT binding only
    # accepts "True"/"False" for switches, which its other providers read as well
    if isinstance(v, bool):
        return "True" if v else "False"
    return str(v)


def provider_options(name: str, options: dict[str, Any], cache_dir: Path) -> dict[str, str]:
    """onnxruntime options for provider `name` (edged alias): edged's defaults for a
    fixed-shape camera model, overridden by what the config says."""
    opts = {OPTION_ALIASES.get(name, {}).get(k, k): v for k, v in options.items()}
    defaults: dict[str, Any] = {}
    if name == "cuda":
        # fixed input shape: the exhaustive cuDNN search runs once, at the first frame
        defaults = {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}
    elif name == "tensorrt":
        # engine builds take seconds to minutes: cache engines and timings across restarts
        trt = cache_dir / "tensorrt"
        defaults = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(trt),
                    "trt_fp16_enable": False}
    elif name == "openvino":
        defaults = {"cache_dir": str(cache_dir / "openvino")}
    return {k: _ort_value(v) for k, v in (defaults | opts).items()}


@dataclass(frozen=True)
class ProviderPlan:
    """What was asked for, what this onnxruntime build has, and the order handed to it."""

    requested: tuple[str, ...]
    available: tuple[str, ...]
    chosen: tuple[tuple[str, dict[str, str]], ...]
    missing: tuple[str, ...]

    def log_line(self) -> str | None:
        if not self.missing:
            return None
        return (f"provider(s) {', '.join(self.missing)} not available in this onnxruntime "
                f"build (it has {', '.join(self.available)}); using "
                f"{', '.join(n for n, _ in self.chosen)}")


def plan_providers(requested: tuple[tuple[str, dict[str, Any]], ...],
                   cache_dir: Path | None = None) -> ProviderPlan:
    """The requested providers that this onnxruntime build offers, in order; CPU last.

    Cache directories of the chosen providers are created here (first start).
    """
    available = tuple(ort.get_available_providers())
    cache = cache_dir or default_cache_dir()
    chosen: list[tuple[str, dict[str, str]]] = []
    missing: list[str] = []
    for name, opts in requested:
        full = PROVIDER_NAMES.get(name, name)
        if full not in available:
            missing.append(name)
            continue
        o = provider_options(name, opts, cache)
        for key in ("trt_engine_cache_path", "trt_timing_cache_path", "cache_dir"):
            if key in o:
                Path(o[key]).mkdir(parents=True, exist_ok=True)
        chosen.append((full, o))
    if not any(n == "CPUExecutionProvider" for n, _ in chosen):
        chosen.append(("CPUExecutionProvider", {}))
    return ProviderPlan(tuple(n for n, _ in requested), available, tuple(chosen),
                        tuple(missing))


def node_placement(session: ort.InferenceSession, profile: Path | None
                   ) -> tuple[dict[str, dict[str, int]], str]:
    """Per provider, the op types of the kernels that ran, from an ORT profile of one run.

    The profile is the one placement record every onnxruntime build writes (verbose
    logging goes to the C++ stderr, out of Python's reach). It lists the kernels of the
    optimised graph: a TensorRT or OpenVINO subgraph counts as one fused node.
    """
    if profile is None or not profile.is_file():
        return {}, "node placement unknown (no profile)"
    try:
        events = json.loads(profile.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {}, f"node placement unknown ({e})"
    nodes: dict[str, tuple[str, str]] = {}
    for ev in events:
        args = ev.get("args") or {}
        if ev.get("cat") == "Node" and "provider" in args:
            name = str(ev.get("name", "")).removesuffix("_kernel_time")
            nodes[name] = (str(args["provider"]), str(args.get("op_name", "?")))
    placement: dict[str, dict[str, int]] = {}
    for prov, op in nodes.values():
        ops = placement.setdefault(prov, {})
        ops[op] = ops.get(op, 0) + 1
    if not placement:
        return {}, "node placement unknown (the profile lists no kernels)"
    # accelerators first (in the session's priority order), the CPU fallback last
    rank = {p: i for i, p in enumerate(session.get_providers())}
    order = sorted(placement, key=lambda p: (p == "CPUExecutionProvider",
                                             rank.get(p, len(rank)), p))
    parts = []
    for p in order:
        n = sum(placement[p].values())
        part = f"{p}: {n} node{'s' if n != 1 else ''}"
        if p == "CPUExecutionProvider" and len(order) > 1:
            # the nodes an accelerator could not take: the interesting part of the report
            part += f" ({', '.join(sorted(placement[p]))})"
        parts.append(part)
    return {p: placement[p] for p in order}, ", ".join(parts)


def open_session(path: Path, plan: ProviderPlan, *, threads: int, profile_dir: Path,
                 disabled_optimizers: tuple[str, ...]) -> ort.InferenceSession:
    """A session of the model at `path` on `plan`'s providers, profiling into `profile_dir`
    until `profile_placement` ends it. onnxruntime raises several unrelated types for a
    bad file: the caller turns them into its own error."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # frames arrive with gaps: spinning threads would burn a core between frames
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # fatal only: every error onnxruntime would log also raises, and edged reports it
    # once, in its own words (a failed warm-up printed ORT's line twice before ours)
    so.log_severity_level = 4
    # profile the first run only, to learn where each node runs (see node_placement)
    so.enable_profiling = True
    so.profile_file_prefix = str(profile_dir / "ort")
    return ort.InferenceSession(str(path), so, providers=[p for p, _ in plan.chosen],
                                provider_options=[o for _, o in plan.chosen],
                                disabled_optimizers=list(disabled_optimizers))


def profile_placement(session: ort.InferenceSession, run: Callable[[np.ndarray], Any],
                      shape: tuple[int, ...], profile_dir: Path
                      ) -> tuple[dict[str, dict[str, int]], str]:
    """One profiled `run` on a blank input of `shape`, then profiling stops for good (a
    profile left on would grow in memory for every frame of a weeks-long run)."""
    profile: Path | None = None
    try:
        try:
            run(np.zeros(shape, np.float32))
        except Exception as e:  # placement is a report: never fail the start over it
            log.debug("placement run failed: %s", e)
        profile = Path(session.end_profiling())
        return node_placement(session, profile)
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)
        if profile is not None and profile.parent != profile_dir:
            profile.unlink(missing_ok=True)


def io_binding_device(mode: str, session: ort.InferenceSession) -> tuple[str | None, int]:
    """(device, id) IOBinding puts the outputs on for the config's `io_binding` mode, or
    (None, 0): plain runs."""
    if mode == "off":
        return None, 0
    if mode in ("cpu", "cuda"):
        return mode, 0
    providers = session.get_providers()
    active = providers[0] if providers else ""
    if mode == "auto" and active in CUDA_PROVIDERS:
        opts = session.get_provider_options().get(active, {})
        return "cuda", int(opts.get("device_id", 0) or 0)
    return None, 0
