"""`edged run` end to end: a real subprocess, real sockets, real files, real signals."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from modelgen import expected_camera_boxes, painted_frame

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message


def write_config(path: Path, model: Path, endpoints: list[str], cameras: str,
                 extra: str = "") -> Path:
    eps = "\n".join(f"    - {e}" for e in endpoints)
    path.write_text(f"""\
model:
  path: {model}
  threads: 1
  warmup_runs: 1
cameras:
{cameras}
publish:
  endpoints:
{eps}
log:
  stats_interval_s: 1
{extra}""")
    return path


def receive(sub: Subscriber, n: int, timeout: float = 20.0) -> list[Message | EndOfStream]:
    out: list[Message | EndOfStream] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        msg = sub.recv(timeout=0.2)
        if msg is not None:
            out.append(msg)
    return out


def test_synthetic_camera_over_tcp_and_sigterm(tmp_path, test_model, tcp_endpoint, start_daemon):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], """\
  front:
    source: synthetic
    fps: 30
    width: 640
    height: 480""")
    with Subscriber(tcp_endpoint, ["front"]) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        msgs = receive(sub, 15)
        assert len(msgs) == 15, d.log()
        assert all(isinstance(m, Message) for m in msgs)
        seqs = [m.seq for m in msgs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        now = time.time_ns()
        expected = expected_camera_boxes(640, 480)
        for m in msgs:
            assert m.camera == "front" and (m.frame_w, m.frame_h) == (640, 480)
            assert m.t_capture_ns <= m.t_publish_ns <= m.t_received_ns <= now
            assert 0 < m.latency_ms < 2000
            # 640x480 letterboxed into 416x416: the mask covers the frame at 416x312
            assert m.mask is not None and m.mask.shape == (312, 416) and m.mask.dtype == np.uint8
            assert m.mask_camera().shape == (480, 640)
            assert m.mask_classes == ("background", "lines", "field")
            assert {"preprocess", "inference", "postprocess", "queue"} <= set(m.timings_ms)
            # the planted detections, NMS applied, mapped back to camera pixels
            assert sorted(m.labels()) == ["ball", "goalpost", "robot"]
            for label, box, score in zip(m.labels(), m.boxes, m.scores):
                np.testing.assert_allclose(box, expected[label], atol=0.05)
                assert score == pytest.approx({"ball": 0.855, "goalpost": 0.72,
                                               "robot": 0.855}[label], abs=1e-4)
        code, took = d.terminate()
        assert code == 0, d.log()
        assert took < 5.0
        rest = receive(sub, 50, timeout=3.0)
        eos = [m for m in rest if isinstance(m, EndOfStream)]
        assert len(eos) == 1 and eos[0].camera == "front" and eos[0].reason == "shutdown"
        last = [m for m in rest if isinstance(m, Message)]
        assert eos[0].last_seq == (last[-1].seq if last else msgs[-1].seq)
    log = d.log()
    assert "Traceback" not in log
    assert "final front:" in log


def write_video(path: Path, frames: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """An MJPG AVI of painted frames (band layout shifted by frame index); returns masks."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (w, h))
    assert vw.isOpened()
    masks = []
    for i in range(frames):
        img, mask = painted_frame(w, h)
        shift = (i * 16) % w
        vw.write(np.ascontiguousarray(np.roll(img, shift, axis=1)))
        masks.append(np.roll(mask, shift, axis=1))
    vw.release()
    return np.stack(masks)


