"""An optional Prometheus text endpoint (`log.metrics: "127.0.0.1:9464"`).

Serves the same per-camera figures as the `_stats` message, from the latest snapshot,
as Prometheus text format 0.0.4 on GET /metrics. Plain asyncio: one request per
connection, no framework.

Binding is separate from serving: `bind` (or `listen_early`) listens synchronously and
raises `MetricsError` for a port in use, so that the daemon can fail before READY and
`edged check` can try the address; `serve` then serves on that socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from edged.names import parse_host_port

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


class MetricsError(RuntimeError):
    """The metrics endpoint cannot listen (bad address, port in use, no permission)."""


def bind(address: str) -> socket.socket:
    """A listening TCP socket on `address` (log.metrics, "HOST:PORT"), bound now.

    Synchronous, so that a port in use is found before the daemon reports READY;
    `serve(address, ..., sock=...)` serves on it later. Raises MetricsError.
    """
    try:
        hp = parse_host_port(address)  # the rule the config validated log.metrics with
    except ValueError as e:
        raise MetricsError(f"log.metrics {address!r}: {e}") from None
    try:
        infos = socket.getaddrinfo(hp.host, hp.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise MetricsError(f"cannot listen on log.metrics {address}: cannot resolve "
                           f"{hp.host!r} ({e.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # as asyncio.start_server does; a port another socket listens on still fails
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(100)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise MetricsError(f"cannot listen on log.metrics {address}: "
                           f"{e.strerror or e}") from None
    return sock


# Listening sockets bound ahead of `serve` (`listen_early`), by address.
_early: dict[str, socket.socket] = {}


def listen_early(address: str) -> None:
    """Bind `address` now (MetricsError if it cannot be) and keep the socket for the
    `serve(address, ...)` that comes later: a caller that only knows the address (the
    pipeline) then serves on the socket bound before READY. `release_early` closes one
    that was never served."""
    if address not in _early:
        _early[address] = bind(address)


def release_early(address: str | None = None) -> None:
    """Close the socket(s) `listen_early` bound that no `serve` took over."""
    for key in [address] if address is not None else list(_early):
        sock = _early.pop(key, None)
        if sock is not None:
            sock.close()


async def serve(address: str, snapshot: Callable[[], dict[str, dict[str, Any]]], *,
                sock: socket.socket | None = None) -> None:
    """Serve until cancelled, on `sock` (from `bind`), else on the socket `listen_early`
    bound for `address`, else on one bound here. MetricsError if it cannot listen."""
    if sock is None:
        sock = _early.pop(address, None)
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
