"""sd_notify to a fake NOTIFY_SOCKET: READY after warm-up, watchdog only while healthy."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from modelgen import slow_yoeo_model
from test_daemon import write_config


def notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.1)
    return s, path


def collect(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            out.append((time.monotonic(), sock.recv(4096).decode()))
    return out


def start(cfg: Path, notify: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, NOTIFY_SOCKET=notify, WATCHDOG_USEC="300000", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def test_ready_status_watchdog_and_stopping(tmp_path, test_model, tcp_endpoint):
    sock, path = notify_socket(tmp_path)
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], """\
  cam:
    source: synthetic
    fps: 10""")
    p = start(cfg, path, tmp_path / "log")
    try:
        msgs = []
        # the start runs the model a few times (placement, warm-up, one timed run): on a
        # loaded machine that alone can take half a minute
        end = time.monotonic() + 90
        while not any(m.startswith("READY=1") for _, m in msgs) and time.monotonic() < end:
            msgs += collect(sock, 0.2)
        msgs += collect(sock, 2.5)
        p.send_signal(signal.SIGTERM)
        msgs += collect(sock, 1.5)
        assert p.wait(5) == 0
    finally:
        p.kill()
    texts = [m for _, m in msgs]
    assert texts[0].startswith("READY=1")
    log = (tmp_path / "log").read_text()
    assert "ready:" in log
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    assert len(pings) >= 12  # every 0.1 s (WATCHDOG_USEC / 3) for 2.5 s
    assert any(m.startswith("STATUS=cam ") and "fps (running)" in m for m in texts)
    assert "STOPPING=1" in texts


def test_stuck_inference_withholds_watchdog(tmp_path, tcp_endpoint):
    # one inference takes seconds, well past stuck_after_s (120 fp32 1024^3 products:
    # ~2 s even on a 2-core AMX machine, where 60 of them took under a second)
    model = slow_yoeo_model(tmp_path / "slow.onnx", matmuls=120, size=1024)
    sock, path = notify_socket(tmp_path)
    cfg = write_config(tmp_path / "cfg.yaml", model, [tcp_endpoint], """\
  cam:
    source: synthetic
    width: 160
    height: 120
    fps: 5""").read_text().replace("warmup_runs: 1", "warmup_runs: 0\n  stuck_after_s: 0.3")
    (tmp_path / "cfg.yaml").write_text(cfg)
    p = start(tmp_path / "cfg.yaml", path, tmp_path / "log")
    try:
        msgs = []
        # the start runs the model a few times (placement, warm-up, one timed run): on a
        # loaded machine that alone can take half a minute
        end = time.monotonic() + 90
        while not any(m.startswith("READY=1") for _, m in msgs) and time.monotonic() < end:
            msgs += collect(sock, 0.2)
        msgs += collect(sock, 5.0)
    finally:
        p.kill()
        p.wait()
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    ready = [t for t, m in msgs if m.startswith("READY=1")]
    assert ready
    # after the first frame starts, pings stop for well over stuck_after_s (0.3 s)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert pings and (max(gaps, default=0) > 0.6 or msgs[-1][0] - pings[-1] > 0.6), pings
    assert "inference stuck for" in (tmp_path / "log").read_text()


def test_prometheus_endpoint(tmp_path, test_model, tcp_endpoint, start_daemon):
    import urllib.error
    import urllib.request

    from conftest import free_port

    port = free_port()
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], """\
  front:
    source: synthetic
    width: 320
    height: 240
    fps: 20""").read_text().replace("  stats_interval_s: 1", f"""\
  stats_interval_s: 1
  metrics: "127.0.0.1:{port}\"""")
    (tmp_path / "cfg.yaml").write_text(cfg)
    d = start_daemon(tmp_path / "cfg.yaml")
    d.wait_for("metrics on http://")
    time.sleep(2.5)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "# TYPE edged_processed_fps gauge" in body
    fps = [float(line.split()[-1]) for line in body.splitlines()
           if line.startswith('edged_processed_fps{camera="front"}')]
    assert fps and 0 < fps[0] <= 30
    assert 'edged_dropped_total{camera="front",cause="stale"} 0' in body
    assert 'edged_camera_up{camera="front",state="running"} 1' in body
    assert 'edged_capture_events_total{camera="front",kind="stalls"} 0' in body
    assert 'edged_budget_misses_total{camera="front"} 0' in body
    assert 'edged_stage_latency_ms{camera="front",stage="inference"}' in body
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    assert d.terminate()[0] == 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_subscriber_that_never_reads_does_not_grow_the_daemon(tmp_path, test_model,
                                                              tcp_endpoint, start_daemon):
    """A stuck subscriber costs the daemon its send queue (SNDHWM), not every message.

    Measured by traffic, not by time: a second subscriber that reads counts the bytes
    published between the two RSS samples, and the daemon may grow by at most 40% of
    them (keeping the messages for the stuck one grows it by all of them: 66 MB of 60 MB
    measured with sndhwm 10000; 4.6 MB unloaded and 7-8 MB beside two CPU hogs with the
    default 8). On a loaded machine fewer frames are made, and the window waits for them
    rather than judging a few seconds' worth against allocator noise."""
    import zmq

    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], """\
  cam:
    source: synthetic
    fps: 60""")
    cfg.write_text(cfg.read_text().replace("publish:\n", "publish:\n  mask_encoding: raw\n"))
    ctx = zmq.Context()
    stuck = ctx.socket(zmq.SUB)  # subscribes to everything and never calls recv
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.RCVBUF, 4096)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(tcp_endpoint)
    reader = ctx.socket(zmq.SUB)
    reader.setsockopt(zmq.SUBSCRIBE, b"")
    reader.setsockopt(zmq.RCVTIMEO, 1000)
    reader.connect(tcp_endpoint)

    def read(messages: int, deadline_s: float = 90.0) -> int:
        """Bytes of the next `messages` messages (results only, not end-of-stream)."""
        got = total = 0
        end = time.monotonic() + deadline_s
        while got < messages:
            assert time.monotonic() < end, f"only {got} of {messages} messages arrived"
            try:
                frames = reader.recv_multipart()
            except zmq.Again:
                continue
            got += 1
            total += sum(len(f) for f in frames)
        return total

    try:
        d = start_daemon(cfg)
        d.wait_for("ready")
        read(240)  # the stuck subscriber's queues fill up to their high-water marks
        early = rss_kib(d.proc.pid)
        window_kib = read(480) / 1024  # ~60 MB of raw masks the stuck one never takes
        late = rss_kib(d.proc.pid)
        assert window_kib > 20_000, window_kib
        assert late - early < 0.4 * window_kib, (early, late, window_kib)
        assert "stats cam: capture" in d.log()
        assert d.terminate()[0] == 0  # and it still shuts down cleanly
    finally:
        stuck.close(linger=0)
        reader.close(linger=0)
        ctx.term()