def test_video_file_every_frame_over_ipc(tmp_path, test_model, start_daemon):
    video = tmp_path / "clip.avi"
    masks = write_video(video, 24)
    ep = f"ipc://{tmp_path}/edged.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], f"""\
  replay:
    source: {video}
    fps: 12
    loop: false""")
    with Subscriber(ep, ["replay"]) as sub:
        d = start_daemon(cfg)
        # paced at 12 fps so the subscriber is connected (PUB/SUB slow joiner) before most
        # frames go out; every_frame mode still queues losslessly behind inference
        msgs = receive(sub, 25, timeout=30)
        code = d.proc.wait(10)
    assert code == 0, d.log()
    results = [m for m in msgs if isinstance(m, Message)]
    eos = [m for m in msgs if isinstance(m, EndOfStream)]
    assert len(eos) == 1 and eos[0].reason == "end of stream" and eos[0].last_seq == 23
    # lossless: after the first received frame, every frame arrives, in order
    seqs = [m.seq for m in results]
    assert seqs == list(range(seqs[0], 24)), seqs
    assert sub.gaps == 0
    for m in results:
        got = m.mask_camera()
        agree = (got == masks[m.seq]).mean()
        assert agree > 0.98, (m.seq, agree)


def test_image_folder_source(tmp_path, test_model, start_daemon):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        img, _ = painted_frame(320, 240)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], f"""\
  stills:
    source: {folder}
    fps: 5
    loop: false""")
    with Subscriber(ep) as sub:
        d = start_daemon(cfg)
        msgs = receive(sub, 6, timeout=30)
        assert d.proc.wait(10) == 0, d.log()
    results = [m for m in msgs if isinstance(m, Message)]
    assert results and all((m.frame_w, m.frame_h) == (320, 240) for m in results)
    _, mask = painted_frame(320, 240)
    assert (results[-1].mask_camera() == mask).mean() > 0.98
    assert isinstance(msgs[-1], EndOfStream)


def test_bad_camera_does_not_stop_the_others(tmp_path, test_model, tcp_endpoint, start_daemon):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], f"""\
  good:
    source: synthetic
    fps: 20
  missing:
    source: {tmp_path}/does-not-exist.mp4
  unplugged:
    source: /dev/video99""")
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg)
        msgs = receive(sub, 10)
        eos = [m for m in msgs if isinstance(m, EndOfStream)]
        good = [m for m in msgs if isinstance(m, Message)]
        assert len(good) >= 8 and all(m.camera == "good" for m in good)
        assert [e.camera for e in eos] <= ["missing"]
        code, took = d.terminate()  # while "unplugged" waits in its reconnect backoff
        assert code == 0 and took < 5.0
        rest = receive(sub, 100, timeout=2.0)
    assert {m.camera for m in rest if isinstance(m, EndOfStream)} >= {"good", "unplugged"}
    log = d.log()
    assert "file not found: video " in log
    # a live device is retried, but its failure is logged once, not once per attempt
    assert log.count("V4L2 /dev/video99: the device does not exist") == 1
    assert "camera unplugged: reconnecting" in log


def test_echo_prints_one_json_line_per_message(tmp_path, test_model, tcp_endpoint,
                                               start_daemon):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], """\
  front:
    source: synthetic
    fps: 20""")
    d = start_daemon(cfg)
    d.wait_for("ready")
    p = run_cli("echo", "--connect", tcp_endpoint, "--camera", "front", "--count", "5", "--json",
                "--timeout", "30")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(lines) == 5
    assert [ln["seq"] for ln in lines] == sorted(ln["seq"] for ln in lines)
    for ln in lines:
        assert ln["camera"] == "front" and ln["latency_ms"] > 0
        assert sorted(x["class"] for x in ln["detections"]) == ["ball", "goalpost", "robot"]
        assert set(ln["mask_classes"]) <= {"background", "lines", "field"}
    assert d.terminate()[0] == 0


def run_cli(*args: str, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_missing_model_is_a_clear_error(tmp_path, tcp_endpoint):
    cfg = write_config(tmp_path / "cfg.yaml", tmp_path / "nope.onnx", [tcp_endpoint], """\
  a:
    source: synthetic""")
    for cmd in ("run", "check"):
        p = run_cli(cmd, "-c", str(cfg))
        assert p.returncode == 1
        assert f"model file not found: {tmp_path / 'nope.onnx'}" in p.stderr
        assert "Traceback" not in p.stderr + p.stdout


def test_corrupt_model_is_a_clear_error(tmp_path, tcp_endpoint):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx file")
    cfg = write_config(tmp_path / "cfg.yaml", bad, [tcp_endpoint], """\
  a:
    source: synthetic""")
    p = run_cli("run", "-c", str(cfg))
    assert p.returncode == 1
    assert f"cannot load model {bad}" in p.stderr
    assert "Traceback" not in p.stderr


def test_check_reports_config_and_model(tmp_path, test_model, tcp_endpoint):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], """\
  a:
    source: synthetic""")
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 0, p.stderr
    assert "camera a: synthetic" in p.stdout
    assert "format yoeo (recognised from the graph" in p.stdout
    assert "CPUExecutionProvider" in p.stdout


@pytest.mark.parametrize("snippet, line, needle", [
    ("model:\n  path: m.onnx\n  treshold: 0.5\ncameras:\n  a:\n    source: synthetic\n",
     3, "did you mean"),
    ("model:\n  path: m.onnx\ncameras:\n  a:\n    source: synthetic\n    fps: fast\n",
     6, "cameras.a.fps"),
    ("model:\n  path: m.onnx\n  conf_threshold: 1.5\ncameras:\n  a:\n    source: synthetic\n",
     3, "model.conf_threshold"),
    ("model:\n  path: m.onnx\ncameras:\n  a:\n    source: synthetic\npublish:\n"
     "  mask_encoding: lz5\n", 7, "publish.mask_encoding"),
    ("model:\n  path: m.onnx\ncameras:\n  a:\n    fps: 3\n", 4, "cameras.a.source"),
    ("model:\n  path: m.onnx\ncameras:\n  a:\n    source: [synthetic\n", 6,
     "YAML syntax error"),
    ("model:\n  path: m.onnx\ncameras:\n  a:\n    source: rtsp://u:${NO_SUCH_VAR_X}@h/s\n",
     5, "NO_SUCH_VAR_X"),
])
def test_check_errors_name_file_line_and_key(tmp_path, snippet, line, needle):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(snippet)
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 1
    assert f"cfg.yaml:{line}" in p.stderr, p.stderr
    assert needle in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_http_mjpeg_camera(tmp_path, test_model, tcp_endpoint, start_daemon, mjpeg_server):
    img, mask = painted_frame(320, 240)
    server = mjpeg_server(lambda i: img)
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], f"""\
  ipcam:
    source: {server.url}""")
    with Subscriber(tcp_endpoint, ["ipcam"]) as sub:
        d = start_daemon(cfg)
        msgs = [m for m in receive(sub, 5) if isinstance(m, Message)]
        assert d.terminate()[0] == 0
    assert len(msgs) == 5, d.log()
    assert "camera ipcam: url source http://127.0.0.1" in d.log()
    for m in msgs:
        assert (m.frame_w, m.frame_h) == (320, 240)
        assert (m.mask_camera() == mask).mean() > 0.98


def test_echo_stops_at_end_of_stream(tmp_path, test_model, start_daemon):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), painted_frame(160, 120)[0])
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], f"""\
  stills:
    source: {folder}
    fps: 4
    loop: false""")
    echo = subprocess.Popen([sys.executable, "-m", "edged", "echo", "--connect", ep,
                             "--camera", "stills", "--timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    d = start_daemon(cfg)
    out, err = echo.communicate(timeout=40)
    assert echo.returncode == 0, err
    assert d.proc.wait(10) == 0
    assert out.splitlines()[-1] == "stills end of stream after seq 2 (end of stream)"


# ------------------------------------------------- `check` fails exactly when `run` would


def assert_clean_failure(p: subprocess.CompletedProcess, *needles: str) -> None:
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    for needle in needles:
        assert needle in p.stderr, out
    assert "Traceback" not in out, out


def run_both(cfg: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`edged check` and `edged run` on the same config (run stops itself if it starts)."""
    return run_cli("check", "-c", str(cfg)), run_cli("run", "-c", str(cfg), "--frames", "2")


