"""Camera sources: each captures in its own thread and hands frames to the pipeline.

Hand-over is a `Handoff`: for live sources a latest-frame slot (a new frame replaces an
unprocessed one, which is counted), for files in replay mode a small lossless queue
whose `put` blocks the reader (back-pressure). Nothing here grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edged.results import Frame

log = logging.getLogger("edged.sources")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names the camera and source."""


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

    def open(self) -> None: ...
    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...
    def default_fps(self) -> float | None: ...


class SyntheticSource:
    """The RoboCup scene renderer as a camera (`edged.synth`)."""

    live = True

    def __init__(self, seed: int, width: int, height: int) -> None:
        self.seed, self.width, self.height = seed, width, height
        self.index = 0
        self.description = f"synthetic seed {seed} {width}x{height}"

    def open(self) -> None:
        from edged import synth  # only cameras that use it pay for the import

        self._render = synth.render

    def read(self) -> np.ndarray | None:
        img = self._render(self.seed, self.index, self.width, self.height).image
        self.index += 1
        return img

    def close(self) -> None:
        pass

    def default_fps(self) -> float | None:
        return 15.0


class CaptureSource:
    """Anything OpenCV's VideoCapture opens: files, V4L2 devices, URLs, GStreamer."""

    def __init__(self, target: str | int, backend: int, *, live: bool, loop: bool = False,
                 props: dict[int, float] | None = None, description: str = "") -> None:
        self.target, self.backend, self.live, self.loop = target, backend, live, loop
        self.props = props or {}
        self.description = description or str(target)
        self.cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        if isinstance(self.target, str) and not self.live and not Path(self.target).is_file():
            raise SourceError(f"video file not found: {self.target}")
        # a device that is not plugged in (yet): retried with backoff like any live failure
        if self.backend == cv2.CAP_V4L2 and isinstance(self.target, str) and \
                not os.path.exists(self.target):
            raise SourceError(f"V4L2 device {self.target} does not exist")
        cap = cv2.VideoCapture(self.target, self.backend)
        for prop, value in self.props.items():
            cap.set(prop, value)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.description}")
        self.cap = cap

    def read(self) -> np.ndarray | None:
        assert self.cap is not None
        ok, img = self.cap.read()
        if not ok or img is None:
            if self.live:
                raise SourceError(f"no frame from {self.description}")
            if self.loop and self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                ok, img = self.cap.read()
            if not ok or img is None:
                return None
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return img

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def default_fps(self) -> float | None:
        if self.cap is None:
            return None
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and 0 < fps < 1000 else None


class ImageFolderSource:
    """A folder of images or a glob, in name order."""

    live = False

    def __init__(self, pattern: str, loop: bool) -> None:
        self.pattern, self.loop = pattern, loop
        self.files: list[str] = []
        self.pos = 0
        self.description = f"images {pattern}"

    def open(self) -> None:
        p = Path(self.pattern)
        if p.is_dir():
            files = [str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            files = sorted(glob.glob(self.pattern))
        if not files:
            raise SourceError(f"no images match {self.pattern}")
        self.files = files

    def read(self) -> np.ndarray | None:
        while True:
            if self.pos >= len(self.files):
                if not self.loop:
                    return None
                self.pos = 0
            path = self.files[self.pos]
            self.pos += 1
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is not None:
                return img
            log.warning("skipping unreadable image %s", path)

    def close(self) -> None:
        pass

    def default_fps(self) -> float | None:
        return None


def source_for(cam: Any, *, loop: bool | None = None) -> Source:
    """The reader for a camera's config (`edged.config.CameraConfig`); `loop` overrides."""
    return make_source(cam.resolved_type(), cam.source, width=cam.width, height=cam.height,
                       fps=cam.fps, fourcc=cam.fourcc,
                       loop=cam.loop if loop is None else loop, seed=cam.seed)


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if "GStreamer" in line:
            return "YES" in line
    return False


def make_source(kind: str, source: str, *, width: int | None = None, height: int | None = None,
                fps: float | None = None, fourcc: str | None = None, loop: bool = True,
                seed: int = 0) -> Source:
    """Build the reader for one camera from its resolved type."""
    if kind == "synthetic":
        return SyntheticSource(seed, width or 640, height or 480)
    if kind == "video":
        return CaptureSource(source, cv2.CAP_ANY, live=False, loop=loop,
                             description=f"video {source}")
    if kind == "images":
        return ImageFolderSource(source, loop)
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
                             description=f"V4L2 {source}")
    if kind == "url":
        return CaptureSource(source, cv2.CAP_FFMPEG, live=True,
                             props={cv2.CAP_PROP_BUFFERSIZE: 1}, description=redact(source))
    if kind == "gstreamer":
        if not gstreamer_available():
            raise SourceError("this OpenCV build has no GStreamer support; install an OpenCV "
                              "built with GStreamer (e.g. the distribution's python3-opencv)")
        return CaptureSource(source, cv2.CAP_GSTREAMER, live=True, description="GStreamer pipeline")
    raise SourceError(f"unknown source type {kind!r}")


