"""End-to-end latency of the same frames on each output: ZeroMQ, ROS 2 over Fast DDS and
Foxglove WebSocket, each read by an independent reader in a process of its own:

- ZeroMQ: `edged.wire.client.Subscriber` (its `t_received_ns`, taken when the message
  left the socket), against `t_capture_ns`;
- ROS 2: the Fast DDS C++ reader of tests/fastdds (QoS as rmw_fastrtps sets the default
  profile: reliable, volatile, keep last 10), `t_recv_ns` taken when the sample was
  taken from the reader, against `header.stamp`; `detections`, and with `--dds-mask`
  also `mask/compressed`;
- Foxglove: the Python client of tests/foxglove_client.py (aiohttp, subprotocol
  `foxglove.websocket.v1`, so through the daemon's relay as Lichtblick connects) on
  `/<camera>/annotations`, receive time when aiohttp handed over the frame, against the
  message's log time (and the decoded `ImageAnnotations.timestamp`, checked equal).

The daemon (synthetic cameras, the demo model, all three outputs on) and the readers run
in one network namespace of their own (loopback only, tests/fastdds/netns.py): no packet
leaves the machine. Needs root and what tools/fastdds_bench.py needs.

    .venv/bin/python tools/outputs_latency.py --seconds 20
    .venv/bin/python tools/outputs_latency.py --cameras 2 --fps 10 --dds-mask

Frames are matched across outputs by their capture stamp (all three carry the same
`t_capture_wall_ns`); only frames captured in the measured window count. Latency =
reader's wall clock at receipt - capture stamp. Prints one JSON object: per output the
frames received, p50/p90/p99 ms, and the per-frame difference to ZeroMQ (p50, p90); and
the daemon's own capture -> publish e2e p50 from its stats lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "fastdds"))

from build import build, missing_tools  # noqa: E402
from netns import FastddsSub, JsonLines, Netns, netns_problem  # noqa: E402

ZMQ_ENDPOINT = "tcp://127.0.0.1:5599"  # inside the namespace: nothing else listens there
FOXGLOVE_PORT = 8765


# ---------------------------------------------------------------- readers (own processes)

def read_zmq(seconds: float) -> None:
    """JSON lines {camera, stamp, t_recv_ns, t_publish_ns} for `seconds`."""
    from edged.wire.client import Subscriber
    from edged.wire.codec import Message

    out = []
    end = time.monotonic() + seconds
    with Subscriber(ZMQ_ENDPOINT) as sub:
        while time.monotonic() < end:
            m = sub.recv(timeout=0.2)
            if isinstance(m, Message):
                out.append({"camera": m.camera, "stamp": m.t_capture_ns,
                            "t_recv_ns": m.t_received_ns, "t_publish_ns": m.t_publish_ns})
    for j in out:
        print(json.dumps(j))


def read_foxglove(seconds: float, cameras: list[str]) -> None:
    """JSON lines {camera, stamp (log time), t_recv_ns, stamp_ok} for `seconds`."""
    from foxglove_client import LEGACY, collect

    topics = {f"/{c}/annotations" for c in cameras}
    _, got = asyncio.run(collect(f"ws://127.0.0.1:{FOXGLOVE_PORT}", topics, seconds,
                                 protocols=LEGACY))
    for r in got:
        ts = r.message.timestamp
        print(json.dumps({"camera": r.topic.split("/")[1], "stamp": r.log_time_ns,
                          "t_recv_ns": r.t_received_ns,
                          "stamp_ok": ts.seconds * 1_000_000_000 + ts.nanos == r.log_time_ns}))


# ---------------------------------------------------------------------------- the run

def config(tmp: Path, args: argparse.Namespace, domain: int) -> Path:
    cams = "".join(f"""\
  cam{i}:
    source: synthetic
    seed: {38 + i}
    width: {args.width}
    height: {args.height}
    fps: {args.fps}
""" for i in range(args.cameras))
    cfg = tmp / "latency.yaml"
    cfg.write_text(f"""\
model:
  path: builtin:yoeo-demo-int8.onnx
  threads: 1
  warmup_runs: 1
cameras:
{cams}publish:
  endpoints: [{ZMQ_ENDPOINT}]
log:
  stats_interval_s: 1
ros2:
  namespace: edged
  domain_id: {domain}
foxglove:
  listen: 127.0.0.1:{FOXGLOVE_PORT}