@pytest.mark.parametrize(("endpoint", "why"), [
    ("tcp://127.0.0.1:0", "give an explicit port"),
    ("tcp://127.0.0.1:70000", "the port 70000 is out of range (1-65535)"),
])
def test_bad_port_fails_check_and_run_alike(tmp_path, test_model, endpoint, why):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [endpoint], "  a:\n    source: synthetic")
    for p in run_both(cfg):
        assert_clean_failure(p, "cfg.yaml:10: publish.endpoints[0]: " + why, repr(endpoint))


def test_huge_sndhwm_is_a_config_error(tmp_path, test_model, tcp_endpoint):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint],
                       "  a:\n    source: synthetic")
    cfg.write_text(cfg.read_text().replace("publish:\n", "publish:\n  sndhwm: 1000000000000\n"))
    for p in run_both(cfg):
        assert_clean_failure(p, "publish.sndhwm: Input should be less than or equal to 10000")


def listening_socket() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def test_metrics_port_in_use_fails_check_and_run_before_ready(tmp_path, test_model,
                                                              tcp_endpoint):
    held, port = listening_socket()
    with held:
        cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint],
                           "  a:\n    source: synthetic", extra=f'  metrics: "127.0.0.1:{port}"\n')
        check, run = run_both(cfg)
    why = f"cannot listen on log.metrics 127.0.0.1:{port}: Address already in use"
    assert_clean_failure(check, f"edged check: {why}")
    assert f"publish: {tcp_endpoint}: bound OK" in check.stdout  # the rest was checked too
    assert_clean_failure(run, why)
    errors = [ln for ln in run.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and errors[0].endswith(why), run.stderr
    assert "pipeline: ready" not in run.stderr  # never started: no READY for systemd


def test_publish_port_in_use_fails_check(tmp_path, test_model):
    held, port = listening_socket()
    with held:
        cfg = write_config(tmp_path / "cfg.yaml", test_model, [f"tcp://127.0.0.1:{port}"],
                           "  a:\n    source: synthetic")
        check, run = run_both(cfg)
    for p in (check, run):
        assert_clean_failure(p, f"cannot bind tcp://127.0.0.1:{port}: Address already in use")
    assert f"edged check: publish.endpoints: cannot bind tcp://127.0.0.1:{port}" in check.stderr


def test_check_binds_and_releases_every_address(tmp_path, test_model, tcp_endpoint):
    from conftest import free_port

    port = free_port()
    ipc = f"ipc://{tmp_path}/pub.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint, ipc],
                       "  a:\n    source: synthetic", extra=f'  metrics: "127.0.0.1:{port}"\n')
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 0, p.stderr
    for line in (f"publish: {tcp_endpoint}: bound OK", f"publish: {ipc}: bound OK",
                 f"metrics: 127.0.0.1:{port}: bound OK", "warm-up inference at 640x480: OK"):
        assert line in p.stdout
    # released again: edged run can bind all of them right after
    for addr in (("127.0.0.1", port), ("127.0.0.1", int(tcp_endpoint.rsplit(":", 1)[1]))):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    assert not (tmp_path / "pub.sock").exists()