def redact(url: str) -> str:
    """A URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class CaptureThread:
    """Runs one source in its own thread: paces, stamps and hands over frames.

    Live sources that fail are reopened with exponential backoff (capped), logging once
    per state change rather than once per attempt. Files end the stream (or loop).
    """

    def __init__(self, camera: str, source: Source, handoff: Handoff, *, fps: float | None,
                 pace: bool, backoff: tuple[float, float] = (0.5, 30.0),
                 on_state: Callable[[str, str, str], None] | None = None) -> None:
        self.camera, self.source, self.handoff = camera, source, handoff
        self.fps, self.pace = fps, pace
        self.backoff = backoff
        self.on_state = on_state  # (camera, state, detail), called from the capture thread
        self.seq = 0
        self.state = "starting"
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self.state = state
            msg = f"camera {self.camera}: {state}" + (f" ({detail})" if detail else "")
            (log.warning if state in ("reconnecting", "failed") else log.info)(msg)
            if self.on_state is not None:
                self.on_state(self.camera, state, detail)

    def _run(self) -> None:
        delay = self.backoff[0]
        try:
            while not self._stop.is_set():
                try:
                    self.source.open()
                except SourceError as e:
                    self.error = str(e)
                    if not self.source.live:
                        self._set_state("failed", str(e))
                        return
                    self._set_state("reconnecting",
                                    f"{e}; retrying every <= {self.backoff[1]:.0f} s")
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.backoff[1])
                    continue
                delay = self.backoff[0]
                self._set_state("running", self.source.description)
                ended = self._capture()
                self.source.close()
                if ended:
                    self._set_state("stopped", "end of stream")
                    return
        except Exception as e:  # a bug in one source must not take the daemon down
            log.exception("camera %s: capture thread crashed", self.camera)
            self.error = f"capture crashed: {e}"
            self._set_state("failed", self.error)
        finally:
            self.source.close()
            self.handoff.close()
            if self.state not in ("failed", "stopped"):
                self._set_state("stopped")

    def _capture(self) -> bool:
        """Read until stopped (False: stop or reconnect) or end of stream (True)."""
        fps = self.fps or self.source.default_fps()
        period = 1.0 / fps if (self.pace and fps) else 0.0
        next_t = time.monotonic()
        while not self._stop.is_set():
            if period:
                wait = next_t - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return False
                # never try to catch up on a backlog: fall back onto the schedule
                next_t = max(next_t + period, time.monotonic() - period)
            try:
                img = self.source.read()
            except SourceError as e:
                self.error = str(e)
                self._set_state("reconnecting", str(e))
                return False
            if img is None:
                return True
            frame = Frame(self.camera, self.seq, img, time.time_ns(), time.monotonic_ns())
            self.seq += 1
            queued = self.handoff.put(frame, timeout=0.2)
            while queued is None and not self._stop.is_set():
                queued = self.handoff.put(frame, timeout=0.2)
            if not queued:
                return False
        return False
