"""Delivery of edged's ROS 2 topics to a Fast DDS reader configured as rmw_fastrtps
configures it (tests/fastdds/subscriber.cpp), per topic, against the frames the daemon
published (its ZeroMQ stream). The daemon and the reader share a network namespace of
their own (loopback only). Needs root and libfastrtps-dev, fastddsgen, cmake, g++.

    .venv/bin/python tools/fastdds_bench.py --cameras 1 --fps 15 --seconds 20
    .venv/bin/python tools/fastdds_bench.py --cameras 4 --fps 10 --bufsize 4194304
    .venv/bin/python tools/fastdds_bench.py --depth 1      # the writers as before (keep last 1)

Prints one JSON object: per topic and QoS the frames published in the measured window, the
frames received, the ratio; and the ROS 2 sink's median cost per result (daemon log).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "fastdds"))

from build import build, missing_tools  # noqa: E402
from netns import FastddsSub, Netns, netns_problem  # noqa: E402


class Collector:
    """The ZeroMQ stream of the same run: each result's capture stamp by camera, and the
    stamp of each statistics message (what /diagnostics carries)."""

    def __init__(self, endpoint: str) -> None:
        from edged.wire.client import Subscriber
        from edged.wire.codec import Message
        from edged.wire.telemetry import Stats

        self.frames: dict[str, list[int]] = {}
        self.stats: list[int] = []
        self._stop = threading.Event()

        def run() -> None:
            with Subscriber(endpoint, stats=True) as sub:
                while not self._stop.is_set():
                    m = sub.recv(timeout=0.1)
                    if isinstance(m, Message):
                        self.frames.setdefault(m.camera, []).append(m.t_capture_ns)
                    elif isinstance(m, Stats):
                        self.stats.append(m.t_ns)

        self._th = threading.Thread(target=run, daemon=True)
        self._th.start()

    def stop(self) -> None:
        self._stop.set()
        self._th.join(5)


def config(tmp: Path, args: argparse.Namespace, domain: int) -> Path:
    cams = "".join(f"""\
  cam{i}:
    source: synthetic
    seed: {38 + i}
    width: 640
    height: 480
    fps: {args.fps}
""" for i in range(args.cameras))
    cfg = tmp / "bench.yaml"
    cfg.write_text(f"""\
model:
  path: builtin:yoeo-demo-int8.onnx
  threads: 1
  warmup_runs: 1