def manifest_320(model: Path) -> Path:
    """A manifest that says 320x320 beside a graph that takes 416x416."""
    manifest = json.loads((Path(__file__).parents[2] / "models" /
                           "yoeo-demo-int8-320.json").read_text())
    manifest["name"] = model.stem
    model.with_suffix(".json").write_text(json.dumps(manifest))
    return model


@pytest.mark.parametrize("kind", ["manifest-320-graph-416", "one-channel-input"])
def test_model_that_cannot_run_a_frame_fails_check_and_run_alike(tmp_path, tcp_endpoint, kind):
    from modelgen import yoeo_model

    if kind == "manifest-320-graph-416":
        model = manifest_320(yoeo_model(tmp_path / "m.onnx", size=416))
        detail = ("edged feeds input InputLayer as 1x3x320x320, as the manifest m.json says; "
                  "the graph takes 1x3x416x416")
    else:
        model = yoeo_model(tmp_path / "m.onnx", channels=1)
        detail = "edged feeds input InputLayer as 1x3x416x416, as the graph says; the graph " \
                 "takes 1x1x416x416"
    cfg = write_config(tmp_path / "cfg.yaml", model, [tcp_endpoint], """\
  a:
    source: synthetic
    width: 320
    height: 240""")
    check, run = run_both(cfg)
    why = f"{model}: the warm-up inference on a 320x240 frame failed: "
    for p in (check, run):
        assert_clean_failure(p, why, detail)
    assert "pipeline: ready" not in run.stderr


def test_check_warms_up_at_each_camera_size(tmp_path, test_model, tcp_endpoint):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], """\
  a:
    source: synthetic
    width: 320
    height: 240
  b:
    source: synthetic""")
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 0, p.stderr
    assert "warm-up inference at 320x240, 640x480: OK" in p.stdout
