"""Anything OpenCV's VideoCapture opens: video files, V4L2 devices, URLs read by FFmpeg
and GStreamer pipelines, with the process-wide FFmpeg options they need."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.capture.base import CorruptFrame, SourceError

log = logging.getLogger("edged.capture.readers.opencv")

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


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if "GStreamer" in line:
            return "YES" in line
    return False
