"""Soak test: the real daemon for minutes, its RSS, fds and threads sampled from /proc.

    python tests/soak.py --minutes 10 --cameras 4 [--json]

Starts `edged run` as a subprocess with N synthetic cameras, one looping video file and
one HTTP MJPEG camera whose server is stopped and restarted periodically (a camera that
goes away and comes back), the shipped int8 demo model, and a subscriber. Every few
seconds it samples the daemon's VmRSS and Threads (/proc/PID/status) and its open fds
(/proc/PID/fd). At the end: start/after-warm-up/end/max figures, messages and gaps per
camera, the longest silence per camera, and a verdict:

- RSS at the end within --rss-tolerance (10 %) of RSS after the warm-up;
- open fds and threads at the end equal to after the warm-up, both taken while the MJPEG
  camera is connected (its server up for a while and staying up, and the daemon reporting
  the camera running with frames arriving), so its socket and reader are there in both;
- every camera published; the cameras that are never interrupted were never silent for
  more than 5 s; SIGTERM exits 0 within 5 s.

Not collected by pytest (no test_ prefix); tests/e2e/test_soak.py runs a 20 s version.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from conftest import MjpegServer, free_port  # noqa: E402

from edged.wire.client import Subscriber  # noqa: E402
from edged.wire.codec import EndOfStream, Message  # noqa: E402
from edged.wire.telemetry import CameraState  # noqa: E402


def proc_sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_kb": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def write_video(path: Path, frames: int = 100, size: tuple[int, int] = (320, 240)) -> None:
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (w, h))
    for i in range(frames):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :] = (40, 120, 40)
        cv2.circle(img, ((i * 7) % w, h // 2), 12, (255, 255, 255), -1)
        vw.write(img)
    vw.release()


def write_config(path: Path, endpoint: str, cameras: int, fps: float, video: Path,
                 mjpeg_url: str) -> None:
    cams = "".join(f"""\
  synth{i}:
    source: synthetic
    width: 320
    height: 240
    fps: {fps}
    seed: {i}
""" for i in range(cameras))
    path.write_text(f"""\
model:
  path: builtin:yoeo-demo-int8.onnx
  threads: 1
  warmup_runs: 2
cameras:
{cams}  video:
    source: {video}
    fps: {fps}
    loop: true
  ipcam:
    source: {mjpeg_url}
    stall_timeout_s: 3
publish:
  endpoints: [{endpoint}]
log:
  stats_interval_s: 10
