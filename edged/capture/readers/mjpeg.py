"""HTTP MJPEG cameras (multipart/x-mixed-replace) read by edged itself, every part bounded.

Most IP cameras, ESP32 boards and `mjpg-streamer` serve MJPEG this way. Through FFmpeg a
part without a boundary grew the daemon by gigabytes, and nothing bounded a part's size.
Here each part is at most `max_part_bytes` (from the camera's `max_pixels`), its JPEG
header is checked against `max_pixels` before it is decoded, and a part that breaks the
bound drops the connection (the capture thread reconnects with its backoff).

`HttpSource` sends one GET; a 200 answer of type multipart/x-mixed-replace is read here.
Any other live stream (MPEG-TS, FLV, raw H.264 ...: a 200 without a length) goes to FFmpeg
on that same connection (`BodyPipe`): a camera that serves one client at a time is opened
once. What FFmpeg must request itself (a 401 for digest auth, a redirect, a file with a
length it may seek in, an HLS playlist) is closed and its URL handed to FFmpeg.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import logging
import os
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np

log = logging.getLogger("edged.capture.readers.mjpeg")

CHUNK = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024  # one part's headers (Content-Type, Content-Length, ...)


def max_part_bytes(max_pixels: int) -> int:
    """The largest MJPEG part accepted for a camera: 3 bytes per allowed pixel (a JPEG at
    quality 100 stays under it) plus 1 MiB of headroom for markers and metadata."""
    return 3 * max_pixels + (1 << 20)


class MjpegError(Exception):
    """The stream broke its bounds or its format: the connection is given up."""


class _Body(Protocol):
    def read1(self, n: int = ...) -> bytes: ...


class PartReader:
    """The bodies of a multipart stream, one at a time, from an HTTP response body.

    Memory is bounded by `max_part` plus one chunk: a part longer than that, a
    Content-Length above it, or headers over MAX_HEADER_BYTES raise MjpegError.
    """

    def __init__(self, body: _Body, boundary: bytes, max_part: int) -> None:
        self._body = body
        # servers differ in whether the declared boundary already has the leading "--"
        self._delim = boundary if boundary.startswith(b"--") else b"--" + boundary
        self._alt = b"--" + boundary  # "--" + "--frame" when the declaration had them
        self.max_part = max_part
        self._buf = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._body.read1(CHUNK)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _find_delim(self, start: int) -> tuple[int, int]:
        """(position, length) of the next boundary line at or after `start`, or (-1, 0)."""
        while True:
            i = self._buf.find(self._delim, start)
            j = self._buf.find(self._alt, start) if self._alt != self._delim else -1
            if j >= 0 and (i < 0 or j <= i):
                return j, len(self._alt)
            if i >= 0:
                return i, len(self._delim)
            if len(self._buf) - start > self.max_part + len(self._alt):
                raise MjpegError(f"an MJPEG part ran over {self.max_part} bytes without a "
                                 "boundary")
            if not self._fill():
                return -1, 0

    def next_part(self) -> bytes | None:
        """The next part's body; None at the end of the stream."""
        pos, n = self._find_delim(0)
        if pos < 0:
            return None
        del self._buf[:pos + n]
        # the rest of the boundary line ("--" there: the closing boundary)
        while (eol := self._buf.find(b"\n")) < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MjpegError(f"an MJPEG boundary line over {MAX_HEADER_BYTES} bytes")
            if not self._fill():
                return None
        if self._buf[:eol].strip().startswith(b"--"):
            return None
        del self._buf[:eol + 1]
        # the part's headers, up to a blank line (which may come first: no headers)
        while True:
            if self._buf.startswith((b"\r\n", b"\n")):
                head, skip = b"", (2 if self._buf.startswith(b"\r\n") else 1)
                break
            m = re.search(rb"\r?\n\r?\n", self._buf)
            if m is not None:
                head, skip = bytes(self._buf[:m.start()]), m.end()
                break
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MjpegError(f"MJPEG part headers over {MAX_HEADER_BYTES} bytes")
            if not self._fill():
                return None
        del self._buf[:skip]
        length = _content_length(head)
        if length is not None:
            if length > self.max_part:
                raise MjpegError(f"an MJPEG part declares {length} bytes, over the "
                                 f"{self.max_part} allowed (cameras.NAME.max_pixels)")
            while len(self._buf) < length:
                if not self._fill():
                    return None
            body = bytes(self._buf[:length])
            del self._buf[:length]
            return body
        end, _ = self._find_delim(0)
        if end < 0:  # the stream ended inside this part: it is incomplete
            return None
        body = bytes(self._buf[:end]).rstrip(b"\r\n")
        del self._buf[:end]
        return body


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                raise MjpegError(f"an MJPEG part has a bad Content-Length "
                                 f"{value.strip()[:40]!r}") from None
    return None