""")
    return cfg


def percentiles(xs: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not xs:
        return {"p50": None, "p90": None, "p99": None}
    p = np.percentile(np.asarray(xs), [50, 90, 99])
    return {"p50": round(float(p[0]), 2), "p90": round(float(p[1]), 2),
            "p99": round(float(p[2]), 2)}


def summarise(name: str, got: dict[tuple[str, int], int], zmq: dict[tuple[str, int], int],
              window: set[tuple[str, int]], t0: int, t1: int) -> dict[str, Any]:
    """`got`, `zmq`: receive time by (camera, capture stamp); `window`: the frames that
    count (captured in the measured window, as ZeroMQ saw them)."""
    mine = {k: t for k, t in got.items() if k in window}
    lat = [(t - k[1]) / 1e6 for k, t in mine.items()]
    out: dict[str, Any] = {"received": len(mine), "of": len(window), **percentiles(lat)}
    if name != "zeromq":
        diff = [(t - zmq[k]) / 1e6 for k, t in mine.items() if k in zmq]
        d = percentiles(diff)
        out["minus_zeromq_p50"], out["minus_zeromq_p90"] = d["p50"], d["p90"]
        # each of its stamps is a capture time ZeroMQ published (same frames, same clock)
        out["stamps_unknown_to_zeromq"] = sum(1 for k in got if t0 <= k[1] < t1 and k not in zmq)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds after the readers start before the window opens")
    ap.add_argument("--dds-mask", action="store_true",
                    help="also read mask/compressed over DDS (the sink then encodes a PNG "
                         "per frame before it writes the detections)")
    ap.add_argument("--verbose", action="store_true", help="the daemon log's tail on stderr")
    ap.add_argument("--reader", choices=["zmq", "foxglove"], help=argparse.SUPPRESS)
    ap.add_argument("--for", dest="for_s", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cameras = [f"cam{i}" for i in range(args.cameras)]
    if args.reader == "zmq":
        read_zmq(args.for_s)
        return
    if args.reader == "foxglove":
        read_foxglove(args.for_s, cameras)
        return
    why = missing_tools() or netns_problem()
    if why:
        sys.exit(f"outputs_latency: {why}")
    binary = build()
    specs = [f"detections:default:10:rt/edged/{c}/detections" for c in cameras]
    if args.dds_mask:
        specs += [f"compressed:default:10:rt/edged/{c}/mask/compressed" for c in cameras]
    domain = random.Random(os.getpid()).randrange(100, 230)
    env = {k: v for k, v in os.environ.items() if k != "CYCLONEDDS_URI"}
    reader_s = args.warmup + args.seconds + 3.0
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ns = Netns()
        sub = FastddsSub(ns, binary, specs, domain)
        d = None
        readers: dict[str, JsonLines] = {}
        errs: dict[str, str] = {}
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
            me = [sys.executable, str(Path(__file__).resolve()), "--cameras",
                  str(args.cameras), "--for", str(reader_s), "--reader"]
            t_start = time.time_ns()
            for r in ("zmq", "foxglove"):
                readers[r] = JsonLines(ns.cmd([*me, r]))
            t0 = t_start + int(args.warmup * 1e9)
            t1 = t0 + int(args.seconds * 1e9)
            for r, lines in readers.items():
                errs[r] = lines.stop(reader_s + 30, terminate=False)
            time.sleep(0.5)
            d.terminate()
            d.wait(30)
        finally:
            if d is not None and d.poll() is None:
                d.kill()
            for lines in readers.values():
                if lines.proc.poll() is None:
                    lines.proc.kill()
            sub_err = sub.stop()
            ns.close()
        dlog = (tmp / "daemon.log").read_text(errors="replace")
        if args.verbose:
            print(dlog[-4000:], file=sys.stderr)
    for r, e in errs.items():
        if not readers[r].lines:
            sys.exit(f"outputs_latency: the {r} reader got nothing:\n{e[-3000:]}")

    def by_frame(lines: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
        return {(j["camera"], int(j["stamp"])): int(j["t_recv_ns"]) for j in lines}

    zmq = by_frame(readers["zmq"].lines)
    window = {k for k in zmq if t0 <= k[1] < t1}
    outputs: dict[str, dict[str, Any]] = {"zeromq": summarise("zeromq", zmq, zmq, window, t0, t1)}
    pub = [(j["t_publish_ns"] - j["stamp"]) / 1e6 for j in readers["zmq"].lines
           if (j["camera"], j["stamp"]) in window]
    outputs["zeromq"]["capture_to_publish_p50"] = percentiles(pub)["p50"]
    dds: dict[str, dict[tuple[str, int], int]] = {}  # one row per topic, all cameras
    for spec in specs:
        topic = spec.split(":", 3)[3]
        got = dds.setdefault(f"dds {topic.split('/', 3)[3]}", {})
        got.update({(j["topic"].split("/")[2], int(j["stamp"])): int(j["t_recv_ns"])
                    for j in sub.samples(topic)})
    for key, got in dds.items():
        outputs[key] = summarise("dds", got, zmq, window, t0, t1)
    fox_lines = readers["foxglove"].lines
    outputs["foxglove annotations"] = summarise("foxglove", by_frame(fox_lines), zmq, window,
                                                t0, t1)
    outputs["foxglove annotations"]["timestamp_not_log_time"] = sum(
        1 for j in fox_lines if not j["stamp_ok"])
    p50s = [float(m[1]) for m in re.finditer(
        r"stats cam\d+: .*?e2e p50/p90/p99 ([\d.]+)/", dlog)]
    sink = re.search(r"ros2: built and wrote \d+ result\(s\) for readers, ([\d.]+) ms median",
                     dlog)
    print(json.dumps({
        "cameras": args.cameras, "fps": args.fps, "size": f"{args.width}x{args.height}",
        "seconds": args.seconds, "cpus": os.cpu_count(),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "foxglove_reader": "tests/foxglove_client.py (Python, aiohttp)",
        "daemon_e2e_p50_ms_median_of_stats_lines": (
            round(sorted(p50s)[len(p50s) // 2], 1) if p50s else None),
        "ros2_sink_ms_median": float(sink[1]) if sink else None,
        "outputs": outputs,
        "fastdds_reader_stderr": sub_err.strip()[-300:] or None}, indent=1))


if __name__ == "__main__":
    main()