""")


class Flapper(threading.Thread):
    """Stops and restarts the MJPEG server on the same port, periodically."""

    def __init__(self, port: int, fps: float, up_s: float, down_s: float) -> None:
        super().__init__(daemon=True)
        self.up_s, self.down_s = up_s, down_s
        # a sample counts as "MJPEG camera connected" this long after a restart
        self.settled_s = min(10.0, up_s / 2)
        img = np.zeros((240, 320, 3), np.uint8)
        img[:, :] = (40, 140, 40)
        self.frame = lambda i: img
        self.port, self.fps = port, fps
        self.server = MjpegServer(self.frame, fps, port)
        self.up_since = time.monotonic()
        self.restarts = 0
        self.restarted_at: list[float] = []  # seconds after start
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(self.up_s):
            # not settled from before the close starts: closing ends the connection (and
            # the camera's reader thread) while shutdown() is still waiting
            self.up_since = None
            self.server.close()
            if self.stop.wait(self.down_s):
                return
            self.server = MjpegServer(self.frame, self.fps, self.port)
            self.up_since = time.monotonic()
            self.restarts += 1
            self.restarted_at.append(round(self.up_since - t0, 1))

    def settled(self) -> bool:
        return self.up_since is not None and time.monotonic() - self.up_since >= self.settled_s

    def close(self) -> None:
        self.stop.set()
        self.server.close()


def soak(seconds: float, cameras: int, fps: float, warmup: float, interval: float,
         rss_tolerance: float, workdir: Path, mjpeg_up: float = 50.0,
         mjpeg_down: float = 5.0) -> dict:
    video = workdir / "clip.avi"
    write_video(video)
    port = free_port()
    flapper = Flapper(port, fps, mjpeg_up, mjpeg_down)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = workdir / "soak.yaml"
    write_config(cfg, endpoint, cameras, fps, video, flapper.server.url)
    log_path = workdir / "daemon.log"
    names = [f"synth{i}" for i in range(cameras)] + ["video", "ipcam"]
    steady = [n for n in names if n != "ipcam"]
    counts = dict.fromkeys(names, 0)
    last_seq: dict[str, int] = {}
    gaps = dict.fromkeys(names, 0)
    last_t: dict[str, float] = {}
    silence = dict.fromkeys(names, 0.0)
    states: list[tuple[float, str, str, str]] = []
    eos: list[str] = []
    samples: list[dict] = []
    with open(log_path, "wb") as log_file, Subscriber(endpoint, states=True) as sub:
        proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                                stdout=log_file, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        t0 = time.monotonic()
        flapper.start()
        next_sample = t0
        # the daemon's own word, its last ipcam state on the bus (None: none seen yet, the
        # first may be published before the subscriber has joined)
        ipcam_running: bool | None = None
        end_deadline = t0 + seconds + 30.0
        try:
            while True:
                now = time.monotonic()
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {proc.returncode} during the soak; "
                                       f"log: {log_path}")
                ending = now - t0 >= seconds
                if now >= next_sample:
                    # "connected": the server has been up a while and stays up across the
                    # sample, and the daemon says the camera runs and its frames arrive. The
                    # server being up is not enough: after an outage the camera reconnects
                    # on its own backoff (0.5, 1, 2, 4 s...), which can land seconds after
                    # the server is back on a loaded machine.
                    before = flapper.settled()
                    s = proc_sample(proc.pid)
                    s.update(t=round(now - t0, 1), settled=(
                        before and flapper.settled() and ipcam_running is not False
                        and now - last_t.get("ipcam", -1e9) < 1.0))
                    samples.append(s)
                    # at the end, sample often until one is taken while connected
                    next_sample = now + 0.2 if ending else next_sample + interval
                    if ending and (s["settled"] or now >= end_deadline):
                        break
                msg = sub.recv(timeout=0.1)
                if isinstance(msg, Message):
                    c = msg.camera
                    counts[c] += 1
                    if c in last_seq and msg.seq > last_seq[c] + 1:
                        gaps[c] += msg.seq - last_seq[c] - 1
                    last_seq[c] = msg.seq
                    if c in last_t:
                        silence[c] = max(silence[c], now - last_t[c])
                    last_t[c] = now
                elif isinstance(msg, CameraState):
                    states.append((round(now - t0, 1), msg.camera, msg.state, msg.detail))
                    if msg.camera == "ipcam":
                        ipcam_running = msg.state == "running"
                elif isinstance(msg, EndOfStream):
                    eos.append(f"{msg.camera}: {msg.reason}")
            ts = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            stop_s = time.monotonic() - ts
        finally:
            flapper.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = [s for s in samples if s["t"] >= warmup and s["settled"]]
    base = after[0] if after else samples[0]
    end = samples[-1]
    log_text = log_path.read_text(errors="replace")
    checks = {
        "rss_within_tolerance": end["rss_kb"] <= base["rss_kb"] * (1 + rss_tolerance),
        "fds_flat": end["fds"] == base["fds"],
        "threads_flat": end["threads"] == base["threads"],
        "ended_while_mjpeg_connected": end["settled"],
        "every_camera_published": all(counts[n] > 0 for n in names),
        "steady_cameras_never_silent_5s": all(silence[n] < 5.0 for n in steady),
        "no_end_of_stream": not eos,
        "sigterm_exit_0_within_5s": code == 0 and stop_s < 5.0,
        "no_traceback_in_log": "Traceback" not in log_text,
    }
    return {
        "duration_s": round(time.monotonic() - t0, 1), "cameras": names, "fps_per_camera": fps,
        "warmup_s": warmup, "mjpeg_restarts": flapper.restarts,
        "mjpeg_restarted_at_s": flapper.restarted_at,
        "machine": {"cores": os.cpu_count(), "load_avg_end": os.getloadavg()},
        "rss_kb": {"start": samples[0]["rss_kb"], "after_warmup": base["rss_kb"],
                   "end": end["rss_kb"], "max": max(s["rss_kb"] for s in samples)},
        "fds": {"start": samples[0]["fds"], "after_warmup": base["fds"], "end": end["fds"],
                "max": max(s["fds"] for s in samples)},
        "threads": {"start": samples[0]["threads"], "after_warmup": base["threads"],
                    "end": end["threads"], "max": max(s["threads"] for s in samples)},
        "messages": counts, "seq_gaps": gaps,
        "longest_silence_s": {n: round(v, 2) for n, v in silence.items()},
        "state_changes": states, "end_of_stream": eos,
        "sigterm": {"exit_code": code, "seconds": round(stop_s, 2)},
        "checks": checks, "verdict": "pass" if all(checks.values()) else "fail",
        "samples": samples, "log": str(log_path),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, help="duration in seconds (overrides --minutes)")
    ap.add_argument("--cameras", type=int, default=4, help="synthetic cameras")
    ap.add_argument("--fps", type=float, default=10.0, help="per camera")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    ap.add_argument("--mjpeg-up", type=float, default=50.0,
                    help="seconds the MJPEG camera's server runs between outages")
    ap.add_argument("--mjpeg-down", type=float, default=5.0, help="seconds of each outage")
    ap.add_argument("--keep", type=Path, help="keep config and daemon log in this folder")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    warmup = min(args.warmup, seconds / 2)
    run = lambda workdir: soak(seconds, args.cameras, args.fps, warmup, args.interval,
                               args.rss_tolerance, workdir, args.mjpeg_up, args.mjpeg_down)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run(args.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report = run(Path(tmp))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"soak: {report['duration_s']} s, cameras {', '.join(report['cameras'])} at "
              f"{report['fps_per_camera']:g} fps, MJPEG server restarted "
              f"{report['mjpeg_restarts']} times, warm-up {report['warmup_s']:g} s")
        for key, unit in (("rss_kb", "kB"), ("fds", ""), ("threads", "")):
            v = report[key]
            print(f"  {key:8} start {v['start']} {unit}  after warm-up {v['after_warmup']}  "
                  f"end {v['end']}  max {v['max']}")
        for n in report["cameras"]:
            print(f"  {n:8} {report['messages'][n]:6d} messages, {report['seq_gaps'][n]} seq "
                  f"gaps, longest silence {report['longest_silence_s'][n]:.2f} s")
        print(f"  state changes: {len(report['state_changes'])}, end-of-stream: "
              f"{report['end_of_stream'] or 'none'}; SIGTERM: exit "
              f"{report['sigterm']['exit_code']} in {report['sigterm']['seconds']} s")
        for name, ok in report["checks"].items():
            print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        print(f"verdict: {report['verdict']}")
    return 0 if report["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
