"""Scale benchmark: the real daemon with N synthetic cameras (not a test).

For each camera count it starts `edged run` as a subprocess with N synthetic cameras
(distinct seeds), a real ZeroMQ subscriber on every topic, and measures: seconds from
process start to the "ready" log line and until every camera has published a result,
RSS (MB) and thread count after `--settle` s of running (and every camera publishing),
seconds from SIGTERM to exit, and how many of the N end-of-stream messages the
subscriber received.

    python -m edged.tools.scale_bench --cameras 1 8 32 100 --size 160x120
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, n: int, width: int, height: int, endpoint: str, fps: float,
                 model: str = "builtin:yoeo-demo-int8.onnx", extra: str = "") -> Path:
    cams = "".join(f"  cam{i}:\n    source: synthetic\n    width: {width}\n"
                   f"    height: {height}\n    fps: {fps:g}\n    seed: {i}\n" for i in range(n))
    path.write_text(f"""\
model:
  path: {model}
  threads: 1
  warmup_runs: 1
cameras:
{cams}publish:
  endpoints: ["{endpoint}"]
log:
  stats_interval_s: 60
{extra}""")
    return path


def _proc_status(pid: int) -> tuple[float, int]:
    rss_kb, threads = 0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss_kb / 1024, threads


def measure(n: int, width: int, height: int, fps: float, settle: float,
            ready_timeout: float = 300.0) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        cfg = write_config(Path(tmp) / "cfg.yaml", n, width, height, endpoint, fps)
        log_path = Path(tmp) / "daemon.log"
        with Subscriber(endpoint, None, rcvhwm=100_000) as sub, open(log_path, "wb") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                                    stdout=log, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
            try:
                ready = None
                while time.monotonic() - t0 < ready_timeout:
                    if " ready: " in log_path.read_text(errors="replace"):
                        ready = time.monotonic() - t0
                        break
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text(errors="replace"))
                    time.sleep(0.05)
                if ready is None:
                    raise RuntimeError(f"not ready within {ready_timeout} s")
                end = time.monotonic() + settle
                seen: set[str] = set()
                all_frames = float("nan")
                # run for `settle` s and until every camera has published (at most 60 s)
                while time.monotonic() < end or (len(seen) < n
                                                 and time.monotonic() - t0 < ready + 60):
                    msg = sub.recv(timeout=0.1)
                    if isinstance(msg, Message) and msg.camera not in seen:
                        seen.add(msg.camera)
                        if len(seen) == n:
                            all_frames = time.monotonic() - t0
                rss, threads = _proc_status(proc.pid)
                t_stop = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                eos: set[str] = set()
                stop = None
                quiet_until = t_stop + 120.0
                while time.monotonic() < quiet_until:  # receive while it stops
                    msg = sub.recv(timeout=0.05)
                    if isinstance(msg, EndOfStream):
                        eos.add(msg.camera)
                    if stop is None and proc.poll() is not None:
                        stop = time.monotonic() - t_stop
                        quiet_until = time.monotonic() + 1.0
                code = proc.wait(1)
                if code != 0:
                    print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return {"cameras": n, "rss_mb": rss, "threads": threads, "ready_s": ready,
            "all_s": all_frames,
            "stop_s": stop, "eos": len(eos), "exit": code}


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 8, 32, 100])
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=4.0, help="seconds run before measuring")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    print("| cameras | size | RSS MB | threads | ready s | every camera published s | stop s "
          "| EOS received | exit |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.cameras:
        r = measure(n, w, h, args.fps, args.settle)
        print(f"| {n} | {w}x{h} | {_fmt(r['rss_mb'], 0)} | {r['threads']} | "
              f"{_fmt(r['ready_s'])} | {_fmt(r['all_s'])} | {_fmt(r['stop_s'])} | "
              f"{r['eos']}/{n} | {r['exit']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
