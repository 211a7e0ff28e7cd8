"""http(s) cameras: MJPEG read by edged itself, other streams handed to FFmpeg."""

from __future__ import annotations

import http.client
import logging

import numpy as np

from edged.capture.base import CorruptFrame, RestartPolicy, SourceError
from edged.capture.readers.mjpeg import BodyPipe, MjpegError, MjpegStream, http_get, mjpeg_stream
from edged.capture.readers.opencv import CaptureSource

log = logging.getLogger("edged.capture.readers.http")


class HttpSource:
    """An http(s) camera, opened with one GET: an MJPEG stream (multipart/x-mixed-replace)
    is read by edged itself, each part bounded (`edged.capture.readers.mjpeg`); any other live
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
