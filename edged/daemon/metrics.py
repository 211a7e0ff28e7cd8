"""An optional Prometheus text endpoint (`log.metrics: "127.0.0.1:9464"`).

Serves the same per-camera figures as the `_stats` message, from the latest snapshot,
as Prometheus text format 0.0.4 on GET /metrics. Plain asyncio: one request per
connection, no framework.

Binding is separate from serving: `bind` listens synchronously and
raises `ListenError` for a port in use, so that the daemon can fail before READY and
`edged check` can try the address; `serve` then serves on that socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from edged.outputs.base.listen import bind_tcp
from edged.telemetry import CameraState, DaemonSnapshot

log = logging.getLogger("edged.daemon.metrics")


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snapshot: DaemonSnapshot) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_: str, rows: list[tuple[str, float]]) -> None:
        out.append(f"# HELP edged_{name} {help_}")
        out.append(f"# TYPE edged_{name} {kind}")
        out.extend(f"edged_{name}{{{labels}}} {value}" for labels, value in rows)

    cams = [(f'camera="{_esc(name)}"', c) for name, c in sorted(snapshot.cameras.items())]
    family("capture_fps", "gauge", "Frames captured per second (last stats window)",
           [(cl, c.capture_fps) for cl, c in cams])
    family("processed_fps", "gauge",
           "Frames run through the model per second (last stats window)",
           [(cl, c.processed_fps) for cl, c in cams])
    family("published_total", "counter", "Results published",
           [(cl, c.published) for cl, c in cams])
    family("late_total", "counter", "Results published over the latency budget",
           [(cl, c.late) for cl, c in cams])
    family("budget_misses_total", "counter",
           "Frames that missed the latency budget (stale, late, late dropped)",
           [(cl, c.budget_misses) for cl, c in cams])
    family("dropped_total", "counter", "Frames dropped, by cause",
           [(f'{cl},cause="{cause}"', n) for cl, c in cams
            for cause, n in c.drops.to_wire().items()])
    family("e2e_latency_ms", "gauge", "Capture-to-send latency percentiles (last 512 results)",
           [(f'{cl},quantile="{q[1:]}"', v) for cl, c in cams
            for q, v in c.e2e_ms.to_wire().items() if v is not None])
    family("stage_latency_ms", "gauge", "Per-stage median latency (last 512 results)",
           [(f'{cl},stage="{st}"', v) for cl, c in cams for st, v in c.stages_ms_p50.items()])
    family("capture_events_total", "counter",
           "Capture faults by kind: corrupt frames, reconnects, stalls, crashes",
           [(f'{cl},kind="{k}"', n) for cl, c in cams for k, n in c.capture.events().items()])
    family("nonfinite_total", "counter",
           "Model output with NaN/Inf values: detections dropped (kind rows), frames with "
           "nothing else (kind frames)",
           [(f'{cl},kind="{k.removeprefix("nonfinite_")}"', n) for cl, c in cams
            for k, n in c.model_output.to_wire().items()])
    family("tracks_active", "gauge",
           "Confirmed tracks in the camera's last frame (cameras with tracking on)",
           [(cl, c.tracks_active) for cl, c in cams if c.tracks_active is not None])
    family("camera_up", "gauge", "1 while the camera is running",
           [(f'{cl},state="{c.state.value}"', int(c.state is CameraState.RUNNING))
            for cl, c in cams])
    inf = snapshot.inference
    if inf.remote_up is not None:
        family("remote_up", "gauge",
               "1 while the inference server is usable (0: the local fallback runs)",
               [("", int(inf.remote_up))])
        family("remote_frames_total", "counter",
               "Frames of the remote model, by where they were computed",
               [('where="server"', inf.remote_frames),
                ('where="fallback"', inf.fallback_frames)])
    sinks = [(f'sink="{_esc(s.name)}"', s) for s in snapshot.sinks]
    if sinks:
        family("sink_delivered_total", "counter", "Results an output has handled",
               [(sl, s.delivered) for sl, s in sinks])
        family("sink_dropped_total", "counter",
               "Results an output dropped because its queue was full",
               [(sl, s.dropped) for sl, s in sinks])
        family("sink_failed_total", "counter", "Results and messages an output failed on",
               [(sl, s.failed) for sl, s in sinks])
        family("sink_queued", "gauge", "Results waiting for an output now",
               [(sl, s.queued) for sl, s in sinks])
    return "\n".join(out) + "\n"


def bind(address: str) -> socket.socket:
    """A listening TCP socket on `address` (log.metrics, "HOST:PORT"), bound now.

    Synchronous, so that a port in use is found before the daemon reports READY;
    `serve(address, ..., sock=...)` serves on it later. Raises ListenError.
    """
    return bind_tcp(address, "log.metrics")


async def serve(address: str, snapshot: Callable[[], DaemonSnapshot], *,
                sock: socket.socket | None = None) -> None:
    """Serve until cancelled, on `sock` (from `bind`), else on one bound here.
    ListenError if it cannot listen."""
    if sock is None:
        sock = bind(address)

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

    try:
        server = await asyncio.start_server(handle, sock=sock)
    except BaseException:
        sock.close()
        raise
    log.info("metrics on http://%s/metrics", address)
    async with server:
        await server.serve_forever()