def jpeg_size(f: Any) -> tuple[int, int] | None:
    """(width, height) from the frame header of the JPEG in binary file `f`, without
    decoding it; None if it is not a readable JPEG header."""
    f.seek(0)
    if f.read(2) != b"\xff\xd8":
        return None
    for _ in range(1000):  # a bounded walk: a malformed header is left to the decoder
        b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        seg = f.read(2)
        if len(seg) < 2:
            return None
        length = int.from_bytes(seg, "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            head = f.read(5)
            if len(head) < 5:
                return None
            return int.from_bytes(head[3:5], "big"), int.from_bytes(head[1:3], "big")
        f.seek(length - 2, 1)
    return None


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a multipart/x-mixed-replace Content-Type, None for other types."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        return None
    m = re.search(r'boundary\s*=\s*"?([^";]+)"?', params, re.IGNORECASE)
    # no boundary parameter: many cameras still write "--boundarydonotcross" or similar;
    # without the name the parts cannot be split safely
    return m.group(1).strip().encode() if m else None


class MjpegStream:
    """One open HTTP MJPEG connection: `read()` gives decoded BGR frames."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 boundary: bytes, max_pixels: int, description: str) -> None:
        self._conn, self._response = conn, response
        self.max_pixels = max_pixels
        self.description = description
        self._parts = PartReader(response, boundary, max_part_bytes(max_pixels))

    def read(self, corrupt: Callable[[str], Exception]) -> np.ndarray | None:
        """The next frame; None at the end of the stream. A part that is not a decodable
        JPEG, or one over max_pixels, raises `corrupt(reason)` (the capture thread counts
        it and goes on); a stream that breaks its bounds raises MjpegError."""
        try:
            part = self._parts.next_part()
        except (OSError, http.client.HTTPException) as e:
            raise MjpegError(f"{self.description}: {e or type(e).__name__}") from e
        if part is None:
            return None
        size = jpeg_size(io.BytesIO(part))
        if size is not None and size[0] * size[1] > self.max_pixels:
            raise corrupt(f"an MJPEG part of {size[0]}x{size[1]} from {self.description} "
                          f"is over max_pixels {self.max_pixels}")
        img = cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise corrupt(f"an undecodable MJPEG part ({len(part)} bytes) from "
                          f"{self.description}")
        return img

    def close(self) -> None:
        self._response.close()
        self._conn.close()


class HttpAnswer:
    """One GET's connection and its answer's status and headers, body not read yet."""

    def __init__(self, conn: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        self.conn, self.response = conn, response
        self.status = response.status
        self.content_type = response.getheader("Content-Type", "") or ""

    def set_timeout(self, seconds: float) -> None:
        sock: Any = self.conn.sock
        if isinstance(sock, socket.socket):
            sock.settimeout(seconds)

    def live_stream(self) -> bool:
        """A 200 whose body has no end announced (chunked or until the connection closes):
        a live stream FFmpeg can read from this connection. Not a playlist: HLS segments
        are separate requests FFmpeg makes itself from the playlist's URL."""
        kind = self.content_type.partition(";")[0].strip().lower()
        return (self.status == 200 and self.response.getheader("Content-Length") is None
                and "mpegurl" not in kind)

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def http_get(url: str, *, open_timeout_s: float) -> HttpAnswer:
    """GET `url` (basic auth from its userinfo, as FFmpeg does); connection failures raise
    OSError or http.client.HTTPException."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    headers = {"User-Agent": "edged", "Accept": "multipart/x-mixed-replace, */*"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        cred = f"{user}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=open_timeout_s,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=open_timeout_s)
    try:
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
    except BaseException:
        conn.close()
        raise
    return HttpAnswer(conn, response)


def mjpeg_stream(answer: HttpAnswer, *, read_timeout_s: float, max_pixels: int,
                 description: str) -> MjpegStream | None:
    """An MjpegStream on `answer` if it is a 200 multipart/x-mixed-replace stream, else
    None (the answer is left open for the caller)."""
    boundary = multipart_boundary(answer.content_type)
    if answer.status != 200 or boundary is None:
        return None
    answer.set_timeout(read_timeout_s)
    return MjpegStream(answer.conn, answer.response, boundary, max_pixels, description)


class BodyPipe:
    """The body of an answer already received, fed to FFmpeg through a pipe (`self.url`
    is `pipe:FD`, FFmpeg's pipe protocol): FFmpeg reads the connection edged opened.

    A thread copies the (de-chunked) body into the pipe; a full pipe blocks it, so the
    camera is read no faster than FFmpeg reads, as on FFmpeg's own connection. FFmpeg's
    pipe reads cannot time out, so the thread's socket timeout does it: no data for
    `read_timeout_s` (or the connection's end) closes the pipe's write end, and FFmpeg's
    read returns (end of stream). `close()` only after FFmpeg has released the capture:
    the read end's fd number must not be reused while FFmpeg may still read it.
    """

    def __init__(self, answer: HttpAnswer, *, read_timeout_s: float, description: str) -> None:
        self._answer = answer
        self.description = description
        self._read_fd, self._write_fd = os.pipe()
        self.url = f"pipe:{self._read_fd}"
        self.ended = ""  # why the copy stopped, once it has
        self._closing = False
        answer.set_timeout(read_timeout_s)
        self._thread = threading.Thread(target=self._copy, daemon=True,
                                        name=f"http-pipe-{self._read_fd}")
        self._thread.start()

    def _copy(self) -> None:
        try:
            while not self._closing:
                data = self._answer.response.read1(CHUNK)
                if not data:
                    self.ended = "the server ended the stream"
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(self._write_fd, view):]
        except (OSError, ValueError, http.client.HTTPException) as e:
            # a timeout, a reset, or close() pulling the connection from under it
            self.ended = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        finally:
            os.close(self._write_fd)  # FFmpeg's read sees the end of the stream
            if not self._closing:
                log.debug("%s: %s", self.description, self.ended)

    def close(self) -> None:
        self._closing = True
        sock: Any = self._answer.conn.sock
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # wakes the copy thread out of its recv
                sock.shutdown(socket.SHUT_RDWR)
        # a copy blocked writing to the full pipe gets EPIPE once the read end is closed
        os.close(self._read_fd)
        self._thread.join(5.0)
        self._answer.close()
