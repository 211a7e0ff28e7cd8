"""Inference workers: the automatic plan, batching across cameras, stuck runs, the ladder.

Daemon tests run `edged run` as a subprocess on real sessions of small generated models.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from modelgen import painted_frame, slow_yoeo_model, stalling_yoeo_model, yoeo_model
from test_daemon import run_cli, write_config, write_video

from edged.config import LadderConfig
from edged.inference.ladder import Ladder
from edged.inference.pool import choose_batch
from edged.inference.runner import ModelOptions, ModelRunner, plan_workers
from edged.results import Frame
from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message
from edged.wire.telemetry import ModelEvent, Stats


def until_eos(sub: Subscriber, cameras: set[str], timeout: float = 60.0
              ) -> list[Message | EndOfStream]:
    """Everything received until each camera's end-of-stream (or the timeout)."""
    out: list[Message | EndOfStream] = []
    ended: set[str] = set()
    end = time.monotonic() + timeout
    while ended != cameras and time.monotonic() < end:
        m = sub.recv(timeout=0.2)
        if isinstance(m, Message | EndOfStream):
            out.append(m)
            if isinstance(m, EndOfStream):
                ended.add(m.camera)
    return out


FINAL_INFERENCE = re.compile(r"final inference: (\d+) frames in (\d+) runs \(mean batch "
                             r"([\d.]+), largest (\d+)\), (\d+) worker\(s\) recreated")


# ---------------------------------------------------------------- the plan


@pytest.mark.parametrize(("workers", "threads", "cores", "cameras", "single_rt", "want"), [
    (0, 0, 2, 1, True, (1, 2)),  # one live camera: one worker, every core (latency)
    (0, 0, 2, 1, False, (2, 1)),  # a replayed file: throughput
    (0, 0, 2, 4, False, (2, 1)),
    (0, 0, 8, 4, False, (4, 2)),
    (0, 0, 16, 6, False, (4, 4)),  # at most four workers
    (0, 0, 1, 3, False, (1, 1)),
    (3, 0, 8, 1, True, (3, 2)),  # what the config says stands
    (0, 3, 8, 4, False, (4, 3)),
])
def test_plan_workers(workers, threads, cores, cameras, single_rt, want):
    assert plan_workers(workers, threads, cores=cores, cameras=cameras,
                        single_realtime=single_rt) == want


def test_choose_batch_takes_a_batch_only_when_it_pays():
    # 25% cheaper per frame at batch 2, and 4 x 6 ms fits half of a 100 ms budget
    assert choose_batch(0, {1: 8.0, 2: 6.0, 4: 6.0}, 100.0, 4)[0] == 2
    assert choose_batch(0, {1: 8.0, 2: 7.5, 4: 7.4}, 100.0, 4) == (
        1, "no batch size was 10% faster per frame")
    assert choose_batch(0, {1: 8.0, 2: 4.0, 4: 3.0}, 100.0, 4)[0] == 4
    assert choose_batch(0, {1: 8.0, 2: 4.0, 4: 3.0}, 20.0, 4)[0] == 2  # 4 x 3 ms > 10 ms
    assert choose_batch(0, {1: 8.0, 2: 6.0, 4: 3.0}, 10.0, 4)[0] == 1  # 2 x 6 ms > 5 ms
    assert choose_batch(0, {1: 8.0, 2: 4.0, 4: 3.0}, 100.0, 2)[0] == 2  # only two cameras
    assert choose_batch(0, {1: 8.0}, 100.0, 4, dynamic=False) == (
        1, "the model's batch dimension is fixed")
    # a dynamic batch that would not run, and one camera, are not a fixed batch
    assert "did not run" in choose_batch(0, {1: 8.0}, 100.0, 4)[1]
    assert choose_batch(0, {1: 8.0}, 100.0, 1) == (1, "one camera")
    assert choose_batch(1, {1: 8.0, 2: 1.0}, 100.0, 4) == (1, "model.batch is 1")
    assert choose_batch(3, {1: 8.0, 2: 9.0}, 100.0, 4) == (3, "model.batch is 3")


