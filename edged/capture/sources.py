"""Which reader a camera gets: `source_for` (from its config) and `make_source` (from
its resolved type), the one place that maps a kind of source to its reader."""

from __future__ import annotations

import urllib.parse
from typing import Any

import cv2

from edged.capture.base import RestartPolicy, Source, SourceError
from edged.capture.readers.http import HttpSource
from edged.capture.readers.images import ImageFolderSource
from edged.capture.readers.opencv import CaptureSource, gstreamer_available
from edged.capture.readers.synthetic import SyntheticSource
from edged.redaction import Redactor


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
