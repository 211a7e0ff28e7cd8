"""Execution providers: honest fallback on this CPU-only onnxruntime build, the options
edged hands to CUDA/TensorRT, per-node placement, IOBinding, and `edged check`'s report."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from configfile import daemon_config
from modelgen import painted_frame, yoeo_model

from edged.config import ConfigError, load_config
from edged.inference.runner import ModelOptions, ModelRunner
from edged.inference.session import node_placement, plan_providers, provider_options
from edged.results import Frame

REPO = Path(__file__).resolve().parents[2]
CPU_ONLY = "CUDAExecutionProvider" not in ort.get_available_providers()


def config(tmp_path: Path, providers: str, model: Path) -> Path:
    return daemon_config(tmp_path, {"front": {"source": "synthetic"}},
                         model={"path": str(model), "providers": yaml.safe_load(providers)})


def _line_of(path: Path, text: str) -> int:
    """The 1-based line of `path` where `text` first appears (the error must name it)."""
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


@pytest.mark.skipif(not CPU_ONLY, reason="needs a CPU-only onnxruntime build")
def test_accelerators_missing_fall_back_to_cpu_with_one_clear_line(tmp_path, test_model, caplog):
    caplog.set_level(logging.INFO, logger="edged.inference.runner")
    runner = ModelRunner(ModelOptions(path=test_model, providers=(
        ("tensorrt", {"fp16": True}), ("cuda", {"device_id": 0}), ("cpu", {})),
        cache_dir=tmp_path / "cache"))
    assert runner.providers == ["CPUExecutionProvider"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "provider(s) tensorrt, cuda not available in this onnxruntime build" in warnings[0]
    assert "using CPUExecutionProvider" in warnings[0]
    # nothing is cached for providers that are not used
    assert not (tmp_path / "cache").exists()
    img, mask = painted_frame()
    result = runner.infer(Frame("front", 0, img, 0, 0))
    assert (result.mask_camera() == mask).mean() > 0.99
    report = runner.describe()["providers"]
    assert report["requested"] == ["tensorrt", "cuda", "cpu"]
    assert report["missing"] == ["tensorrt", "cuda"]
    assert report["chosen"] == [{"name": "CPUExecutionProvider", "options": {}}]
    assert report["session"] == ["CPUExecutionProvider"]
    assert report["io_binding"] is None
    # every kernel of the test graph ran on the CPU: ReduceMax, Mul, Add, ArgMax, Cast
    # (the Constant is folded away by the optimiser)
    ops = report["placement"]["CPUExecutionProvider"]
    assert {"ArgMax", "Cast"} <= set(ops)
    n = sum(ops.values())
    assert report["summary"] == f"CPUExecutionProvider: {n} nodes"
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("session CPUExecutionProvider; CPUExecutionProvider:" in m for m in info)


def test_gpu_options_defaults_and_overrides(tmp_path):
    cuda = provider_options("cuda", {"device_id": 1}, tmp_path)
    assert cuda == {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "True",
                    "device_id": "1"}
    assert provider_options("cuda", {"cudnn_conv_algo_search": "HEURISTIC"},
                            tmp_path)["cudnn_conv_algo_search"] == "HEURISTIC"
    trt = provider_options("tensorrt", {"fp16": True}, tmp_path)
    assert trt == {"trt_engine_cache_enable": "True",
                   "trt_engine_cache_path": str(tmp_path / "tensorrt"),
                   "trt_timing_cache_enable": "True",
                   "trt_timing_cache_path": str(tmp_path / "tensorrt"),
                   "trt_fp16_enable": "True"}
    assert provider_options("openvino", {}, tmp_path) == {"cache_dir": str(tmp_path / "openvino")}
    assert provider_options("cpu", {}, tmp_path) == {}


@pytest.mark.skipif(not CPU_ONLY, reason="needs a CPU-only onnxruntime build")
def test_plan_lists_requested_available_chosen(tmp_path):
    plan = plan_providers((("openvino", {}), ("cpu", {})), tmp_path)
    assert plan.requested == ("openvino", "cpu")
    assert "CPUExecutionProvider" in plan.available
    assert plan.missing == ("openvino",)
    assert plan.chosen == (("CPUExecutionProvider", {}),)
    # cpu not requested at all: appended, so a model always has somewhere to run
    assert plan_providers((("cuda", {}),), tmp_path).chosen == (("CPUExecutionProvider", {}),)


def test_io_binding_path_gives_the_same_outputs(test_model):
    """The IOBinding code used with CUDA, run here with CPU buffers: same results."""
    plain = ModelRunner(ModelOptions(path=test_model, io_binding="off"))
    bound = ModelRunner(ModelOptions(path=test_model, io_binding="cpu"))
    assert bound.describe()["providers"]["io_binding"] == "cpu"
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    for _ in range(2):  # the per-thread binding is reused
        for a, b in zip(plain.run_tensor(x), bound.run_tensor(x)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    img, mask = painted_frame()
    r = bound.infer(Frame("front", 0, img, 0, 0))
    assert (r.mask_camera() == mask).mean() > 0.99 and r.detections.class_ids.tolist()


def test_placement_parse_counts_nodes_per_provider(tmp_path, test_model):
    runner = ModelRunner(ModelOptions(path=test_model))
    profile = tmp_path / "p.json"
    profile.write_text(
        '[{"cat": "Session", "name": "model_run", "args": {}},'
        '{"cat": "Node", "name": "conv1_kernel_time", "args": {"provider": '
        '"CUDAExecutionProvider", "op_name": "Conv"}},'
        '{"cat": "Node", "name": "conv2_kernel_time", "args": {"provider": '
        '"CUDAExecutionProvider", "op_name": "Conv"}},'
        '{"cat": "Node", "name": "am_kernel_time", "args": {"provider": '
        '"CPUExecutionProvider", "op_name": "ArgMax"}},'
        '{"cat": "Node", "name": "am_fence_before", "args": {}}]')
    placement, summary = node_placement(runner.session, profile)
    assert placement == {"CUDAExecutionProvider": {"Conv": 2},
                         "CPUExecutionProvider": {"ArgMax": 1}}
    assert summary == "CUDAExecutionProvider: 2 nodes, CPUExecutionProvider: 1 node (ArgMax)"
    assert node_placement(runner.session, tmp_path / "missing.json")[1].startswith(
        "node placement unknown")


def test_unknown_provider_and_option_are_config_errors_with_line(tmp_path, test_model):
    path = config(tmp_path, "[cpu, cdua]", test_model)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    line = _line_of(path, "cdua")
    assert (f"{path}:{line}: model.providers[1]: unknown provider; did you mean 'cuda'?"
            in str(e.value))
    path = config(tmp_path, "[{tensorrt: {trt_fp16_enabel: true}}]", test_model)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}:{_line_of(path, 'tensorrt')}: model.providers[0]" in msg
    assert "unknown tensorrt option 'trt_fp16_enabel'; did you mean 'trt_fp16_enable'?" in msg
    path = config(tmp_path, "[{cuda: {cudnn_conv_algo_search: FAST}}]", test_model)
    with pytest.raises(ConfigError, match="cudnn_conv_algo_search must be one of EXHAUSTIVE"):
        load_config(path)


def test_cache_dir_relative_to_config(tmp_path, test_model):
    path = tmp_path / "edged.yaml"
    path.write_text(f"model:\n  path: {test_model}\n  cache_dir: cache\n"
                    "cameras:\n  front:\n    source: synthetic\n")
    assert load_config(path).model.cache_dir == tmp_path / "cache"


@pytest.mark.skipif(not CPU_ONLY, reason="needs a CPU-only onnxruntime build")
def test_check_prints_the_provider_report(tmp_path):
    model = yoeo_model(tmp_path / "m.onnx")
    path = config(tmp_path, "[tensorrt, {cuda: {device_id: 0}}, cpu]", model)
    r = subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "    requested  tensorrt, cuda, cpu\n" in out
    assert "    available  " in out and "CPUExecutionProvider (this onnxruntime build)" in out
    assert "    missing    tensorrt, cuda (skipped, next one used)\n" in out
    assert "    chosen     CPUExecutionProvider\n" in out
    assert "    nodes      CPUExecutionProvider: " in out
    assert "provider(s) tensorrt, cuda not available" in r.stderr
