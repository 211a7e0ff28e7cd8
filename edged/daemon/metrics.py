"""An optional Prometheus text endpoint (`log.metrics: "127.0.0.1:9464"`).

Serves the same per-camera figures as the `_stats` message, from the latest snapshot,
as Prometheus text format 0.0.4 on GET /metrics. Plain asyncio: one request per
connection, no framework.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edged.daemon.metrics")

_GAUGES = {
    "capture_fps": "Frames captured per second (last stats window)",
    "processed_fps": "Frames run through the model per second (last stats window)",
}
_COUNTERS = {
    "published": "Results published",
    "late": "Results published over the latency budget",
    "budget_misses": "Frames that missed the latency budget (stale, late, late dropped)",
}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snapshot: dict[str, dict[str, Any]]) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_: str, rows: list[tuple[str, float]]) -> None:
        out.append(f"# HELP edged_{name} {help_}")
        out.append(f"# TYPE edged_{name} {kind}")
        out.extend(f"edged_{name}{{{labels}}} {value}" for labels, value in rows)

    cams = sorted(snapshot.items())
    for key, help_ in _GAUGES.items():
        family(key, "gauge", help_, [(f'camera="{_esc(c)}"', s[key]) for c, s in cams])
    for key, help_ in _COUNTERS.items():
        family(f"{key}_total", "counter", help_, [(f'camera="{_esc(c)}"', s[key]) for c, s in cams])
    family("dropped_total", "counter", "Frames dropped, by cause",
           [(f'camera="{_esc(c)}",cause="{cause}"', n) for c, s in cams
            for cause, n in s["drops"].items()])
    family("e2e_latency_ms", "gauge", "Capture-to-send latency percentiles (last 512 results)",
           [(f'camera="{_esc(c)}",quantile="{q[1:]}"', v) for c, s in cams
            for q, v in s["e2e_ms"].items() if v is not None])
    family("stage_latency_ms", "gauge", "Per-stage median latency (last 512 results)",
           [(f'camera="{_esc(c)}",stage="{st}"', v) for c, s in cams
            for st, v in s["stages_ms_p50"].items()])
    family("capture_events_total", "counter",
           "Capture faults by kind: corrupt frames, reconnects, stalls, crashes",
           [(f'camera="{_esc(c)}",kind="{k}"', n) for c, s in cams
            for k, n in s.get("capture", {}).items() if k != "stuck_readers"])
    family("camera_up", "gauge", "1 while the camera is running",
           [(f'camera="{_esc(c)}",state="{s["state"]}"', int(s["state"] == "running"))
            for c, s in cams])
    return "\n".join(out) + "\n"


async def serve(address: str, snapshot: Callable[[], dict[str, dict[str, Any]]]) -> None:
    """Serve until cancelled."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path in (b"/metrics", b"/"):
                body, status = render(snapshot()).encode(), b"200 OK"
                ctype = b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype +
                         b"\r\nContent-Length: " + str(len(body)).encode() +
                         b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass  # a broken client is its own problem
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, int(port))
    log.info("metrics on http://%s/metrics", address)
    async with server:
        await server.serve_forever()
