"""The live view: an aiohttp server on its own thread and event loop, fed by a sink.

`ViewSink` runs on its sink thread (edged.outputs.base.sink). For a camera nobody watches it
returns at once: no frame is copied, drawn or encoded. For a watched camera it draws
and JPEG-encodes at most `view.fps` frames per second and hands the bytes to the
server's loop. Each viewer holds only the latest frame per camera (a slow browser
skips frames, it never queues them), so no viewer can delay the sink, the publish stage
or the cameras.

Thread ownership: the server's loop owns the viewers and the `watched` counts; the sink
thread only reads `watched` (a dict lookup) and hands work over with
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from edged.config import is_loopback_host
from edged.names import parse_host_port
from edged.outputs.base.draw import Legend, Overlay, encode_jpeg
from edged.outputs.base.sink import Outcome, Sink
from edged.outputs.view.settings import ViewConfig
from edged.telemetry import (
    CameraSnapshot,
    ControlEvent,
    ModelChanged,
    StateChanged,
    StatsReport,
    StreamEnded,
)

log = logging.getLogger("edged.view")


class _BadRequestLog(logging.LoggerAdapter):
    """aiohttp logs a malformed request (a 1 MB header, garbage, TLS to http) with
    log.exception: an ERROR and a traceback per hostile packet. One WARNING line instead."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc_info, HttpProcessingError):
            reason = " ".join(str(exc_info.message).split())[:200]
            self.warning("%s: %d %s", str(msg) % args, exc_info.code, reason)
        else:
            self.logger.exception(msg, *args, exc_info=exc_info, **kw)


_BAD_REQUEST_LOG = _BadRequestLog(log, {})

PENDING_JSON = 64  # control messages a viewer may have waiting; older ones are dropped
STOP_S = 2.0


def _page() -> bytes:
    return resources.files("edged.outputs.view").joinpath("page.html").read_bytes()


@dataclass(slots=True, eq=False)  # hashed by identity: viewers live in a set
class _Viewer:
    ws: web.WebSocketResponse
    cameras: frozenset[str] | None = None  # None: all of them
    frames: dict[str, bytes] = field(default_factory=dict)  # latest per camera
    texts: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    skipped: int = 0  # frames replaced before this viewer took them

    def wants(self, camera: str) -> bool:
        return self.cameras is None or camera in self.cameras


@dataclass(frozen=True, slots=True)
class ViewStatus:
    """What `/api/status` reports (and tests read): viewers and frames drawn per camera."""

    viewers: int
    rendered: dict[str, int]
    sent: int
    skipped: int