# ---------------------------------------------------------------- batching


@pytest.fixture(scope="module")
def batch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return yoeo_model(tmp_path_factory.mktemp("batch") / "dyn.onnx", batch="N", convs=True)


def test_a_batch_gives_each_frame_its_own_result(batch_model):
    runner = ModelRunner(ModelOptions(path=batch_model, threads=1))
    assert runner.dynamic_batch
    img, _ = painted_frame(640, 480)
    frames = [Frame("a", 0, img, 1, 1), Frame("b", 7, np.ascontiguousarray(img[:, ::-1]), 2, 2),
              Frame("c", 3, cv2.resize(img, (320, 240)), 3, 3)]
    batched = runner.infer_batch(frames)
    assert [(r.camera, r.seq, r.frame_w) for r in batched] == [("a", 0, 640), ("b", 7, 640),
                                                              ("c", 3, 320)]
    for frame, got in zip(frames, batched):
        alone = runner.infer(frame)
        assert np.array_equal(got.mask, alone.mask)
        np.testing.assert_allclose(got.detections.boxes, alone.detections.boxes, atol=1e-4)
    # the mirrored frame's mask is mirrored: no frame got another's output
    assert np.array_equal(batched[1].mask, batched[0].mask[:, ::-1])
    measured = runner.batch_speedup((2, 4), runs=2)
    assert set(measured) == {1, 2, 4} and all(v > 0 for v in measured.values())


def test_a_fixed_batch_model_is_never_batched(test_model):
    runner = ModelRunner(ModelOptions(path=test_model, threads=1))
    assert not runner.dynamic_batch
    assert set(runner.batch_speedup((2, 4), runs=1)) == {1}


def test_start_timing_stops_at_its_time_limit(test_model):
    # a model that takes seconds per frame must not hold the start for `runs` of them
    runner = ModelRunner(ModelOptions(path=test_model, threads=1))
    calls = []
    run = runner.run_tensor
    runner.run_tensor = lambda t: (calls.append(1), run(t))[1]  # type: ignore[method-assign]
    assert set(runner.batch_speedup((), runs=1000, max_s=0.0)) == {1}
    assert len(calls) == 2  # the warm-up and one timed run
    calls.clear()
    runner.batch_speedup((), runs=3, max_s=60.0)
    assert len(calls) == 4


def test_daemon_batches_frames_of_several_cameras(tmp_path, batch_model, start_daemon):
    sizes = {"a": (640, 480), "b": (320, 240), "c": (480, 360)}
    masks = {n: write_video(tmp_path / f"{n}.avi", 40, size) for n, size in sizes.items()}
    ep = f"ipc://{tmp_path}/e.sock"
    cams = "\n".join(f"""\
  {n}:
    source: {tmp_path / f"{n}.avi"}
    loop: false""" for n in sizes)
    cfg = write_config(tmp_path / "cfg.yaml", batch_model, [ep], cams,
                       extra="").read_text().replace("  threads: 1\n",
                                                     "  threads: 1\n  workers: 1\n  batch: 4\n")
    (tmp_path / "cfg.yaml").write_text(cfg)
    with Subscriber(ep) as sub:
        time.sleep(0.3)
        d = start_daemon(tmp_path / "cfg.yaml")
        msgs = until_eos(sub, set(sizes))
        assert d.proc.wait(20) == 0, d.log()
    results = [m for m in msgs if isinstance(m, Message)]
    assert {m.camera for m in msgs if isinstance(m, EndOfStream)} == set(sizes)
    assert len(results) >= 60, len(results)
    for m in results:  # every frame got its own camera's mask back
        agree = (m.mask_camera() == masks[m.camera][m.seq]).mean()
        assert agree > 0.98, (m.camera, m.seq, agree)
    log = d.log()
    assert "batch up to 4 (model.batch is 4)" in log
    frames, runs, mean, largest, _ = FINAL_INFERENCE.search(log).groups()
    assert int(frames) == 120 and float(mean) > 1.3 and int(largest) >= 2, log


# ---------------------------------------------------------------- stuck inference


