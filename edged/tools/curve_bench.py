"""Benchmark (not a test): what CURVE costs per message. `python -m edged.tools.curve_bench`

A publisher and a subscriber in this process on tcp loopback, each message a result of
a 640x480 camera (a synthetic scene's class mask at the demo's 416x312, zstd level 1,
its boxes),
sent in order and each received before the next is sent (the latency of one message,
not a saturated pipe). Plain and CURVE rounds alternate, so machine noise hits both
alike; prints the median per message of each and the difference. Record results in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from edged.results import Detections, Result
from edged.wire.client import Subscriber
from edged.wire.codec import MaskEncoder, encode_result
from edged.wire.curve import ClientKeys, keygen, server_keys
from edged.wire.publisher import Publisher


def _message(encoding: str = "zstd") -> list[bytes]:
    """A synthetic scene's own truth as the result: its class mask at the demo model's
    416x312 resolution and its boxes."""
    import cv2

    from edged.synth import render

    scene = render(1, 0, 640, 480)
    mask = cv2.resize(scene.segmentation, (416, 312), interpolation=cv2.INTER_NEAREST)
    n = len(scene.boxes)
    dets = Detections(scene.boxes.astype(np.float32), np.full(n, 0.9, np.float32),
                      scene.classes.astype(np.int32))
    result = Result("cam", 0, time.time_ns(), time.monotonic_ns(), 640, 480, dets,
                    ("ball", "goalpost", "robot"), mask, ("background", "lines", "field"),
                    None)
    return encode_result(result, MaskEncoder(encoding, 1))  # type: ignore[arg-type]


def _round(pub: Publisher, sub: Subscriber, frames: list[bytes], n: int) -> float:
    """ms per message, send to receive, one at a time."""
    t = time.perf_counter()
    for _ in range(n):
        pub.send(frames)
        while sub.recv(timeout=2.0) is None:
            raise RuntimeError("a message did not arrive within 2 s")
    return (time.perf_counter() - t) * 1e3 / n


def run(rounds: int, per_round: int, port: int, encoding: str = "zstd") -> dict[str, float]:
    frames = _message(encoding)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _, secret = keygen("daemon", d / "keys")
        keygen("client", d / "keys")
        (d / "clients").mkdir()
        (d / "clients" / "client.key").write_text((d / "keys" / "client.key").read_text())
        ctx = zmq.Context()
        plain_ep, curve_ep = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"
        with Publisher([plain_ep], sndhwm=1000, context=ctx, linger_ms=0) as plain, \
                Publisher([curve_ep], sndhwm=1000, context=ctx, linger_ms=0,
                          curve=server_keys(secret, d / "clients")) as cpub, \
                Subscriber(plain_ep, context=ctx) as psub, \
                Subscriber(curve_ep, context=ctx, curve=ClientKeys.from_files(
                    d / "keys" / "daemon.key", d / "keys" / "client.key_secret")) as csub:
            time.sleep(0.5)  # both subscriptions through (slow joiner)
            for pub, sub in ((plain, psub), (cpub, csub)):
                _round(pub, sub, frames, 20)  # warm-up
            times: dict[str, list[float]] = {"plain": [], "curve": []}
            for _ in range(rounds):
                times["plain"].append(_round(plain, psub, frames, per_round))
                times["curve"].append(_round(cpub, csub, frames, per_round))
        ctx.term()
    p, c = statistics.median(times["plain"]), statistics.median(times["curve"])
    return {"bytes": float(sum(len(f) for f in frames)), "plain_ms": p, "curve_ms": c}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edged.tools.curve_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--per-round", type=int, default=200)
    ap.add_argument("--port", type=int, default=5611)
    ap.add_argument("--encoding", choices=("zstd", "raw"), default="zstd",
                    help="mask encoding (raw: 130 kB per message, what encryption costs "
                         "on a big one)")
    args = ap.parse_args(argv)
    r = run(args.rounds, args.per_round, args.port, args.encoding)
    extra, ratio = (r["curve_ms"] - r["plain_ms"]) * 1e3, r["curve_ms"] / r["plain_ms"]
    print(f"{r['bytes']:.0f}-byte message (640x480 result, {args.encoding} mask): plain "
          f"{r['plain_ms'] * 1e3:.1f} us, CURVE {r['curve_ms'] * 1e3:.1f} us per message "
          f"(+{extra:.1f} us, {ratio:.2f}x), median of {args.rounds} alternating rounds of "
          f"{args.per_round}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
