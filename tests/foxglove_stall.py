"""Benchmark: what a stalled Foxglove client costs the daemon (docs/benchmarks.md,
"Foxglove clients").

A real daemon (one synthetic camera, Foxglove live on loopback) with a reading client
subscribed to every channel; after a baseline a second client subscribes to every
channel and stops reading (tests/foxglove_client.py, StalledClient) for `--stall-s`,
then vanishes (RST). Prints the daemon's RSS before, after the stall and after the
client left, the camera's processed rate and the reading client's rates meanwhile.

    .venv/bin/python tests/foxglove_stall.py --width 1280 --height 720 --fps 30 \
        --stall-s 60 --backlog 32
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from foxglove_client import Counted, StalledClient, count  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--stall-s", type=float, default=60)
    ap.add_argument("--backlog", type=int, default=None, help="foxglove.client_backlog "
                    "(default: edged's default)")
    ap.add_argument("--after-s", type=float, default=5)
    ap.add_argument("--cycles", type=int, default=1, help="stall and leave this many times "
                    "(does the cost add up?)")
    ap.add_argument("--control", action="store_true", help="no stalled client: the same "
                    "run's RSS drift without one")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="edged-stall-"))
    cfg = tmp / "stall.yaml"
    backlog = f"  client_backlog: {args.backlog}\n" if args.backlog else ""
    cfg.write_text(f"""\
model:
  path: builtin:yoeo-demo-int8.onnx
  threads: 1
  warmup_runs: 1
cameras:
  front:
    source: synthetic
    seed: 38
    width: {args.width}
    height: {args.height}
    fps: {args.fps}
publish:
  endpoints: [ipc://{tmp}/pub.sock]
log:
  stats_interval_s: 1
foxglove:
  listen: 127.0.0.1:{port}
{backlog}""")
    logf = open(tmp / "daemon.log", "w+")  # noqa: SIM115 - read at the end
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                            stdout=logf, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while "ready" not in (tmp / "daemon.log").read_text():
            if time.monotonic() > end or proc.poll() is not None:
                print((tmp / "daemon.log").read_text())
                return 1
            time.sleep(0.2)
        total = 5 + args.cycles * (args.stall_s + args.after_s) + 2
        reader: list[Counted] = []
        th = threading.Thread(target=lambda: reader.append(asyncio.run(count(
            f"ws://127.0.0.1:{port}", 1 << 62, total))), daemon=True)
        th.start()
        time.sleep(5)
        before = rss_mb(proc.pid)
        t_stall = time.time_ns()
        stalled = None if args.control else StalledClient("127.0.0.1", port)
        peak = before
        t_end = time.monotonic() + args.stall_s
        while time.monotonic() < t_end:
            time.sleep(1)
            peak = max(peak, rss_mb(proc.pid))
        during = rss_mb(proc.pid)
        t_leave = time.time_ns()
        if stalled is not None:
            stalled.close()
        series = []
        t_end = time.monotonic() + args.after_s
        while time.monotonic() < t_end:
            time.sleep(1)
            series.append(rss_mb(proc.pid))
        after = series[-1] if series else rss_mb(proc.pid)
        cycles = [(during, after)]
        for _ in range(args.cycles - 1):
            c = None if args.control else StalledClient("127.0.0.1", port)
            time.sleep(args.stall_s)
            s_rss = rss_mb(proc.pid)
            if c is not None:
                c.close()
            time.sleep(args.after_s)
            cycles.append((s_rss, rss_mb(proc.pid)))
        th.join(total + 30)
        proc.send_signal(2)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp / "daemon.log").read_text()
    fps = [float(m.group(1)) for m in re.finditer(r"stats front: capture [\d.]+ fps, "
                                                   r"processed ([\d.]+) fps", log)]
    got = reader[0] if reader else Counted(0, {}, {})
    rates = {}
    for topic, ts in (got.log_times or {}).items():
        inside = [t for t in ts if t_stall <= t <= t_leave]
        rates[topic] = len(inside) / ((t_leave - t_stall) / 1e9)
    stall_fps = fps[6:6 + int(args.stall_s)] if len(fps) > 8 else fps
    print(f"{args.width}x{args.height} @ {args.fps:g} fps, client_backlog "
          f"{args.backlog or 'default'}{' (control: no stalled client)' * args.control}: "
          f"RSS before {before:.0f} MB, after {args.stall_s:g} s "
          f"stalled {during:.0f} MB (+{during - before:.0f}, peak +{peak - before:.0f}), "
          f"{args.after_s:g} s after it left {after:.0f} MB (+{after - before:.0f})")
    if len(cycles) > 1:
        print("RSS stalled / after leaving, each cycle: " + ", ".join(
            f"{x:.0f} / {y:.0f}" for x, y in cycles))
    print("RSS each second after it left: " + " ".join(f"{x:.0f}" for x in series))
    print(f"camera processed fps during the stall: median "
          f"{sorted(stall_fps)[len(stall_fps) // 2] if stall_fps else float('nan'):.1f}, "
          f"min {min(stall_fps) if stall_fps else float('nan'):.1f}")
    print("reading client during the stall (messages/s): " +
          ", ".join(f"{t} {r:.1f}" for t, r in sorted(rates.items())))
    warn = [ln for ln in log.splitlines() if " WARNING " in ln or " ERROR " in ln]
    print(f"WARNING/ERROR lines: {len(warn)}")
    for ln in warn:
        print("  " + ln)
    return 0


if __name__ == "__main__":
    sys.exit(main())