@pytest.fixture(scope="module")
def stalling_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stalling_yoeo_model(tmp_path_factory.mktemp("stall") / "stalling.onnx")


def _folder(path: Path, bright: list[int], n: int) -> Path:
    path.mkdir()
    for i in range(n):
        value = 255 if i in bright else 40
        cv2.imwrite(str(path / f"{i:03d}.png"), np.full((240, 320, 3), value, np.uint8))
    return path


def _stills_config(tmp_path: Path, model: Path, folder: Path, *, fps: int, loop: bool,
                   stuck_after_s: float) -> Path:
    """One image-folder camera on one worker, with the given stuck deadline."""
    cfg = write_config(tmp_path / "cfg.yaml", model, [f"ipc://{tmp_path}/e.sock"], f"""\
  stills:
    source: {folder}
    fps: {fps}
    loop: {str(loop).lower()}""")
    cfg.write_text(cfg.read_text().replace(
        "  threads: 1\n", f"  threads: 1\n  workers: 1\n  stuck_after_s: {stuck_after_s}\n"))
    return cfg


def test_stuck_inference_gets_a_new_worker_and_the_camera_carries_on(
        tmp_path, stalling_model, start_daemon):
    # the first frames give the subscriber time to connect; frame 8 wedges the model
    folder = _folder(tmp_path / "imgs", bright=[8], n=16)
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = _stills_config(tmp_path, stalling_model, folder, fps=10, loop=False,
                         stuck_after_s=0.5)
    with Subscriber(ep) as sub:
        time.sleep(0.3)
        d = start_daemon(cfg)
        msgs = until_eos(sub, {"stills"})
        assert d.proc.wait(20) == 0, d.log()
    log = d.log()
    seqs = [m.seq for m in msgs if isinstance(m, Message)]
    # the bright frame is lost, nothing else: every frame from the first received on
    assert seqs == [i for i in range(seqs[0], 16) if i != 8] and seqs[0] < 8, seqs
    assert isinstance(msgs[-1], EndOfStream) and msgs[-1].last_seq == 15
    assert "inference stuck for" in log and "camera stills frame 8" in log
    assert "worker 0 recreated (1 so far)" in log
    assert int(FINAL_INFERENCE.search(log).group(5)) == 1
    assert re.search(r"final stills: .*errors 1,", log), log
    assert "Traceback" not in log


def test_a_worker_that_keeps_getting_stuck_ends_edged_with_status_1(
        tmp_path, stalling_model, start_daemon):
    folder = _folder(tmp_path / "imgs", bright=list(range(10)), n=10)
    cfg = _stills_config(tmp_path, stalling_model, folder, fps=20, loop=True,
                         stuck_after_s=0.3)
    d = start_daemon(cfg)
    code = d.proc.wait(60)
    log = d.log()
    assert code == 1, log
    assert log.count("recreated (") == 3, log
    assert "giving up: inference workers were recreated 3 times within 10 min" in log
    assert "end of stream published" in log  # the camera still got its end-of-stream
    assert "Traceback" not in log


# ---------------------------------------------------------------- the ladder


def _ladder(**kw: float) -> Ladder:
    cfg = LadderConfig.model_validate({"variants": [{"path": "/m/b.onnx"}, {"path": "/m/c.onnx"}],
                                       **kw})
    return Ladder(cfg, [40.0, 20.0, 10.0], now=0.0)


def test_ladder_goes_down_on_persistent_misses_only():
    lad = _ladder(down_after_s=2, up_after_s=5)
    # one bad tick is not persistent: nothing before down_after_s has passed
    assert lad.update(0.5, 10, 10, {"a": [300.0]}, {"a": 100.0}) is None
    t = 0.5
    switch = None
    while switch is None and t < 10:
        t += 0.5
        switch = lad.update(t, 10, 5, {"a": [150.0]}, {"a": 100.0})
    assert switch is not None and (switch.previous, switch.rung) == (0, 1)
    assert 2.0 <= t <= 2.5 and "missed the budget" in switch.reason
    # a few misses under miss_ratio (10%) do not count as persistent
    for _ in range(20):
        t += 0.5
        assert lad.update(t, 100, 5, {"a": [90.0]}, {"a": 100.0}) is None
    assert lad.rung == 1


