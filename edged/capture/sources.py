"""Camera sources: each captures in its own thread and hands frames to the pipeline.

Hand-over is a `Handoff`: for live sources a latest-frame slot (a new frame replaces an
unprocessed one, which is counted), for files in replay mode a small lossless queue
whose `put` blocks the reader (back-pressure). Nothing here grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import http.client
import logging
import os
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edged.capture.defaults import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from edged.capture.mjpeg import (
    BodyPipe,
    MjpegError,
    MjpegStream,
    http_get,
    jpeg_size,
    mjpeg_stream,
)
from edged.redaction import Redactor
from edged.results import Frame
from edged.telemetry import CameraState

log = logging.getLogger("edged.capture.sources")

# FFmpeg prints every decode error of a garbage stream to stderr (the journal), 30 lines a
# second for a 30 fps camera; edged counts them and logs once per state change instead.
# Read by OpenCV when FFmpeg is first used; OPENCV_FFMPEG_DEBUG=1 with
# OPENCV_FFMPEG_LOGLEVEL=32 in the environment brings FFmpeg's messages back for debugging.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL

# FFmpeg's options reach OpenCV's FFmpeg backend only through this environment variable,
# read at each open ("key;value|key;value"; unset, OpenCV asks for RTSP over TCP first,
# then UDP). FFmpeg 8 ignores the old `?tcp`/`?udp` URL suffixes (tried), so a camera's
# `rtsp_transport` is set here, around its open.
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_USER_FFMPEG_OPTIONS = os.environ.get(FFMPEG_OPTIONS_ENV)  # the operator's own, kept


def ffmpeg_capture_options(rtsp_transport: str) -> str | None:
    """The value of OPENCV_FFMPEG_CAPTURE_OPTIONS for an RTSP camera (None: unset)."""
    if rtsp_transport == "auto":
        return _USER_FFMPEG_OPTIONS
    kept = [o for o in (_USER_FFMPEG_OPTIONS or "").split("|")
            if o and o.split(";")[0] not in ("rtsp_transport", "rtsp_flags")]
    return "|".join([*kept, f"rtsp_transport;{rtsp_transport}"])


class _FfmpegOptions:
    """One process-wide variable, cameras opening on their own threads: opens that need
    different values wait for each other (OpenCV reads it at an unknown moment during
    the open), opens that need the same value run together. A stuck open (a dead camera,
    until FFmpeg's open timeout) delays only cameras with another transport."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value = _USER_FFMPEG_OPTIONS
        self._opening = 0

    @contextlib.contextmanager
    def set(self, value: str | None) -> Any:
        with self._cond:
            while self._opening and self._value != value:
                self._cond.wait()
            if value is None:
                os.environ.pop(FFMPEG_OPTIONS_ENV, None)
            else:
                os.environ[FFMPEG_OPTIONS_ENV] = value
            self._value = value
            self._opening += 1
        try:
            yield
        finally:
            with self._cond:
                self._opening -= 1
                self._cond.notify_all()


FFMPEG_OPTIONS = _FfmpegOptions()


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names the camera and source."""


class CorruptFrame(SourceError):
    """One frame could not be decoded; the source may still deliver good ones."""


# An unexpected exception inside a source (a bug, not a SourceError) restarts it with
# backoff at most this many times within the window; one more and the camera fails.
CRASH_BUDGET = 5
CRASH_WINDOW_S = 600.0
# A reader thread stuck inside a C call cannot be killed, only abandoned; it normally
# returns when the backend's own timeout fires. At most this many per camera may be
# outstanding: beyond it the camera waits for one to return instead of piling up threads.
MAX_ABANDONED_READERS = 3


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a capture thread reacts to stalls, corrupt frames, disconnects and crashes."""

    stall_timeout_s: float = 5.0
    max_reconnects: int | None = None  # None: retry forever (capped backoff)
    max_corrupt_frames: int = 10
    max_pixels: int = DEFAULT_MAX_PIXELS
    crash_budget: int = CRASH_BUDGET
    crash_window_s: float = CRASH_WINDOW_S
    max_abandoned: int = MAX_ABANDONED_READERS

    @property
    def open_timeout_s(self) -> float:
        # opening a network stream probes it first: RTSP often takes seconds
        return max(2 * self.stall_timeout_s, 10.0)

    @classmethod
    def from_camera(cls, cam: Any) -> RestartPolicy:
        """From a camera's config (`edged.config.CameraConfig`)."""
        return cls(stall_timeout_s=cam.stall_timeout_s, max_reconnects=cam.max_reconnects,
                   max_corrupt_frames=cam.max_corrupt_frames, max_pixels=cam.max_pixels)


class Handoff:
    """Frames from one capture thread to one asyncio consumer, bounded.

    `lossless=False`: capacity 1, the newest frame wins (`overwritten` counts the
    frames that were replaced before anyone took them). `lossless=True`: `put` waits
    for space, so a file is read no faster than it is processed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, lossless: bool, capacity: int = 2
                 ) -> None:
        self._loop = loop
        self.lossless = lossless
        self.capacity = capacity if lossless else 1
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._ready = asyncio.Event()
        self.closed = False
        self.overwritten = 0
        self.put_count = 0

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, frame: Frame, timeout: float | None = None) -> bool | None:
        """Called by the capture thread: True queued, None timed out waiting for space
        (lossless only; try again), False closed (the source should stop)."""
        with self._cond:
            if self.lossless:
                end = None if timeout is None else time.monotonic() + timeout
                while len(self._items) >= self.capacity and not self.closed:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._cond.wait(left if left is not None else 0.5)
            elif self._items:
                self._items.popleft()
                self.overwritten += 1
            if self.closed:
                return False
            self._items.append(frame)
            self.put_count += 1
        self._wake()
        return True

    def close(self) -> None:
        """End of stream: the consumer gets the frames still queued, then None."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._wake()

    def ready(self) -> bool:
        """A frame is waiting right now."""
        with self._cond:
            return bool(self._items)

    def take(self) -> Frame | None:
        """A frame if one is waiting (the newest one in a live slot), without waiting."""
        with self._cond:
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    async def wait(self) -> bool:
        """Wait until a frame is available; False once closed and drained."""
        while True:
            with self._cond:
                if self._items:
                    return True
                if self.closed:
                    return False
                self._ready.clear()
            await self._ready.wait()

    async def get(self) -> Frame | None:
        while await self.wait():
            frame = self.take()
            if frame is not None:
                return frame
        return None


class Source(Protocol):
    """A frame reader; `read` blocks until the next frame, None means end of stream."""

    live: bool
    description: str
    # optional `can_stall = False`: reads always return (CaptureThread runs no watchdog)

    def open(self) -> None: ...
    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...
    def default_fps(self) -> float | None: ...

    def fresh(self) -> Source:
        """A new, unopened reader with the same settings. Used after a stall: the old one
        may still be blocked in `read` in an abandoned thread and must not be touched."""
        ...


class SyntheticSource:
    """The RoboCup scene renderer as a camera (`edged.synth`).

    It holds its seed's `edged.synth.Renderer` (layout and per-size images) for as long
    as the camera exists, so cameras with different seeds never evict each other's
    layouts (they used to share an 8-entry cache and rebuilt a layout every frame)."""

    live = True
    can_stall = False  # rendering never blocks: no watchdog (reader) thread needed

    def __init__(self, seed: int, width: int, height: int) -> None:
        self.seed, self.width, self.height = seed, width, height
        self.index = 0
        self.description = f"synthetic seed {seed} {width}x{height}"
        self._renderer: Any = None  # edged.synth.Renderer, from the first open

    def open(self) -> None:
        if self._renderer is None:
            from edged import synth  # only cameras that use it pay for the import

            self._renderer = synth.renderer(self.seed)

    def read(self) -> np.ndarray | None:
        img = self._renderer.render(self.index, self.width, self.height).image
        self.index += 1
        return img

    def close(self) -> None:
        pass  # the renderer stays: a reopen after a restart needs it again

    def default_fps(self) -> float | None:
        return 15.0

    def fresh(self) -> SyntheticSource:
        new = SyntheticSource(self.seed, self.width, self.height)
        new.index = self.index  # the scene sequence carries on
        new._renderer = self._renderer
        return new


class CaptureSource:
    """Anything OpenCV's VideoCapture opens: files, V4L2 devices, URLs, GStreamer."""

    # A file whose read fails before its last frame has a corrupt frame there (skipped,
    # counted); this many failures in a row and it is taken as the end (a truncated file).
    FILE_READ_RETRIES = 8

    def __init__(self, target: str | int, backend: int, *, live: bool, loop: bool = False,
                 props: dict[int, float] | None = None, description: str = "",
                 open_params: list[int] | None = None, rtsp_transport: str | None = None
                 ) -> None:
        self.target, self.backend, self.live, self.loop = target, backend, live, loop
        self.props = props or {}
        self.open_params = open_params or []  # properties only honoured at open (timeouts)
        self.rtsp_transport = rtsp_transport  # auto|tcp|udp for rtsp:// URLs, else None
        self.description = description or str(target)
        self.cap: cv2.VideoCapture | None = None
        self._bad_run = 0
        self.end_detail = ""  # why a file ended, when it was not a clean end

    def fresh(self) -> CaptureSource:
        return self.retarget(self.target)

    def retarget(self, target: str | int) -> CaptureSource:
        """A new, unopened capture with these settings reading `target` instead."""
        return CaptureSource(target, self.backend, live=self.live, loop=self.loop,
                             props=self.props, description=self.description,
                             open_params=self.open_params, rtsp_transport=self.rtsp_transport)

    def _open_cap(self) -> cv2.VideoCapture:
        if isinstance(self.target, str) and not self.live and not Path(self.target).is_file():
            raise SourceError(f"file not found: {self.description}")
        # a device that is not plugged in (yet): retried with backoff like any live failure
        if self.backend == cv2.CAP_V4L2 and isinstance(self.target, str) and \
                not os.path.exists(self.target):
            raise SourceError(f"{self.description}: the device does not exist")
        options = (contextlib.nullcontext() if self.rtsp_transport is None
                   else FFMPEG_OPTIONS.set(ffmpeg_capture_options(self.rtsp_transport)))
        with options:
            if self.open_params:
                cap = cv2.VideoCapture(self.target, self.backend, self.open_params)
            else:
                cap = cv2.VideoCapture(self.target, self.backend)
        for prop, value in self.props.items():
            cap.set(prop, value)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.description}")
        return cap

    def open(self) -> None:
        self.cap = self._open_cap()
        self._bad_run = 0

    def read(self) -> np.ndarray | None:
        cap = self.cap  # a local: nothing here may touch a capture another thread replaced
        assert cap is not None
        ok, frame = cap.read()
        img: np.ndarray | None = frame
        if not ok or img is None:
            if self.live:
                # a garbage part in an MJPEG stream fails one read and the next one works;
                # a dropped connection fails every read: the capture thread tells them
                # apart by counting failures in a row
                raise CorruptFrame(f"no frame from {self.description} (undecodable data or "
                                   "connection lost)")
            pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if count > 0 and pos < count - 1 and self._bad_run < self.FILE_READ_RETRIES:
                self._bad_run += 1
                raise CorruptFrame(f"undecodable frame {pos} of {count} in {self.description}")
            if self._bad_run:
                self.end_detail = (f"{self.description} ends at frame {pos} of {count} "
                                   "(truncated or unreadable)")
            self._bad_run = 0
            img = self._rewind() if self.loop else None
            if img is None:
                return None
        self._bad_run = 0
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.ndim == 3 and img.shape[2] == 4:  # e.g. a GStreamer pipeline ending in BGRx
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        return img

    def _rewind(self) -> np.ndarray | None:
        """Start a file again. It is reopened rather than seeked, so a file replaced on
        disk (os.replace of a new recording) is picked up at the next loop."""
        assert self.cap is not None
        try:
            cap = self._open_cap()
        except SourceError as e:
            # the file is gone or unreadable now: keep playing what is already open
            log.warning("%s; replaying the copy already open", e)
            cap = None
        if cap is not None:
            self.cap.release()
            self.cap = cap
        elif not self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return None
        ok, img = self.cap.read()
        return img if ok and img is not None else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def default_fps(self) -> float | None:
        if self.cap is None:
            return None
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and 0 < fps < 1000 else None


