"""Many cameras: the real daemon with 32 synthetic cameras and a real subscriber."""

from __future__ import annotations

import time
from pathlib import Path

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message

CAMERAS = 32


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_32_synthetic_cameras_start_publish_and_stop(tmp_path, test_model, tcp_endpoint,
                                                     start_daemon):
    cams = "".join(f"  cam{i}:\n    source: synthetic\n    width: 160\n    height: 120\n"
                   f"    fps: 2\n    seed: {i}\n" for i in range(CAMERAS))
    cfg = tmp_path / "cfg.yaml"
    # default publish.sndhwm (8): the daemon sizes the queue for its cameras' burst
    cfg.write_text(f"""\
model:
  path: {test_model}
  threads: 1
  workers: 1
  warmup_runs: 1
cameras:
{cams}publish:
  endpoints: ["{tcp_endpoint}"]
log:
  stats_interval_s: 60
""")
    with Subscriber(tcp_endpoint, None, rcvhwm=100_000) as sub:
        t0 = time.monotonic()
        d = start_daemon(cfg)
        d.wait_for(" ready: ", timeout=30)
        ready = time.monotonic() - t0
        assert ready < 10.0, d.log()
        # every camera publishes: its layout is built once and it gets its share
        seen: set[str] = set()
        end = time.monotonic() + 60
        while len(seen) < CAMERAS and time.monotonic() < end:
            msg = sub.recv(timeout=0.2)
            if isinstance(msg, Message):
                seen.add(msg.camera)
        assert len(seen) == CAMERAS, (sorted(seen), d.log())
        # one thread per synthetic camera (no per-camera reader/watchdog pair) plus a
        # fixed set (main, publish, inference, ZeroMQ, executor): two per camera was 71
        threads = _threads(d.proc.pid)
        assert threads - CAMERAS <= 16, threads
        code, took = d.terminate(timeout=30)
        assert code == 0, d.log()
        assert took < 5.0, d.log()
        eos: set[str] = set()
        end = time.monotonic() + 5
        while len(eos) < CAMERAS and time.monotonic() < end:
            msg = sub.recv(timeout=0.2)
            if isinstance(msg, EndOfStream):
                assert msg.reason == "shutdown"
                eos.add(msg.camera)
        assert eos == {f"cam{i}" for i in range(CAMERAS)}, (sorted(eos), d.log())
    log = d.log()
    assert "Traceback" not in log
    assert "sndhwm 8 raised to" in log