def test_ladder_goes_back_up_only_with_predicted_headroom():
    lad = _ladder(down_after_s=1, up_after_s=3, headroom=0.7)
    lad.rung = 2  # costs 10 ms; the rung above costs 20 ms: 10 ms more per run
    t = 0.0

    def run(p90: float, ticks: int, load: float = 1.0) -> list[tuple[float, int]]:
        nonlocal t
        ups = []
        for _ in range(ticks):
            t += 0.5
            s = lad.update(t, 20, 0, {"a": [p90] * 20}, {"a": 100.0}, load)
            if s is not None:
                ups.append((t, s.rung))
        return ups

    assert run(65.0, 20) == []  # 65 + 10 > 70% of the budget: stays
    assert run(35.0, 20, load=4) == []  # four cameras per worker: 35 + 4 x 10 > 70
    ups = run(58.0, 20)  # 58 + 10 fits: up after up_after_s; then 58 + 20 does not
    assert [r for _, r in ups] == [1] and ups[0][0] - 20 * 0.5 >= 3.0, ups
    assert run(55.0, 20) == []  # at rung 1: 55 + 20 > 70
    ups = run(10.0, 20)
    assert [r for _, r in ups] == [0]
    # one miss in the window resets the clock
    lad2 = _ladder(down_after_s=1, up_after_s=3, headroom=0.7)
    lad2.rung, t = 1, 0.0
    for i in range(12):
        t += 0.5
        assert lad2.update(t, 20, 1 if i == 5 else 0, {"a": [5.0]}, {"a": 100.0}) is None
    assert lad2.rung == 1


@pytest.fixture(scope="module")
def ladder_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ladder")
    return (slow_yoeo_model(d / "slow.onnx", matmuls=6, size=512),
            slow_yoeo_model(d / "fast.onnx", matmuls=2, size=256))


def _ladder_config(path: Path, models: tuple[Path, Path], ep: str, cams: list[str],
                   budget_ms: float) -> Path:
    cameras = "\n".join(f"""\
  {n}:
    source: synthetic
    seed: {i}
    width: 160
    height: 120
    fps: 30""" for i, n in enumerate(cams))
    path.write_text(f"""\
model:
  path: {models[0]}
  threads: 1
  workers: 1
  warmup_runs: 1
  ladder:
    variants:
      - path: {models[1]}
    down_after_s: 1
    up_after_s: 2
    headroom: 0.8
budget:
  latency_ms: {budget_ms:.1f}
cameras:
{cameras}
publish:
  endpoints: [{ep}]
log:
  stats_interval_s: 1
""")
    return path