cameras:
{cams}publish:
  endpoints: [ipc://{tmp}/pub.sock]
log:
  stats_interval_s: 1
ros2:
  namespace: edged
  domain_id: {domain}
  mask_color: true
  image: true
  history_depth: {args.depth}
""" + (f"  cyclonedds_config: {args.cyclone_xml.resolve()}\n" if args.cyclone_xml else ""))
    return cfg


def encode_cost(runs: int = 200) -> dict[str, float]:
    """Median ms per 640x480 frame of what the ROS 2 sink builds for each mask topic."""
    import cv2
    import numpy as np

    from edged import synth
    from edged.outputs.base.png import encode_png, grey_png, with_palette
    from edged.outputs.base.ros2msgs import cdr
    from edged.outputs.ros2.sink import PNG_MONO8

    mask = np.ascontiguousarray(synth.render(38, 3, 640, 480).segmentation, np.uint8)
    lut = np.zeros((1, 256, 3), np.uint8)
    lut[0, 1], lut[0, 2] = (255, 215, 0), (150, 40, 255)
    png = grey_png(mask)
    cases = {
        "mask (raw CDR)": lambda: cdr.image(0, "f", 480, 640, "mono8", 640, mask.data),
        "mask/compressed (PNG + CDR)": lambda: cdr.compressed_image(
            0, "f", PNG_MONO8, grey_png(mask)),
        "mask_color (LUT + raw CDR)": lambda: cdr.image(
            0, "f", 480, 640, "rgb8", 1920,
            cv2.LUT(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR), lut).data),
        "mask_color/compressed (palette on the same PNG)": lambda: with_palette(png, lut[0]),
        "mask_color as an RGB PNG (not used)": lambda: encode_png(
            cv2.LUT(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR), lut)),
    }
    out = {}
    for name, fn in cases.items():
        fn()
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        out[name] = round(float(np.median(ts)), 3)
    out["png bytes"] = len(png)
    out["palette png bytes"] = len(with_palette(png, lut[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bufsize", type=int, default=0,
                    help="the reader's socket receive buffer (0: the OS default)")
    ap.add_argument("--depth", type=int, default=10, help="ros2.history_depth")
    ap.add_argument("--qos", default="default", choices=["default", "sensor"],
                    help="the profile of the mask and detections readers")
    ap.add_argument("--no-raw", action="store_true", help="no reader on the raw images")
    ap.add_argument("--no-compressed", action="store_true",
                    help="no reader on the compressed masks")
    ap.add_argument("--verbose", action="store_true", help="the daemon log's tail on stderr")
    ap.add_argument("--cyclone-xml", type=Path, help="ros2.cyclonedds_config for the daemon")
    ap.add_argument("--encode-cost", action="store_true",
                    help="only time the mask messages' encoding (no DDS, no root)")
    args = ap.parse_args()
    if args.encode_cost:
        print(json.dumps(encode_cost(), indent=1))
        return
    why = missing_tools() or netns_problem()
    if why:
        sys.exit(f"fastdds_bench: {why}")
    binary = build()
    depth = 10 if args.qos == "default" else 5  # rmw_qos_profile_default / sensor_data
    specs = []
    for i in range(args.cameras):
        b = f"rt/edged/cam{i}"
        specs += [f"detections:{args.qos}:{depth}:{b}/detections",
                  f"compressed:sensor:5:{b}/image/compressed"]
        if not args.no_compressed:
            specs += [f"compressed:{args.qos}:{depth}:{b}/mask/compressed",
                      f"compressed:{args.qos}:{depth}:{b}/mask_color/compressed"]
        if not args.no_raw:
            specs += [f"image:{args.qos}:{depth}:{b}/mask",
                      f"image:{args.qos}:{depth}:{b}/mask_color"]
    specs += ["diagnostics:default:10:rt/diagnostics", "labels:latched:1:rt/edged/cam0/label_info"]
    domain = random.Random(os.getpid()).randrange(100, 230)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ns = Netns()
        sub = FastddsSub(ns, binary, specs, domain, bufsize=args.bufsize)
        col = Collector(f"ipc://{tmp}/pub.sock")
        env = {k: v for k, v in os.environ.items() if k != "CYCLONEDDS_URI"}
        d = None
        try:
            sub.wait(lambda ls: any("ready" in j for j in ls), 30)
            with open(tmp / "daemon.log", "wb") as log:
                d = subprocess.Popen(ns.cmd([sys.executable, "-m", "edged", "run", "-c",
                                             str(config(tmp, args, domain))]),
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
            while b"ready" not in (tmp / "daemon.log").read_bytes():
                if d.poll() is not None:
                    sys.exit((tmp / "daemon.log").read_text())
                time.sleep(0.1)
            time.sleep(3.0)  # discovery and matching done
            t0 = time.time_ns()
            time.sleep(args.seconds)
            t1 = time.time_ns()
            time.sleep(2.0)  # samples under repair arrive
            d.terminate()
            d.wait(30)
        finally:
            if d is not None and d.poll() is None:
                d.kill()
            col.stop()
            sub.stop()
            ns.close()
        dlog = (tmp / "daemon.log").read_text(errors="replace")
        if args.verbose:
            print(dlog[-4000:], file=sys.stderr)
    published = {c: [t for t in ts if t0 <= t < t1] for c, ts in col.frames.items()}
    topics: dict[str, dict[str, float]] = {}
    for spec in specs:
        kind, qos, _, topic = spec.split(":", 3)
        got = {j["stamp"] for j in sub.samples(topic, qos)}
        if kind == "diagnostics":
            pub = [t for t in col.stats if t0 <= t < t1]
            n = sum(1 for t in pub if t in got)
            topics[f"{qos}:{topic}"] = {"published": len(pub), "received": n,
                                        "ratio": round(n / len(pub), 4) if pub else 0.0}
            continue
        if kind == "labels":
            topics[f"{qos}:{topic}"] = {"received": len(got)}
            continue
        cam = topic.split("/")[2]
        pub = published.get(cam, [])
        if topic.endswith("image/compressed"):
            n = sum(1 for t in got if t0 <= t < t1)
            topics[f"{qos}:{topic}"] = {"received": n, "fps": n / args.seconds}
            continue
        n = sum(1 for t in pub if t in got)
        topics[f"{qos}:{topic}"] = {"published": len(pub), "received": n,
                                    "ratio": round(n / len(pub), 4) if pub else 0.0}
    m = re.search(r"ros2: built and wrote (\d+) result\(s\) for readers, ([\d.]+) ms median",
                  dlog)
    print(json.dumps({"cameras": args.cameras, "fps": args.fps, "seconds": args.seconds,
                      "bufsize": args.bufsize or "os default", "history_depth": args.depth,
                      "reader_qos": args.qos, "sink_ms_median": float(m[2]) if m else None,
                      "topics": topics}, indent=1))


if __name__ == "__main__":
    main()
