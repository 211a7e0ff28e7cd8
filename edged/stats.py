"""The periodic `_stats` message: per-camera health and latency on the bus.

Frames: topic `_stats`, then a msgpack map (see docs/protocol.md, "Statistics"):
`{"v": 1, "type": "stats", "t_ns": wall clock ns, "interval_s": float,
"cameras": {name: {...}}}` with, per camera, the keys of `CAMERA_KEYS`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from edged.codec import PROTOCOL_VERSION, TOPIC_STATS, ProtocolError

CAMERA_KEYS = ("state", "capture_fps", "processed_fps", "published", "late", "drops",
               "e2e_ms", "stages_ms_p50", "budget_ms", "variant")


@dataclass(frozen=True, slots=True)
class Stats:
    t_ns: int
    interval_s: float
    cameras: dict[str, dict[str, Any]]


def encode_stats(cameras: dict[str, dict[str, Any]], interval_s: float) -> list[bytes]:
    header = {"v": PROTOCOL_VERSION, "type": "stats", "t_ns": time.time_ns(),
              "interval_s": float(interval_s), "cameras": cameras}
    return [TOPIC_STATS.encode(), msgpack.packb(header, use_single_float=True)]


def decode_stats(frames: Sequence[bytes | memoryview | zmq.Frame]) -> Stats:
    try:
        parts = [f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in frames]
        if len(parts) != 2 or parts[0] != TOPIC_STATS.encode():
            raise ProtocolError(f"stats: expected 2 frames on {TOPIC_STATS!r}")
        h = msgpack.unpackb(parts[1], raw=False, strict_map_key=True)
        if not isinstance(h, dict) or h.get("type") != "stats":
            raise ProtocolError("stats: header is not a stats map")
        if h.get("v") != PROTOCOL_VERSION:
            raise ProtocolError(f"stats: unsupported version {h.get('v')!r}")
        cams = h.get("cameras")
        if not isinstance(cams, dict) or not all(isinstance(v, dict) for v in cams.values()):
            raise ProtocolError("stats: 'cameras' must map names to maps")
        return Stats(int(h["t_ns"]), float(h["interval_s"]), cams)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack and type errors on garbage input
        raise ProtocolError(f"stats: {e}") from None