def test_ladder_switches_down_under_load_and_back_when_it_goes(tmp_path, ladder_models,
                                                               tcp_endpoint, start_daemon):
    # Every budget comes from what the slow variant costs inside the running daemon (its
    # own `_stats`), not from a measurement in this process: under a CPU hog the two
    # differ, and with latest-frame-wins more cameras lower each camera's rate, not its
    # latency, so "load" here is a budget the slow variant cannot meet at all.
    cams = ["a", "b", "c", "d"]
    cfg = _ladder_config(tmp_path / "cfg.yaml", ladder_models, tcp_endpoint, cams, 60000)
    events: list[ModelEvent] = []
    models_seen: list[tuple[float, str]] = []
    slow_ms: list[float] = []
    with Subscriber(tcp_endpoint, stats=True) as sub:
        d = start_daemon(cfg)
        d.wait_for("degradation ladder: slow")

        def until(pred, timeout: float) -> None:
            end = time.monotonic() + timeout
            while time.monotonic() < end and not pred():
                m = sub.recv(timeout=0.1)
                if isinstance(m, ModelEvent):
                    events.append(m)
                elif isinstance(m, Message):
                    models_seen.append((time.monotonic(), m.model))
                elif isinstance(m, Stats):
                    got = [s.stages_ms_p50["inference"] for s in m.snapshots.values()
                           if s.variant == "slow" and "inference" in s.stages_ms_p50]
                    if len(got) == len(cams):
                        slow_ms.append(float(np.median(got)))

        # the slow variant's cost, four cameras on one worker, as the daemon measures it
        until(lambda: len(slow_ms) >= 2, 30)
        assert len(slow_ms) >= 2 and not events, (slow_ms, events, d.log())
        cost = slow_ms[-1]
        # a budget of half that: every frame of the slow variant misses it
        _ladder_config(cfg, ladder_models, tcp_endpoint, cams, 0.5 * cost)
        d.proc.send_signal(signal.SIGHUP)
        until(lambda: len(events) >= 1, 30)
        assert events and events[0].variant == "fast" and events[0].rung == 1, d.log()
        assert events[0].previous == "slow" and "missed the budget" in events[0].reason
        # the fast variant (about a tenth of the cost) fits: it stays (no oscillation)
        t_down = time.monotonic()
        until(lambda: time.monotonic() - t_down > 4, 10)
        assert len(events) == 1, (events, d.log())
        assert models_seen and models_seen[-1][1] == "fast", (models_seen[-5:], d.log())
        # three cameras go away and the budget is four times the slow cost: the slow
        # variant fits again, and edged goes back up
        _ladder_config(cfg, ladder_models, tcp_endpoint, ["a"], 4 * cost)
        d.proc.send_signal(signal.SIGHUP)
        until(lambda: len(events) >= 2, 30)
        assert len(events) == 2 and events[1].variant == "slow" and events[1].rung == 0, \
            (events, d.log())
        assert "headroom" in events[1].reason
        until(lambda: bool(models_seen) and models_seen[-1][1] == "slow", 10)
        assert models_seen[-1][1] == "slow"
        code, _ = d.terminate()
    log = d.log()
    assert code == 0
    assert "ladder: slow -> fast" in log and "ladder: fast -> slow" in log


