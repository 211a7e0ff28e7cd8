"""edged's own HTTP MJPEG reader: parts split as cameras send them, every part bounded,
and anything that is not MJPEG left to FFmpeg. Real HTTP servers on loopback."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_capture import Recorder, start
from test_daemon import write_video

from edged.capture.base import RestartPolicy
from edged.capture.readers.http import HttpSource
from edged.capture.readers.mjpeg import (
    MjpegError,
    PartReader,
    max_part_bytes,
    multipart_boundary,
)
from edged.capture.sources import make_source


def jpeg(w: int, h: int, value: int = 90) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))[1].tobytes()


def reader(data: bytes, boundary: bytes = b"frame", max_part: int = 1 << 20) -> PartReader:
    return PartReader(io.BufferedReader(io.BytesIO(data)), boundary, max_part)  # type: ignore[arg-type]


def parts(r: PartReader) -> list[bytes]:
    out = []
    while (p := r.next_part()) is not None:
        out.append(p)
    return out


def test_parts_with_and_without_content_length():
    a, b, c = b"\xff\xd8first\xff\xd9", b"\xff\xd8second\r\n--not-ours\xff\xd9", b"x" * 70000
    stream = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(a)
              + a + b"\r\n"
              # without a length the part runs to the next boundary; bytes that only look
              # like a boundary do not end it
              + b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + b + b"\r\n"
              # no headers at all, longer than one read
              + b"--frame\r\n\r\n" + c + b"\r\n"
              + b"--frame--\r\n")
    assert parts(reader(stream)) == [a, b, c]


def test_a_boundary_declared_with_its_dashes_and_a_preamble():
    # Content-Type: ...; boundary=--myboundary, and parts delimited by "--myboundary"
    # (common in IP cameras), after some bytes before the first boundary
    body = b"\xff\xd8data\xff\xd9"
    stream = b"preamble\r\n" + 2 * (b"--myboundary\nContent-Length: %d\n\n" % len(body)
                                    + body + b"\n")
    assert multipart_boundary("multipart/x-mixed-replace;boundary=--myboundary") == \
        b"--myboundary"
    assert parts(reader(stream, b"--myboundary")) == [body, body]
    assert multipart_boundary('Multipart/X-Mixed-Replace; boundary="frame"') == b"frame"
    assert multipart_boundary("video/mp4") is None
    assert multipart_boundary("multipart/x-mixed-replace") is None


def test_a_part_without_a_boundary_is_bounded():
    stream = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + b"\0" * (3 << 20)
    r = reader(stream, max_part=1 << 20)
    with pytest.raises(MjpegError, match=r"ran over 1048576 bytes without a boundary"):
        r.next_part()
    # what it held when it gave up: the part so far, at most one read beyond the limit
    assert len(r._buf) <= (1 << 20) + 64 * 1024 + 16


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    stream = b"--frame\r\nContent-Length: 9999999999\r\n\r\n" + b"\0" * 100
    with pytest.raises(MjpegError, match=r"declares 9999999999 bytes, over the 1048576"):
        reader(stream).next_part()
    with pytest.raises(MjpegError, match=r"bad Content-Length b'12x'"):
        reader(b"--frame\r\nContent-Length: 12x\r\n\r\n").next_part()
    with pytest.raises(MjpegError, match=r"headers over 8192 bytes"):
        reader(b"--frame\r\nX: " + b"a" * 20000).next_part()


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], str]]:
    servers: list[_Server] = []

    def run(body: Callable[[BaseHTTPRequestHandler], None]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    body(self)

            def log_message(self, *args: object) -> None:
                pass

        s = _Server(Handler)
        servers.append(s)
        return f"http://127.0.0.1:{s.port}/video"

    yield run
    for s in servers:
        s.close()


def mjpeg_head(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
    h.end_headers()


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_an_endless_part_costs_a_reconnect_not_the_memory(serve):
    # a camera that sends one part's header and then bytes without end: through FFmpeg
    # this grew the daemon by gigabytes; here the camera reconnects, and memory stays
    sent = []

    def endless(h: BaseHTTPRequestHandler) -> None:
        mjpeg_head(h)
        h.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8")
        chunk = b"\x11" * (1 << 20)
        for _ in range(200):
            h.wfile.write(chunk)
            sent.append(len(chunk))

    url = serve(endless)
    policy = RestartPolicy(max_pixels=640 * 480)
    rec = Recorder()
    before = rss_kib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # the peak while the camera reads, not only the end
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_kib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    cap = start(rec, make_source("url", url, policy=policy), policy)
    try:
        rec.wait(lambda: any(s == "reconnecting" for s, _ in rec.states))
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
        done.set()
        sampler.join()
    detail = next(d for s, d in rec.states if s == "reconnecting")
    assert f"an MJPEG part ran over {max_part_bytes(640 * 480)} bytes without a boundary" \
        in detail, detail
    assert peak[0] - before < 50 * 1024, (before, peak)


def test_parts_over_max_pixels_are_skipped_before_decoding(serve):
    small, huge = jpeg(64, 48), jpeg(2000, 1000)

    def camera(h: BaseHTTPRequestHandler) -> None:
        mjpeg_head(h)
        for i in range(400):
            body = huge if i % 2 else small
            h.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                          % len(body) + body + b"\r\n")
            h.wfile.flush()
            threading.Event().wait(0.01)

    url = serve(camera)
    policy = RestartPolicy(max_pixels=1000 * 1000)
    rec = Recorder()
    cap = start(rec, make_source("url", url, policy=policy), policy)
    try:
        rec.wait(lambda: len(rec.frames) >= 10)
        assert cap.corrupt >= 5 and cap.reconnects == 0
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    assert {f.image.shape for f in rec.frames} == {(48, 64, 3)}


def test_basic_auth_from_the_url(serve):
    seen = []

    def camera(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("Authorization"))
        mjpeg_head(h)
        body = jpeg(32, 24)
        for _ in range(100):
            h.wfile.write(b"--frame\r\nContent-Length: %d\r\n\r\n" % len(body) + body + b"\r\n")
            threading.Event().wait(0.01)

    url = serve(camera).replace("http://", "http://viewer:S3cret%21@")
    src = make_source("url", url)
    assert isinstance(src, HttpSource) and "S3cret" not in src.description
    src.open()
    try:
        assert src.read().shape == (24, 32, 3) and src.via == "edged"
    finally:
        src.close()
    assert seen == ["Basic dmlld2VyOlMzY3JldCE="]  # base64 of "viewer:S3cret!"


def test_a_video_over_http_is_left_to_ffmpeg(tmp_path: Path):
    write_video(tmp_path / "clip.avi", 10, (160, 120))

    class Files(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(Files)
    try:
        src = make_source("url", f"http://127.0.0.1:{server.port}/clip.avi")
        src.open()
        try:
            assert src.via == "ffmpeg"
            img = src.read()
            assert img is not None and img.shape == (120, 160, 3)
        finally:
            src.close()
    finally:
        server.close()


# ---------------------------------------------------------------- issue 29, case 8


def write_ts_clip(path: Path, frames: int = 30, size: tuple[int, int] = (160, 120),
                  fps: float = 15.0) -> Path:
    """An MPEG-TS clip (MPEG-2 video) of the painted test scene, shifted frame by frame."""
    from modelgen import painted_frame

    w, h = size
    img, _ = painted_frame(w, h)
    vw = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*"MPEG"), fps,
                         (w, h))
    assert vw.isOpened()
    for i in range(frames):
        vw.write(np.ascontiguousarray(np.roll(img, (i * 8) % w, axis=1)))
    vw.release()
    return path


class OneClientServer:
    """An HTTP camera that serves one client, as `ffmpeg -listen 1` and many cameras'
    single-client mode do: the first connection gets an endless MPEG-TS stream (chunked,
    the headers `ffmpeg -listen 1` sends), and the listening socket is closed as soon as
    it is taken, so a second connection is refused."""

    def __init__(self, clip: bytes, seconds: float) -> None:
        import socket

        self.clip, self.rate = clip, len(clip) / seconds  # bytes per second: real time
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/live.ts"
        self.requests: list[bytes] = []
        self.sent = 0
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.listener.close()  # one client: nobody else gets in
        with conn, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            self.requests.append(head.split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            step = 4096
            t0 = time.monotonic()
            while not self.stopped.is_set():
                for i in range(0, len(self.clip), step):
                    chunk = self.clip[i:i + step]
                    conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    self.sent += len(chunk)
                    ahead = self.sent / self.rate - (time.monotonic() - t0)
                    if ahead > 0 and self.stopped.wait(ahead):
                        return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self._thread.join(5)


def _published(tmp_path: Path, model: Path, endpoint: str, url: str, start_daemon,
               frames: int) -> tuple[list, str]:
    """Run the daemon on camera `url` until it publishes `frames` results (60 s at most)."""
    from test_daemon import write_config
    from test_reload import count, gather

    from edged.wire.client import Subscriber

    cfg = write_config(tmp_path / "cfg.yaml", model, [endpoint], f"""\
  cam:
    source: {url}
    stall_timeout_s: 3""")
    with Subscriber(endpoint) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=count("cam", frames), limit=60)
        code, _ = d.terminate()
    assert code == 0, d.log()
    return msgs, d.log()


def test_case8_a_single_client_http_camera_is_opened_once(tmp_path, test_model, tcp_endpoint,
                                                          start_daemon):
    # Before: edged GET the URL to look for MJPEG, closed that connection and let FFmpeg
    # connect again; this camera had already given its one connection away, so the camera
    # said `cannot open` forever.
    from edged.wire.codec import Message

    clip = write_ts_clip(tmp_path / "clip.ts").read_bytes()
    server = OneClientServer(clip, seconds=2.0)
    try:
        msgs, log = _published(tmp_path, test_model, tcp_endpoint, server.url, start_daemon, 10)
    finally:
        server.close()
    results = [m for m in msgs if isinstance(m, Message) and m.camera == "cam"]
    assert len(results) >= 10, log
    assert {(m.frame_w, m.frame_h) for m in results} == {(160, 120)}
    assert server.requests == [b"GET /live.ts HTTP/1.1"]  # the one connection, one request
    assert "camera cam: running" in log and "cannot open" not in log, log
    assert "Traceback" not in log


def test_case8_ffmpeg_listen_1_is_read_by_the_daemon(tmp_path, test_model, tcp_endpoint,
                                                     start_daemon):
    # the case as reported: `ffmpeg -listen 1` serves exactly one client, then exits
    import subprocess

    from conftest import free_port
    from rtsp_server import missing_ffmpeg, require_or_skip

    from edged.wire.codec import Message

    require_or_skip(missing_ffmpeg())
    clip = write_ts_clip(tmp_path / "clip.ts")
    url = f"http://127.0.0.1:{free_port()}/live.ts"
    ffmpeg = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
                               "-i", str(clip), "-c", "copy", "-f", "mpegts", "-listen", "1",
                               url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        msgs, log = _published(tmp_path, test_model, tcp_endpoint, url, start_daemon, 10)
    finally:
        ffmpeg.kill()
        ffmpeg.wait()
    assert len([m for m in msgs if isinstance(m, Message) and m.camera == "cam"]) >= 10, log
    assert "cannot open" not in log and "Traceback" not in log, log


def test_a_piped_stream_that_hangs_is_reopened_and_its_reader_returns(serve, tmp_path: Path):
    # FFmpeg's read of the pipe cannot time out by itself: edged's copy thread gives up on
    # the silent connection, closes the pipe, and the abandoned reader returns
    clip = write_ts_clip(tmp_path / "clip.ts").read_bytes()
    hang = threading.Event()
    served = []

    def camera(h: BaseHTTPRequestHandler) -> None:
        served.append(h.path)
        h.send_response(200)  # HTTP/1.0, no length: the body runs until the connection ends
        h.send_header("Content-Type", "video/mp2t")
        h.end_headers()
        for _ in range(100):
            for i in range(0, len(clip), 4096):
                while hang.is_set():
                    time.sleep(0.05)
                h.wfile.write(clip[i:i + 4096])
                time.sleep(4096 / len(clip) * 2.0)  # the 2 s clip in real time

    url = serve(camera)
    policy = RestartPolicy(stall_timeout_s=1.0)
    rec = Recorder(lossless=False)
    cap = start(rec, make_source("url", url, policy=policy), policy)
    try:
        rec.wait(lambda: len(rec.frames) >= 5)
        hang.set()
        rec.wait(lambda: any(s == "reconnecting" for s, _ in rec.states))
        hang.clear()
        n = len(rec.frames)
        rec.wait(lambda: len(rec.frames) >= n + 5 and cap.stuck_readers() == 0)
        assert cap.source.via == "ffmpeg-pipe"  # type: ignore[attr-defined]
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    assert next(d for s, d in rec.states if s == "reconnecting").startswith("no frame for 1 s")
    assert cap.abandoned_readers >= 1 and cap.stuck_readers() == 0
    assert len(served) >= 2