class ViewServer:
    """Serves the page, the WebSocket stream and `/api/status` on a bound socket."""

    def __init__(self, config: ViewConfig, sock: socket.socket,
                 tls: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._sock = sock
        self._tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="view", daemon=True)
        self._viewers: set[_Viewer] = set()
        # camera -> viewers watching it: written on the loop, read by the sink thread
        self.watched: dict[str, int] = {}
        self.watch_all = 0
        self.rendered: dict[str, int] = {}  # written by the sink thread
        self._hello: dict[str, Any] = {"type": "hello", "cameras": [], "legend": None,
                                       "model": "", "fps": config.fps}
        self._stats: str | None = None
        self._error: BaseException | None = None
        self._done_sent = 0
        self._done_skipped = 0

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = STOP_S) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._loop is None:
            self._sock.close()

    def is_watched(self, camera: str) -> bool:
        return self.watch_all > 0 or self.watched.get(camera, 0) > 0

    def push_frame(self, camera: str, data: bytes) -> None:
        self._call(self._deliver_frame, camera, data)

    def push_json(self, msg: dict[str, Any]) -> None:
        self._call(self._deliver_json, msg)

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # stopping: nobody watches any more
            loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ the loop

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported by start() or logged
            if not self._started.is_set():
                self._error = e
            else:
                log.error("view server failed: %s", e)
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/status", self._status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=0.5, logger=_BAD_REQUEST_LOG)
        await runner.setup()
        try:
            site = web.SockSite(runner, self._sock, ssl_context=self._tls)
            await site.start()
            log.info("view on %s://%s/%s", "https" if self._tls else "http", self.config.listen,
                     " (token required)" if self.config.token else "")
            self._started.set()
            await self._stopping.wait()
            for v in list(self._viewers):
                await v.ws.close(code=1001, message=b"edged is stopping")
        finally:
            await runner.cleanup()

    def _allowed(self, request: web.Request) -> web.Response | None:
        """None when the request may go on; else the refusal (token, Host, Origin)."""
        token = self.config.token
        if token is not None:
            given = request.query.get("token", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, text="edged view: this view needs its token: "
                                    "open /?token=<view.token>\n")
        else:
            # loopback without a token: a web page elsewhere must not reach it through a
            # name that resolves to 127.0.0.1 (DNS rebinding), so the Host must be local
            try:
                host = urlsplit("//" + (request.host or "")).hostname or ""
            except ValueError:  # a malformed Host header
                host = ""
            if not is_loopback_host(host):
                return web.Response(status=403, text=f"edged view: Host {request.host!r} is "
                                    "not this machine's loopback address\n")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            # a page from another site opening our WebSocket
            return web.Response(status=403, text="edged view: cross-origin request refused\n")
        return None

    async def _index(self, request: web.Request) -> web.StreamResponse:
        refused = self._allowed(request)
        if refused is not None:
            return refused
        return web.Response(body=_page(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy":
                                         "default-src 'self'; img-src 'self' blob:; "
                                         "style-src 'unsafe-inline'; "
                                         "script-src 'unsafe-inline'; connect-src 'self'"})

    async def _status(self, request: web.Request) -> web.StreamResponse:
        refused = self._allowed(request)
        if refused is not None:
            return refused
        s = self.status()
        return web.json_response({"viewers": s.viewers, "rendered": s.rendered,
                                  "sent": s.sent, "skipped": s.skipped})

    def status(self) -> ViewStatus:
        return ViewStatus(len(self._viewers), dict(self.rendered),
                          self._done_sent + sum(v.sent for v in self._viewers),
                          self._done_skipped + sum(v.skipped for v in self._viewers))

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        refused = self._allowed(request)
        if refused is not None:
            return refused
        if len(self._viewers) >= self.config.max_viewers:
            return web.Response(status=503, text=f"edged view: {self.config.max_viewers} "
                                "viewers already (view.max_viewers)\n")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        # `?watch=a,b` chooses the cameras from the first frame on (without it: all, until
        # a {"watch": [...]} message says otherwise)
        watch = request.query.get("watch")
        viewer = _Viewer(ws, None if watch is None else
                         frozenset(c for c in watch.split(",") if c))
        viewer.texts.append(json.dumps(self._hello))
        if self._stats is not None:
            viewer.texts.append(self._stats)
        self._viewers.add(viewer)
        self._watch(viewer, +1)
        sender = asyncio.create_task(self._send_loop(viewer))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(viewer, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._watch(viewer, -1)
            self._viewers.discard(viewer)
            self._done_sent += viewer.sent
            self._done_skipped += viewer.skipped
            sender.cancel()
        return ws

    def _on_text(self, viewer: _Viewer, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if isinstance(msg, dict) and "watch" in msg:
            want = msg["watch"]
            self._watch(viewer, -1)
            viewer.cameras = None if want is None else frozenset(
                str(c) for c in want if isinstance(c, str))
            viewer.frames = {c: f for c, f in viewer.frames.items() if viewer.wants(c)}
            self._watch(viewer, +1)

    def _watch(self, viewer: _Viewer, delta: int) -> None:
        if viewer.cameras is None:
            self.watch_all += delta
            return
        for c in viewer.cameras:
            n = self.watched.get(c, 0) + delta
            if n > 0:
                self.watched[c] = n
            else:
                self.watched.pop(c, None)

    async def _send_loop(self, viewer: _Viewer) -> None:
        ws = viewer.ws
        try:
            while not ws.closed:
                await viewer.wake.wait()
                viewer.wake.clear()
                texts, viewer.texts = viewer.texts, []
                for t in texts:
                    await ws.send_str(t)
                while viewer.frames:
                    _, data = viewer.frames.popitem()
                    await ws.send_bytes(data)
                    viewer.sent += 1
        except (ConnectionError, RuntimeError):
            pass  # the browser went away; its handler cleans up

    def _deliver_frame(self, camera: str, data: bytes) -> None:
        for v in self._viewers:
            if v.wants(camera):
                if camera in v.frames:
                    v.skipped += 1
                v.frames[camera] = data
                v.wake.set()

    def _deliver_json(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "hello":
            self._hello = msg
        text = json.dumps(msg)
        if kind == "stats":
            self._stats = text
        for v in self._viewers:
            if len(v.texts) >= PENDING_JSON:
                del v.texts[0]
            v.texts.append(text)
            v.wake.set()


def frame_message(header: dict[str, Any], jpeg: bytes) -> bytes:
    """A binary WebSocket message: 4-byte big-endian header length, JSON header, JPEG."""
    h = json.dumps(header).encode()
    return struct.pack(">I", len(h)) + h + jpeg


def _snapshot_json(s: CameraSnapshot) -> dict[str, Any]:
    return {"state": s.state.value, "capture_fps": s.capture_fps,
            "processed_fps": s.processed_fps, "published": s.published, "late": s.late,
            "e2e_ms": s.e2e_ms.to_wire(), "drops": s.drops.to_wire(),
            "budget_ms": s.budget_ms, "variant": s.variant, "providers": s.providers,
            "inference_ms": s.stages_ms_p50.get("inference")}


class ViewSink(Sink):
    """Draws and encodes watched cameras' results for the view server."""

    name = "view"

    def __init__(self, config: ViewConfig, sock: socket.socket, cameras: list[str],
                 tls: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.server = ViewServer(config, sock, tls)
        self._period_ns = int(1e9 / config.fps)
        self._next_ns: dict[str, int] = {}
        self._overlay = Overlay()
        self._cameras = list(cameras)
        self._legend: Legend | None = None
        self._model = ""
        self._hello_sent = False

    @property
    def url(self) -> str:
        hp = parse_host_port(self.config.listen)
        host = f"[{hp.host}]" if ":" in hp.host else hp.host
        return f"{'https' if self.config.tls else 'http'}://{host}:{hp.port}/"

    def open(self) -> None:
        self.server.start()
        self._send_hello()

    def _send_hello(self) -> None:
        self.server.push_json({"type": "hello", "cameras": self._cameras,
                               "legend": self._legend.to_json() if self._legend else None,
                               "model": self._model, "fps": self.config.fps})

    def deliver(self, outcome: Outcome) -> None:
        result, frame = outcome.result, outcome.frame
        cam = result.camera
        if frame is None or not self.server.is_watched(cam):
            return  # nobody watches: nothing is drawn, copied or encoded
        now = time.monotonic_ns()
        if now < self._next_ns.get(cam, 0):
            return
        self._next_ns[cam] = now + self._period_ns
        legend = Legend.of(result)
        if legend != self._legend or result.model_id != self._model or \
                cam not in self._cameras:
            self._legend, self._model = legend, result.model_id
            if cam not in self._cameras:
                self._cameras.append(cam)
            self._send_hello()
        jpeg = encode_jpeg(self._overlay.draw(frame, result), self.config.quality)
        header = {"camera": cam, "seq": result.seq, "t_capture_ns": result.t_capture_wall_ns,
                  "e2e_ms": (outcome.t_publish_ns - result.t_capture_wall_ns) / 1e6,
                  "late": outcome.late, "model": result.model_id,
                  "width": result.frame_w, "height": result.frame_h,
                  "detections": len(result.detections)}
        self.server.rendered[cam] = self.server.rendered.get(cam, 0) + 1
        self.server.push_frame(cam, frame_message(header, jpeg))

    def control(self, event: ControlEvent) -> None:
        match event:
            case StatsReport(snapshot=snap):
                self.server.push_json({"type": "stats", "interval_s": snap.interval_s,
                                       "cameras": {n: _snapshot_json(s)
                                                   for n, s in snap.cameras.items()}})
            case ModelChanged():
                self.server.push_json({"type": "model", "variant": event.variant,
                                       "rung": event.rung, "previous": event.previous,
                                       "reason": event.reason})
            case StateChanged():
                self.server.push_json({"type": "state", "camera": event.camera,
                                       "state": event.state.value, "detail": event.detail})

    def end_of_stream(self, eos: StreamEnded) -> None:
        self.server.push_json({"type": "eos", "camera": eos.camera, "reason": eos.reason})

    def close(self) -> None:
        self.server.stop()
