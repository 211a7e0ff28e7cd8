"""OpenVINO through edged for real, where onnxruntime-openvino is installed (CI makes a
second venv with `edged[openvino]` and sets EDGED_REQUIRE_OPENVINO=1, so there these
tests cannot skip): the demo model fp32 and int8 with `providers: [openvino, cpu]`, node
placement, masks against the CPU EP, and OpenVINO's model cache in edged's cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort
import pytest

from edged import synth
from edged.inference.runner import ModelOptions, ModelRunner
from edged.results import Frame

REPO = Path(__file__).resolve().parents[2]
HAVE = "OpenVINOExecutionProvider" in ort.get_available_providers()
pytestmark = pytest.mark.skipif(
    not HAVE and not os.environ.get("EDGED_REQUIRE_OPENVINO"),
    reason="onnxruntime-openvino is not installed (CI runs these in a second venv)")


def _runner(model: str, providers: tuple, cache: Path) -> ModelRunner:
    return ModelRunner(ModelOptions(path=REPO / "models" / model, providers=providers,
                                    threads=1, warmup_runs=1, cache_dir=cache))


@pytest.mark.parametrize("model", ["yoeo-demo-fp32.onnx", "yoeo-demo-int8.onnx"])
def test_openvino_runs_the_demo_model_and_agrees_with_the_cpu_ep(model, tmp_path):
    ov = _runner(model, (("openvino", {}), ("cpu", {})), tmp_path / "cache")
    cpu = _runner(model, (("cpu", {}),), tmp_path / "cache")
    assert ov.providers[0] == "OpenVINOExecutionProvider", ov.providers
    report = ov.provider_report()
    assert "OpenVINOExecutionProvider" in report["summary"], report["summary"]
    equal = total = 0
    for i in range(8):
        img = synth.render(1_000_000 + i, 0, 640, 480).image
        a = ov.infer(Frame("c", i, img, 0, 0)).mask_camera()
        b = cpu.infer(Frame("c", i, img, 0, 0)).mask_camera()
        assert a is not None and b is not None and a.shape == b.shape == (480, 640)
        equal += int((a == b).sum())
        total += a.size
    assert equal / total >= 0.995, (model, equal / total)


def test_openvino_writes_its_model_cache_into_edged_s_cache_dir(tmp_path):
    """`model.cache_dir` reaches OpenVINO (`cache_dir` option): the compiled blob lands in
    <cache_dir>/openvino. (Whether a second start reads it back is not asserted: with
    onnxruntime-openvino 1.24.1 the blob is rewritten at every start and session creation
    takes as long with it as without; see docs/benchmarks.md.)"""
    cache = tmp_path / "cache"
    r = _runner("yoeo-demo-fp32.onnx", (("openvino", {}), ("cpu", {})), cache)
    assert r.provider_report()["chosen"][0] == {
        "name": "OpenVINOExecutionProvider", "options": {"cache_dir": str(cache / "openvino")}}
    blobs = [p for p in (cache / "openvino").rglob("*.blob") if p.stat().st_size > 100_000]
    assert blobs, list((cache / "openvino").rglob("*"))


def test_bench_compares_the_providers_in_one_run(tmp_path):
    """`edged bench --providers`: a row per provider this build offers, timed in the same
    runs, each with its node placement."""
    import json
    import subprocess
    import sys

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model:\n  path: {REPO / 'models' / 'yoeo-demo-fp32.onnx'}\n"
                   f"  threads: 1\n  cache_dir: {tmp_path / 'cache'}\n"
                   "cameras:\n  a:\n    source: synthetic\n")
    p = subprocess.run([sys.executable, "-m", "edged", "bench", "-c", str(cfg), "--providers",
                        "--runs", "10", "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {r["provider"]: r for r in json.loads(p.stdout)["providers"]}
    assert set(rows) >= {"cpu", "openvino"}, rows
    assert rows["cpu"]["vs_cpu"] == 1.0 and rows["openvino"]["ms_p50"] > 0
    assert "OpenVINOExecutionProvider" in rows["openvino"]["placement"]
    assert rows["cpu"]["placement"].startswith("CPUExecutionProvider")


def test_eval_scores_the_model_on_openvino_itself(tmp_path):
    """`edged eval --provider openvino`: the accuracy figure comes from OpenVINO's session
    (not a silent CPU fallback) and is that of the CPU EP within a point."""
    import json
    import subprocess
    import sys

    model = str(REPO / "models" / "yoeo-demo-int8.onnx")
    res = {}
    for provider in ("openvino", "cpu"):
        p = subprocess.run([sys.executable, "-m", "edged", "eval", "--model", model,
                            "--scenes", "8", "--provider", provider, "--json"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        res[provider] = json.loads(p.stdout)
    assert res["openvino"]["provider"] == "OpenVINOExecutionProvider"
    assert res["openvino"]["placement"].startswith("OpenVINOExecutionProvider")
    assert res["cpu"]["provider"] == "CPUExecutionProvider"
    assert abs(res["openvino"]["miou"] - res["cpu"]["miou"]) < 0.01, res
