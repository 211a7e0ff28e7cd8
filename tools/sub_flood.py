"""How much a subscription flood costs a publisher before its guard can cut it off.

    .venv/bin/python tools/sub_flood.py --rounds 20 --queue 16 --queue 2

libzmq files a connection's queued subscriptions into its trie (~50 bytes a character)
inside one loop that keeps going while its I/O thread refills the queue, before the
application reads any of them.

This drives edged's `Publisher` as the publish thread does (a send every `--gap` s, the
subscriptions read before each) against a peer process subscribing 8000 random
`--length`-byte prefixes, with the inbound queue (RCVHWM, `SUBSCRIPTION_QUEUE`) at each
`--queue`, until its guard cuts the peer off (16 KiB of subscriptions). Per round: the
peak RSS growth (VmHWM) and the growth left after the cut (the replaced socket reaped and
the heap given back); per queue depth the median and the worst. Each round runs in a
process of its own (a fresh heap).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from edged.wire.publisher import SUBSCRIPTION_QUEUE

FLOOD = """import os, time, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
s.setsockopt(zmq.SNDHWM, 0)
s.connect({endpoint!r})
for _ in range(8000):
    s.setsockopt(zmq.SUBSCRIBE, os.urandom({half}).hex().encode())
time.sleep(600)
"""


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def one_round(queue: int, gap: float, length: int) -> dict[str, float]:
    """One flood against edged's own Publisher, its inbound queue set to `queue`."""
    import socket

    import edged.wire.publisher as publisher

    publisher.SUBSCRIPTION_QUEUE = queue  # read when the socket is made
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    pub = publisher.Publisher([endpoint], linger_ms=0)
    peak0, rss0 = _status_mb("VmHWM"), _status_mb("VmRSS")
    peer = subprocess.Popen([sys.executable, "-c", FLOOD.format(
        endpoint=endpoint, half=length // 2)])
    try:
        end = time.monotonic() + 60
        while not pub.refusals:  # a send every `gap` s, subscriptions read before each
            if time.monotonic() > end:
                raise RuntimeError(f"queue {queue}: no refusal within 60 s "
                                   f"({pub.subscriptions} subscriptions counted)")
            time.sleep(gap)
            pub.send([b"x" * 100])
        counted = pub.subscriptions
        rss = _status_mb("VmRSS")
    finally:
        peer.kill()
        peer.wait()
        pub.close()
    # the peak: VmHWM also counts this process's start-up, so only growth past it shows
    return {"queue": queue, "counted": counted, "peak_mb": _status_mb("VmHWM") - peak0,
            "kept_mb": rss - rss0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue", type=int, action="append", help="RCVHWM (repeatable)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--gap", type=float, default=0.03, help="seconds between sends")
    ap.add_argument("--length", type=int, default=1000, help="bytes per subscription")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    queues = a.queue or [16, SUBSCRIPTION_QUEUE]
    if 1 in queues:  # with a ZAP handler (the Publisher's) libzmq 4.3.5 then passes none up
        ap.error("--queue 1: the publisher would never see a subscription; use 2 or more")
    if a.one:
        print(json.dumps(one_round(queues[0], a.gap, a.length)))
        return 0
    peaks: dict[int, list[float]] = {q: [] for q in queues}
    for r in range(a.rounds):
        for q in queues:  # alternating, so that load changes hit both alike
            out = subprocess.run([sys.executable, __file__, "--one", "--queue", str(q),
                                  "--gap", str(a.gap), "--length", str(a.length)],
                                 capture_output=True, text=True, check=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[q].append(got["peak_mb"])
            print(f"round {r + 1} queue {q}: {got['counted']} subscriptions counted, "
                  f"peak +{got['peak_mb']:.1f} MB, +{got['kept_mb']:.1f} MB after the cut",
                  flush=True)
    for q, p in peaks.items():
        print(f"queue {q}: peak RSS growth median {statistics.median(p):.1f} MB, "
              f"worst {max(p):.1f} MB over {len(p)} floods")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