# ---------------------------------------------------------------- overload


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_twice_overloaded_camera_stays_inside_the_budget(tmp_path, tcp_endpoint, start_daemon):
    """A camera at more than twice the model's capacity, budget 3x its inference time:
    the published, non-late results arrive within the budget, and memory stays flat."""
    model = slow_yoeo_model(tmp_path / "m.onnx", matmuls=4, size=384)
    runner = ModelRunner(ModelOptions(path=model, threads=1))
    runner.warmup(2)
    infer_ms = runner.batch_speedup((), runs=7)[1]
    capacity = 1000.0 / infer_ms
    budget = 3 * infer_ms
    fps = min(2.5 * capacity, 300)
    seconds = float(os.environ.get("EDGED_OVERLOAD_S", "20"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""\
model:
  path: {model}
  threads: 1
  workers: 1
  warmup_runs: 1
budget:
  latency_ms: {budget:.2f}
cameras:
  fast:
    source: synthetic
    width: 160
    height: 120
    fps: {fps:.1f}
publish:
  endpoints: [{tcp_endpoint}]
log:
  stats_interval_s: 1
""")
    received: list[Message] = []
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        t0 = time.monotonic()
        rss_early = None
        while time.monotonic() - t0 < seconds:
            m = sub.recv(timeout=0.1)
            if isinstance(m, Message):
                received.append(m)
            if rss_early is None and time.monotonic() - t0 >= seconds / 6:
                rss_early = _rss_kib(d.proc.pid)
        rss_end = _rss_kib(d.proc.pid)
        assert d.terminate()[0] == 0
    log = d.log()
    # the budget bounds capture to publish, by each message's own stamps: the late flag is
    # decided at the stamp, so no result without it can be over the budget
    on_time = [(m.t_publish_ns - m.t_capture_ns) / 1e6 for m in received[20:]
               if "late" not in m.flags]
    late = [m for m in received if "late" in m.flags]
    assert len(on_time) >= 10, (len(on_time), len(late), log)
    assert max(on_time) <= budget, (max(on_time), budget, infer_ms, len(late))
    p99 = float(np.percentile(on_time, 99))
    # the camera outran the model: frames were replaced before inference, never queued
    final = re.search(r"final fast: capture ([\d.]+) fps, processed ([\d.]+) fps, .* dropped "
                      r"(\d+) overwritten (\d+) stale", log)
    assert final, log
    cap_fps, proc_fps, over, stale = (float(final.group(1)), float(final.group(2)),
                                      int(final.group(3)), int(final.group(4)))
    assert over > 0 and cap_fps > proc_fps, (final.group(0), log)
    # The rates depend on the machine and what else it runs, so they are reported (the
    # benchmark in docs/benchmarks.md runs this test with -s), not asserted.
    print(f"overload: inference {infer_ms:.2f} ms (capacity {capacity:.0f} fps), budget "
          f"{budget:.2f} ms, camera {fps:.0f} fps for {seconds:.0f} s; captured {cap_fps:.0f} "
          f"fps, processed {proc_fps:.0f} fps; {len(received)} received, "
          f"{len(on_time)} on time ({len(on_time) / seconds / capacity:.0%} of capacity), "
          f"{len(late)} late, {over} overwritten, {stale} stale; on-time p99 "
          f"capture-to-publish {p99:.2f} ms, capture-to-received "
          f"{np.percentile([m.latency_ms for m in received[20:] if 'late' not in m.flags], 99):.2f}"
          f" ms; RSS {rss_early} -> {rss_end} KiB")
    assert rss_end <= 1.10 * rss_early, (rss_early, rss_end)


def test_check_shows_the_plan_and_loads_every_ladder_rung(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    p = run_cli("check", "-c", str(repo / "configs" / "ladder.yaml"))
    assert p.returncode == 0, p.stderr
    assert re.search(r"plan: \d+ inference worker\(s\) x \d+ thread\(s\)", p.stdout), p.stdout
    assert "ladder rung 1: yoeo-demo-int8 (" in p.stdout
    assert "ladder rung 2: yoeo-demo-int8-320 (" in p.stdout and "320x320): OK" in p.stdout
    # a variant that is missing is named, and check fails
    broken = tmp_path / "ladder.yaml"
    broken.write_text((repo / "configs" / "ladder.yaml").read_text().replace(
        "builtin:yoeo-demo-int8-320.onnx", str(tmp_path / "gone.onnx")))
    p = run_cli("check", "-c", str(broken))
    assert p.returncode == 1
    assert f"model.ladder.variants[1]: model file not found: {tmp_path / 'gone.onnx'}" \
        in p.stderr, p.stderr
    # and `edged run` refuses to start with it, without a traceback
    p = run_cli("run", "-c", str(broken), "--frames", "1")
    assert p.returncode == 1 and "model.ladder.variants[1]: model file not found" in p.stderr
    assert "Traceback" not in p.stderr


def test_sigterm_during_a_wedged_inference_exits_in_bounded_time(tmp_path, start_daemon):
    # a run of about 20 s on the bright frame: far past the stop's drain time
    model = stalling_yoeo_model(tmp_path / "wedge.onnx", iterations=40000)
    folder = _folder(tmp_path / "imgs", bright=[5], n=12)
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = _stills_config(tmp_path, model, folder, fps=10, loop=False, stuck_after_s=60)
    with Subscriber(ep) as sub:
        time.sleep(0.3)
        d = start_daemon(cfg)
        got: list[Message | EndOfStream] = []
        end = time.monotonic() + 30
        while time.monotonic() < end and not any(
                isinstance(m, Message) and m.seq == 4 for m in got):
            m = sub.recv(timeout=0.2)
            if m is not None:
                got.append(m)
        time.sleep(1.0)  # frame 5 is inside the model now
        code, took = d.terminate(timeout=15)
        got += until_eos(sub, {"stills"}, timeout=5)
    log = d.log()
    assert code == 0 and took < 8.0, (code, took, log)
    assert "stopping: 1 inference run(s) still busy after 3 s, given up" in log
    assert "exiting with 1 inference thread(s) still stuck in the model" in log
    eos = [m for m in got if isinstance(m, EndOfStream)]
    assert len(eos) == 1 and eos[0].last_seq == 4, (eos, log)
    assert "Traceback" not in log