class HttpSource:
    """An http(s) camera, opened with one GET: an MJPEG stream (multipart/x-mixed-replace)
    is read by edged itself, each part bounded (`edged.capture.mjpeg`); any other live
    stream (a 200 without a length: MPEG-TS, FLV, ...) is read by FFmpeg from that same
    connection through a pipe; what FFmpeg must request itself (digest auth's 401, a
    redirect, a file with a length, an HLS playlist) is handed to FFmpeg by URL.

    Why the same connection and not a second one: many cameras (and `ffmpeg -listen 1`)
    serve one client at a time, so closing the answer to let FFmpeg connect again found
    nobody listening, forever (issue 29, case 8). The URL alone cannot tell MJPEG from
    the rest, and a HEAD costs a connection too; the answer in hand can.
    """

    live = True

    def __init__(self, url: str, policy: RestartPolicy, description: str,
                 ffmpeg: CaptureSource) -> None:
        self.url, self.policy, self.description = url, policy, description
        self._ffmpeg = ffmpeg  # by URL: unopened until the server's answer asks for it
        self._capture: CaptureSource | None = None  # the FFmpeg capture in use, if any
        self._pipe: BodyPipe | None = None
        self._stream: MjpegStream | None = None
        self.via = ""  # once open: "edged", "ffmpeg" (by URL) or "ffmpeg-pipe"

    def open(self) -> None:
        read_timeout_s = 2 * self.policy.stall_timeout_s + 1
        try:
            answer = http_get(self.url, open_timeout_s=self.policy.open_timeout_s)
        except (OSError, ValueError, http.client.HTTPException) as e:  # ValueError: a bad port
            raise SourceError(f"cannot open {self.description}: "
                              f"{e or type(e).__name__}") from None
        stream = mjpeg_stream(answer, read_timeout_s=read_timeout_s,
                              max_pixels=self.policy.max_pixels, description=self.description)
        if stream is not None:
            self._stream, self.via = stream, "edged"
            return
        if answer.live_stream():
            self._pipe = BodyPipe(answer, read_timeout_s=read_timeout_s,
                                  description=self.description)
            self._capture = self._ffmpeg.retarget(self._pipe.url)
            self.via = "ffmpeg-pipe"
        else:
            log.debug("%s answers %d %s: handed to FFmpeg by URL", self.description,
                      answer.status, answer.content_type)
            answer.close()
            self._capture, self.via = self._ffmpeg, "ffmpeg"
        try:
            self._capture.open()
        except SourceError:
            self.close()
            raise

    def read(self) -> np.ndarray | None:
        if self._stream is None:
            assert self._capture is not None
            return self._capture.read()
        try:
            img = self._stream.read(CorruptFrame)
        except MjpegError as e:
            raise SourceError(str(e)) from None
        if img is None:  # a live camera does not end: the server went away
            raise SourceError(f"{self.description}: the MJPEG stream ended")
        return img

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._capture is not None:
            self._capture.close()  # FFmpeg lets go of the pipe first ...
            self._capture = None
        if self._pipe is not None:
            self._pipe.close()  # ... then its fd may be closed
            self._pipe = None

    def default_fps(self) -> float | None:
        return self._capture.default_fps() if self._capture is not None else None

    def fresh(self) -> HttpSource:
        return HttpSource(self.url, self.policy, self.description, self._ffmpeg.fresh())


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or WebP header without decoding the image;
    None for other formats or an unreadable header (OpenCV's own pixel limit, set from
    max_pixels at start by `limit_image_decoding`, covers those)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if head.startswith(b"BM") and len(head) >= 26:
                w = int.from_bytes(head[18:22], "little", signed=True)
                h = int.from_bytes(head[22:26], "little", signed=True)
                return abs(w), abs(h)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                kind = head[12:16]
                if kind == b"VP8 " and len(head) >= 30:
                    return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                            int.from_bytes(head[28:30], "little") & 0x3FFF)
                if kind == b"VP8L" and len(head) >= 25:
                    b = int.from_bytes(head[21:25], "little")
                    return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
                if kind == b"VP8X" and len(head) >= 30:
                    return (int.from_bytes(head[24:27], "little") + 1,
                            int.from_bytes(head[27:30], "little") + 1)
                return None
            if head[:2] == b"\xff\xd8":
                return jpeg_size(f)
    except OSError:
        return None
    return None


