"""`edged bench` and `edged synth-video` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_daemon import run_cli, write_config


def test_bench_reports_all_three_loops(tmp_path, test_model):
    video = tmp_path / "clip.avi"
    p = run_cli("synth-video", str(video), "--frames", "20", "--width", "320", "--height", "240")
    assert p.returncode == 0 and video.stat().st_size > 10_000
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [f"ipc://{tmp_path}/b.sock"], f"""\
  replay:
    source: {video}
    mode: every_frame""")
    p = run_cli("bench", "-c", str(cfg), "--frames", "40", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["raw_onnxruntime"]["fps"] > 0 and r["serial_loop"]["fps"] > 0
    cam = r["edged"]["cameras"]["replay"]
    # every_frame replay: every frame arrives (the subscriber connects before the start)
    assert cam["received"] == 40
    assert cam["e2e_ms"]["p50"] > 0 and "inference" in cam["stages_ms_p50"]
    assert r["ratios"]["edged_vs_raw"] > 0 and r["ratios"]["edged_vs_serial"] > 0
    p = run_cli("bench", "-c", str(cfg), "--frames", "10", timeout=120)
    assert "raw onnxruntime loop:" in p.stdout and "x serial" in p.stdout


def test_bench_with_several_cameras_reports_their_shares(tmp_path, test_model):
    cams = "\n".join(f"""\
  {n}:
    source: synthetic
    seed: {i}
    width: 160
    height: 120
    fps: 40
    weight: {w}""" for i, (n, w) in enumerate([("a", 2), ("b", 1), ("c", 1)]))
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [f"ipc://{tmp_path}/b.sock"], cams)
    p = run_cli("bench", "-c", str(cfg), "--frames", "30", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    # the raw loop is also run by as many threads as edged has workers (the ceiling)
    assert r["raw_onnxruntime_parallel"]["loops"] == r["model"]["workers"] >= 1
    # the run lasts until every camera has its frames while all of them run, however
    # late one of them starts, so there is always a window to count shares in
    assert "shares_all_running_missing" not in r["edged"], r["edged"]
    shares = {n: c["share_all_running"] for n, c in r["edged"]["cameras"].items()}
    assert set(shares) == {"a", "b", "c"} and abs(sum(shares.values()) - 1) < 1e-6, shares
    assert all(c["received"] >= 25 for c in r["edged"]["cameras"].values())


def test_shares_are_counted_while_all_cameras_ran_or_say_why_not():
    from types import SimpleNamespace

    from edged.tools.bench import _all_running_from, _shares_all_running

    def msgs(*ms: int) -> list:
        return [SimpleNamespace(t_received_ns=t * 1_000_000) for t in ms]

    # c starts last (at 40 ms); a and b ran before that, which does not count
    received = {"a": msgs(0, 10, 20, 40, 50, 60, 70), "b": msgs(5, 45, 65), "c": msgs(40, 60)}
    assert _all_running_from(received, set(), {"a", "b", "c"}) == 40_000_000
    assert _all_running_from({"a": received["a"]}, set(), {"a", "b"}) is None  # b not yet
    assert _all_running_from({"a": received["a"]}, {"b"}, {"a", "b"}) == 0  # b ended silent
    shares, why = _shares_all_running(received, {"a", "b", "c"})
    assert why == ""
    # window 40..60 ms (c's last result): a 3, b 1, c 2
    assert {n: s["share_all_running"] for n, s in shares.items()} == {
        "a": 3 / 6, "b": 1 / 6, "c": 2 / 6}
    assert shares["a"]["fps_all_running"] == 3 / 0.020
    # a camera that finished before another began: no window, and the reason
    shares, why = _shares_all_running({"a": msgs(0, 10), "b": msgs(30, 40)}, {"a", "b"})
    assert shares == {} and why == ("the cameras never all ran at once: a's last result "
                                    "came 20 ms before b's first")
    shares, why = _shares_all_running({"a": msgs(0, 10)}, {"a", "b"})
    assert shares == {} and why == "no results from b"


def test_bench_providers_times_every_provider_of_this_build(tmp_path, test_model):
    import onnxruntime as ort

    from edged.inference.providers import PROVIDER_NAMES

    cfg = write_config(tmp_path / "cfg.yaml", test_model, [f"ipc://{tmp_path}/b.sock"], """\
  a:
    source: synthetic
    width: 160
    height: 120""")
    p = run_cli("bench", "-c", str(cfg), "--providers", "--runs", "8", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    offered = {n for n, o in PROVIDER_NAMES.items() if o in ort.get_available_providers()}
    rows = {x["provider"]: x for x in r["providers"]}
    assert set(rows) == offered and "cpu" in rows
    assert rows["cpu"]["ms_p50"] > 0 and rows["cpu"]["vs_cpu"] == 1.0
    assert rows["cpu"]["placement"].startswith("CPUExecutionProvider: ")
    assert r["machine"]["cpu_info"]["int8_class"]
    p = run_cli("bench", "-c", str(cfg), "--providers", "--runs", "4", timeout=120)
    assert p.returncode == 0 and "1.00x its CPU EP" in p.stdout, p.stdout


def test_bench_providers_also_times_other_models_against_the_base(tmp_path, test_model):
    """`--also`: each further model on each provider in the same turns, with its ratio to
    its own CPU EP row and to the config's model on the CPU EP (int8 on OpenVINO vs fp32
    on the CPU EP is one command)."""
    demo = Path(__file__).resolve().parents[2] / "models"
    cfg = write_config(tmp_path / "cfg.yaml", demo / "yoeo-demo-fp32.onnx",
                       [f"ipc://{tmp_path}/b.sock"], """\
  a:
    source: synthetic
    width: 160
    height: 120""")
    int8 = demo / "yoeo-demo-int8.onnx"
    p = run_cli("bench", "-c", str(cfg), "--providers", "--runs", "6", "--json", "--also",
                str(int8), timeout=180)
    assert p.returncode == 0, p.stderr
    rows = {(Path(x["model"]).name, x["provider"]): x for x in json.loads(p.stdout)["providers"]}
    base, other = rows[("yoeo-demo-fp32.onnx", "cpu")], rows[("yoeo-demo-int8.onnx", "cpu")]
    assert base["vs_base"] == base["vs_cpu"] == 1.0 and other["vs_cpu"] == 1.0
    assert other["vs_base"] == pytest.approx(base["ms_p50"] / other["ms_p50"])
    assert other["placement"].startswith("CPUExecutionProvider: ")
    p = run_cli("bench", "-c", str(cfg), "--also", str(int8), timeout=60)
    assert p.returncode == 2 and "--also compares models across providers: it needs " \
        "--providers" in p.stderr


def test_eval_on_a_provider_this_build_lacks_is_refused_not_scored_on_the_cpu():
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this build has TensorRT")
    model = Path(__file__).resolve().parents[2] / "models" / "yoeo-demo-int8.onnx"
    p = run_cli("eval", "--model", str(model), "--scenes", "2", "--provider", "tensorrt",
                timeout=120)
    assert p.returncode == 1 and p.stdout == ""
    assert "--provider tensorrt: onnxruntime did not take TensorrtExecutionProvider" in p.stderr
    p = run_cli("eval", "--model", str(model), "--scenes", "4", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["provider"] == "CPUExecutionProvider" and r["scenes"] == 4
    assert r["placement"].startswith("CPUExecutionProvider: ")