def limit_image_decoding(max_pixels: int) -> None:
    """OpenCV's own bound on a decoded image's pixels (OPENCV_IO_MAX_IMAGE_PIXELS, read by
    OpenCV at its first decode): the backstop for formats `image_size` cannot read. Set
    once, before the first frame, from the largest camera max_pixels; an explicit
    environment setting wins."""
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))


class ImageFolderSource:
    """A folder of images or a glob, in name order."""

    live = False

    def __init__(self, pattern: str, loop: bool, description: str = "",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.pattern, self.loop = pattern, loop
        self.max_pixels = max_pixels
        self.files: list[str] = []
        self.pos = 0
        self._bad_in_pass = 0  # a looping folder with no readable image is an error
        self.description = description or f"images {pattern}"

    def open(self) -> None:
        p = Path(self.pattern)
        if p.is_dir():
            files = [str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            files = sorted(glob.glob(self.pattern))
        if not files:
            raise SourceError(f"no images match {self.description.removeprefix('images ')}")
        self.files = files

    def read(self) -> np.ndarray | None:
        if self.pos >= len(self.files):
            if not self.loop:
                return None
            if self._bad_in_pass == len(self.files):
                raise SourceError(f"no readable image in {self.pattern}")
            self.pos = 0
            self._bad_in_pass = 0
        path = self.files[self.pos]
        self.pos += 1
        size = image_size(path)  # from the header: a huge image is never decoded
        if size is not None and size[0] * size[1] > self.max_pixels:
            self._bad_in_pass += 1
            raise CorruptFrame(f"image {path} is {size[0]}x{size[1]} = {size[0] * size[1]} "
                               f"pixels, above max_pixels {self.max_pixels}")
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:  # replaced, truncated or not an image: skipped and counted
            self._bad_in_pass += 1
            raise CorruptFrame(f"unreadable image {path}")
        return img

    def close(self) -> None:
        pass

    def default_fps(self) -> float | None:
        return None

    def fresh(self) -> ImageFolderSource:
        new = ImageFolderSource(self.pattern, self.loop, self.description, self.max_pixels)
        new.pos = self.pos
        return new


def source_for(cam: Any, *, loop: bool | None = None,
               redactor: Redactor | None = None) -> Source:
    """The reader for a camera's config (`edged.config.CameraConfig`); `loop` overrides.

    Network sources take their open/read timeouts from the camera's `RestartPolicy`.
    `redactor` (the config's, with its ${VAR} values) hides credentials in the source's
    description, which every log line, state message and view shows.
    """
    return make_source(cam.resolved_type(), cam.source, width=cam.width, height=cam.height,
                       fps=cam.fps, fourcc=cam.fourcc, loop=cam.loop if loop is None else loop,
                       seed=cam.seed, policy=RestartPolicy.from_camera(cam), redactor=redactor,
                       rtsp_transport=cam.rtsp_transport)


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if "GStreamer" in line:
            return "YES" in line
    return False


def make_source(kind: str, source: str, *, width: int | None = None, height: int | None = None,
                fps: float | None = None, fourcc: str | None = None, loop: bool = True,
                seed: int = 0, policy: RestartPolicy | None = None,
                redactor: Redactor | None = None, rtsp_transport: str = "auto") -> Source:
    """Build the reader for one camera from its resolved type."""
    policy = policy or RestartPolicy()
    shown = (redactor or Redactor())(source)  # what descriptions say: no credentials
    if kind == "synthetic":
        return SyntheticSource(seed, width or 640, height or 480)
    if kind == "video":
        return CaptureSource(source, cv2.CAP_ANY, live=False, loop=loop,
                             description=f"video {shown}")
    if kind == "images":
        return ImageFolderSource(source, loop, description=f"images {shown}",
                                 max_pixels=policy.max_pixels)
    props: dict[int, float] = {}
    if kind == "v4l2":
        if fourcc:
            props[cv2.CAP_PROP_FOURCC] = cv2.VideoWriter.fourcc(*fourcc)
        if width:
            props[cv2.CAP_PROP_FRAME_WIDTH] = width
        if height:
            props[cv2.CAP_PROP_FRAME_HEIGHT] = height
        if fps:
            props[cv2.CAP_PROP_FPS] = fps
        props[cv2.CAP_PROP_BUFFERSIZE] = 1  # never hand out a stale driver buffer
        target: str | int = int(source) if source.isdigit() else source
        return CaptureSource(target, cv2.CAP_V4L2, live=True, props=props,
                             description=f"V4L2 {shown}")
    if kind == "url":
        # FFmpeg's own timeouts (30 s by default) bound how long an abandoned reader stays
        # stuck: a read gives up a little after the stall watchdog has moved on, an open
        # a little after the watchdog's open allowance
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(policy.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int((2 * policy.stall_timeout_s + 1) * 1000)]
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        ffmpeg = CaptureSource(source, cv2.CAP_FFMPEG, live=True,
                               props={cv2.CAP_PROP_BUFFERSIZE: 1}, description=shown,
                               open_params=params,
                               rtsp_transport=rtsp_transport if scheme in ("rtsp", "rtsps")
                               else None)
        if scheme in ("http", "https"):
            return HttpSource(source, policy, shown, ffmpeg)
        return ffmpeg
    if kind == "gstreamer":
        if not gstreamer_available():
            raise SourceError("this OpenCV build has no GStreamer support; install an OpenCV "
                              "built with GStreamer (e.g. the distribution's python3-opencv)")
        return CaptureSource(source, cv2.CAP_GSTREAMER, live=True, description="GStreamer pipeline")
    raise SourceError(f"unknown source type {kind!r}")


class _Session:
    """One open-read-close cycle of a source, run in its own reader thread."""

    def __init__(self, source: Source, number: int) -> None:
        self.source = source
        self.number = number
        self.busy_since: float | None = None  # monotonic start of the open/read under way
        self.busy_in = ""  # "open" or "read"
        self.frames = 0  # good frames delivered
        self.abandoned = False  # set by the supervisor under CaptureThread._lock
        self.abandoned_at = 0.0
        # ("eos" | "stop" | "error" | "crash", detail), set when the reader ends
        self.outcome: tuple[str, str] = ("stop", "")
        self.done = threading.Event()
        self.thread: threading.Thread | None = None


class CaptureThread:
    """Runs one source: paces, stamps, checks and hands over frames; restarts on failure.

    Design: a supervisor thread (`capture-NAME`) starts one reader thread per session
    (open, read until something goes wrong, close) and watches it. The reader does all
    the blocking calls; the supervisor never blocks on the source, so it can see a stall
    (a live source's open or read that does not return within `stall_timeout_s`) even
    while the reader sits inside OpenCV. On a stall the reader is abandoned, not closed:
    releasing a cv2.VideoCapture from another thread while its read() runs is a
    use-after-free in the FFmpeg/V4L2 backends (a crash of the whole daemon), and a
    thread blocked in C cannot be killed. A fresh reader (`source.fresh()`) takes over;
    the abandoned one finds itself abandoned when its call returns (FFmpeg's own
    timeouts are set to make sure it does), closes its own capture and exits without
    touching state or hand-off. At most `max_abandoned` may be outstanding per camera.
    A source that cannot block (`can_stall = False`: the synthetic renderer) needs no
    watching: the supervisor thread reads it itself, one thread per camera, not two.

    Failures, all logged once per state change:
    - SourceError on open or read of a live source, a stall, or `max_corrupt_frames`
      undecodable/malformed frames in a row: `reconnecting`, reopened with exponential
      backoff (capped), forever unless `max_reconnects` (in a row, without a frame) is
      set. Files that cannot be opened: `failed`.
    - an unexpected exception inside the source (a bug): restarted with the same
      backoff, at most `crash_budget` times within `crash_window_s`, then `failed`.
    - a corrupt frame from a file or folder is skipped and counted (`corrupt`).
    """

    def __init__(self, camera: str, source: Source, handoff: Handoff, *, fps: float | None,
                 pace: bool, backoff: tuple[float, float] = (0.5, 30.0),
                 on_state: Callable[[str, CameraState, str], None] | None = None,
                 policy: RestartPolicy | None = None) -> None:
        self.camera, self.source, self.handoff = camera, source, handoff
        self.fps, self.pace = fps, pace
        self.backoff = backoff
        self.on_state = on_state  # (camera, state, detail), called from the capture thread
        self.policy = policy or RestartPolicy()
        self.seq = 0
        self.state = CameraState.STARTING
        self.detail = ""  # what the last state change said (e.g. why a file ended)
        self.error: str | None = None
        # counters, read by the stats snapshot
        self.corrupt = 0  # frames that could not be decoded or were malformed, skipped
        self.reconnects = 0  # sessions ended by a failure and reopened
        self.stalls = 0  # of which: no frame within stall_timeout_s
        self.crashes = 0  # unexpected exceptions inside the source
        self.abandoned_readers = 0  # reader threads left stuck in the source, ever
        self._stop = threading.Event()
        self._lock = threading.Lock()  # state changes vs. abandoning a reader
        self._abandoned: list[_Session] = []
        self._sessions = 0
        self._waiting_for_stuck = False
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stuck_readers(self) -> int:
        """Abandoned reader threads that have not returned yet."""
        return sum(1 for s in self._abandoned if not s.done.is_set())

    def _set_state(self, state: CameraState, detail: str = "",
                   session: _Session | None = None) -> None:
        with self._lock:
            if session is not None and session.abandoned:
                return  # an abandoned reader has no say any more
            if state != self.state:
                self.state = state
                self.detail = detail
                msg = f"camera {self.camera}: {state}" + (f" ({detail})" if detail else "")
                bad = state in (CameraState.RECONNECTING, CameraState.FAILED)
                (log.warning if bad else log.info)(msg)
                if self.on_state is not None:
                    self.on_state(self.camera, state, detail)

    # ------------------------------------------------------------ supervisor

    def _run(self) -> None:
        delay = self.backoff[0]
        failures_in_row = 0  # reconnects without a good frame in between
        crash_times: deque[float] = deque()
        session: _Session | None = None
        try:
            while not self._stop.is_set():
                if not self._room_for_reader():
                    continue
                self._sessions += 1
                session = _Session(self.source, self._sessions)
                if getattr(self.source, "can_stall", True):
                    session.thread = threading.Thread(
                        target=self._reader, args=(session,), daemon=True,
                        name=f"capture-{self.camera}-{session.number}")
                    session.thread.start()
                    kind, detail = self._watch(session)
                else:  # nothing to watch for: read here, one thread per camera
                    self._reader(session)
                    kind, detail = session.outcome
                if kind == "stop":
                    return
                if kind == "eos":
                    self._set_state(CameraState.STOPPED, detail or "end of stream")
                    return
                self.error = detail
                if session.frames:
                    failures_in_row = 0
                    delay = self.backoff[0]
                failures_in_row += 1
                if kind == "crash":
                    self.crashes += 1
                    now = time.monotonic()
                    crash_times.append(now)
                    while crash_times and now - crash_times[0] > self.policy.crash_window_s:
                        crash_times.popleft()
                    if len(crash_times) > self.policy.crash_budget:
                        self.error = (f"camera {self.camera}: capture crashed {len(crash_times)}"
                                      f" times within {self.policy.crash_window_s:.0f} s, "
                                      f"giving up; last error: {detail}")
                        self._set_state(CameraState.FAILED, self.error)
                        return
                    detail = (f"{detail}; restart {len(crash_times)} of "
                              f"{self.policy.crash_budget} within "
                              f"{self.policy.crash_window_s:.0f} s")
                elif not self.source.live:  # a file that cannot be opened or read
                    self._set_state(CameraState.FAILED, detail)
                    return
                elif self.policy.max_reconnects is not None and \
                        failures_in_row > self.policy.max_reconnects:
                    self.error = (f"camera {self.camera}: gave up after "
                                  f"{self.policy.max_reconnects} reconnects without a frame; "
                                  f"last error: {detail}")
                    self._set_state(CameraState.FAILED, self.error)
                    return
                self.reconnects += 1
                self._set_state(CameraState.RECONNECTING, f"{detail}; retrying every <= "
                                f"{self.backoff[1]:g} s")
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff[1])
        except Exception as e:  # a bug here must not take the daemon down
            log.exception("camera %s: capture supervisor crashed", self.camera)
            self.error = f"capture crashed: {e}"
            self._set_state(CameraState.FAILED, self.error)
        finally:
            self._stop.set()  # the reader stops after its current call
            if session is not None and session.thread is not None and not session.abandoned:
                session.thread.join(1.0)  # give the device back before a restart reopens it
            self.handoff.close()
            if self.state not in (CameraState.FAILED, CameraState.STOPPED):
                self._set_state(CameraState.STOPPED)

    def _room_for_reader(self) -> bool:
        """False (after waiting a little) while too many abandoned readers are stuck."""
        self._abandoned = [s for s in self._abandoned if not s.done.is_set()]
        if len(self._abandoned) < self.policy.max_abandoned:
            self._waiting_for_stuck = False
            return True
        if not self._waiting_for_stuck:  # once per episode, not once a second
            self._waiting_for_stuck = True
            log.error("camera %s: %d reader threads still stuck in the source; waiting for "
                      "one to return before reopening it", self.camera, len(self._abandoned))
        self._set_state(CameraState.RECONNECTING, f"{len(self._abandoned)} reader threads stuck")
        self._stop.wait(1.0)
        return False

    def _watch(self, session: _Session) -> tuple[str, str]:
        """Wait for the reader to end, or abandon it on a stall; its outcome."""
        live = self.source.live
        limit = {"open": self.policy.open_timeout_s + 5.0,  # FFmpeg's own open timeout first
                 "read": self.policy.stall_timeout_s}
        poll = min(0.25, self.policy.stall_timeout_s / 4)
        while not session.done.wait(poll):
            if self._stop.is_set():
                return "stop", ""
            since = session.busy_since
            if not live or since is None:
                continue
            waited = time.monotonic() - since
            if waited < limit[session.busy_in]:
                continue
            with self._lock:
                if session.done.is_set():
                    break
                session.abandoned = True
                session.abandoned_at = time.monotonic()
            self._abandoned.append(session)
            self.abandoned_readers += 1
            self.stalls += 1
            log.warning("camera %s: reader thread %s abandoned, blocked in %s for %.1f s "
                        "(%d stuck now, %d abandoned since start)", self.camera,
                        session.thread.name if session.thread else "?", session.busy_in,
                        waited, self.stuck_readers(), self.abandoned_readers)
            self.source = self.source.fresh()  # the stuck reader keeps the old one
            if session.busy_in == "open":
                return "error", f"opening {self.source.description} did not return in " \
                                f"{waited:.0f} s"
            return "error", f"no frame for {self.policy.stall_timeout_s:g} s"
        return session.outcome

    # ------------------------------------------------------------ reader

    def _reader(self, session: _Session) -> None:
        src = session.source
        try:
            session.busy_in, session.busy_since = "open", time.monotonic()
            src.open()
            session.busy_since = None
            self._set_state(CameraState.RUNNING, src.description, session)
            session.outcome = self._capture(session)
        except SourceError as e:
            session.outcome = ("error", str(e))
        except Exception as e:  # a bug in one source must not take the daemon down
            if not session.abandoned:
                log.exception("camera %s: capture crashed", self.camera)
            session.outcome = ("crash", f"capture crashed: {type(e).__name__}: {e}")
        finally:
            session.busy_since = None
            try:
                src.close()
            except Exception:
                log.exception("camera %s: closing the source failed", self.camera)
            session.done.set()
            if session.abandoned:
                log.info("camera %s: abandoned reader %s returned after %.1f s and closed "
                         "its source", self.camera, threading.current_thread().name,
                         time.monotonic() - session.abandoned_at)

    def _check(self, img: object, shape: tuple[int, ...] | None) -> str:
        """Why a frame is malformed, or "" if it is fine."""
        if not isinstance(img, np.ndarray):
            return f"frame is {type(img).__name__}, not an image"
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
            return f"malformed frame {img.dtype} {img.shape}, expected HxWx3 uint8"
        if img.shape[0] * img.shape[1] > self.policy.max_pixels:
            return (f"frame {img.shape[1]}x{img.shape[0]} is above max_pixels "
                    f"{self.policy.max_pixels}")
        if shape is not None and img.shape != shape:
            return f"frame size changed from {shape[1]}x{shape[0]} to {img.shape[1]}x{img.shape[0]}"
        return ""

    def _capture(self, session: _Session) -> tuple[str, str]:
        """Read until stopped ("stop"), end of stream ("eos") or too many corrupt frames
        in a row from a live source ("error"). SourceError and crashes propagate."""
        src = session.source
        fps = self.fps or src.default_fps()
        period = 1.0 / fps if (self.pace and fps) else 0.0
        next_t = time.monotonic()
        bad_run = 0
        shape: tuple[int, ...] | None = None  # a live source's frame size, from its first frame
        while not self._stop.is_set():
            if period:
                wait = next_t - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return "stop", ""
                # never try to catch up on a backlog: fall back onto the schedule
                next_t = max(next_t + period, time.monotonic() - period)
            session.busy_in, session.busy_since = "read", time.monotonic()
            try:
                img = src.read()
                problem = "" if img is None else self._check(img, shape)
            except CorruptFrame as e:
                problem = str(e)
            finally:
                session.busy_since = None
            if session.abandoned:
                return "stop", ""
            if problem:
                self.corrupt += 1
                bad_run += 1
                if bad_run == 1 or bad_run == self.policy.max_corrupt_frames:
                    log.warning("camera %s: %s (%d corrupt frames so far)", self.camera,
                                problem, self.corrupt)
                if src.live and bad_run >= self.policy.max_corrupt_frames:
                    return "error", f"{bad_run} bad frames in a row, last: {problem}"
                continue
            if img is None:
                return "eos", getattr(src, "end_detail", "") or "end of stream"
            if bad_run > 1:
                log.info("camera %s: good frames again after %d bad ones", self.camera, bad_run)
            bad_run = 0
            if src.live and shape is None:
                shape = img.shape
            with self._lock:  # a reader abandoned just now must not take a sequence number
                if session.abandoned:
                    return "stop", ""
                seq = self.seq
                self.seq += 1
            session.frames += 1
            frame = Frame(self.camera, seq, img, time.time_ns(), time.monotonic_ns())
            queued = self.handoff.put(frame, timeout=0.2)
            while queued is None and not self._stop.is_set() and not session.abandoned:
                queued = self.handoff.put(frame, timeout=0.2)
            if not queued:
                return "stop", ""
        return "stop", ""
