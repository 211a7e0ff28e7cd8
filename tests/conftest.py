from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/unit (fast, in-process) and tests/e2e (the daemon as a subprocess, browsers, DDS,
# RTSP, npm clients, reference implementations) share the helper modules here at tests/,
# and some test modules import helpers from others across the two folders: all three
# folders are importable whichever of them pytest is given.
HERE = Path(__file__).resolve().parent
for _folder in (HERE, HERE / "unit", HERE / "e2e"):
    sys.path.insert(0, str(_folder))

from modelgen import yoeo_model  # noqa: E402

REPO = HERE.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The folder decides the marker, so `-m "not e2e"` and `pytest tests/unit` agree.
    for item in items:
        folder = item.path.parent.name
        if folder in ("unit", "e2e"):
            item.add_marker(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def test_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return yoeo_model(tmp_path_factory.mktemp("models") / "yoeo-test.onnx")


class Daemon:
    """`edged run` as a real subprocess; its log goes to a file the test can read."""

    def __init__(self, config: Path, *args: str, log_path: Path) -> None:
        self.log_path = log_path
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(config),
                                      *args], stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before {text!r}:\n"
                                     f"{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the daemon log within {timeout} s:\n{self.log()}")

    def terminate(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        if code != 0:  # pytest shows captured output of a failing test: leave evidence
            print(f"daemon exited {code} on SIGTERM; its log:\n{self.log()}")
        return code, time.monotonic() - t

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator:
    daemons: list[Daemon] = []

    def start(config: Path, *args: str) -> Daemon:
        d = Daemon(config, *args, log_path=tmp_path / f"daemon{len(daemons)}.log")
        daemons.append(d)
        return d

    yield start
    for d in daemons:
        d.close()


class MjpegServer:
    """An HTTP MJPEG camera on loopback (multipart/x-mixed-replace), serving `frame_fn(i)`.

    `frame_fn(i)` returns an image (JPEG-encoded here) or bytes sent as the part's body
    unchanged (garbage parts for corrupt-frame tests). While `hang` is set the server
    keeps every connection open and sends nothing: a camera that stalls without closing.
    """

    def __init__(self, frame_fn, fps: float = 20.0, port: int = 0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import cv2

        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not server_self.stopped.is_set():
                        if server_self.hang.is_set():
                            time.sleep(0.05)
                            continue
                        part = frame_fn(i)
                        if isinstance(part, bytes):
                            body = part
                        else:
                            body = cv2.imencode(".jpg", part, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                            body = body.tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(body))
                        self.wfile.write(body + b"\r\n")
                        i += 1
                        server_self.served = i
                        time.sleep(1.0 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.stopped = threading.Event()
        self.hang = threading.Event()
        self.served = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg_server() -> Iterator:
    servers: list[MjpegServer] = []

    def start(frame_fn, fps: float = 20.0, port: int = 0) -> MjpegServer:
        s = MjpegServer(frame_fn, fps, port)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


class ZmqCollector:
    """A subscriber on its own thread, keeping every result and end-of-stream (for tests
    that compare another output with the ZeroMQ stream of the same frames)."""

    def __init__(self, endpoint: str) -> None:
        import threading

        from edged.wire.client import Subscriber
        from edged.wire.codec import EndOfStream, Message

        self.msgs: list[Message] = []
        self.eos: list[EndOfStream] = []
        self._stop = threading.Event()

        def run() -> None:
            with Subscriber(endpoint) as sub:
                while not self._stop.is_set():
                    m = sub.recv(timeout=0.1)
                    if isinstance(m, Message):
                        self.msgs.append(m)
                    elif isinstance(m, EndOfStream):
                        self.eos.append(m)

        self._th = threading.Thread(target=run, daemon=True)
        self._th.start()

    @property
    def by_capture(self) -> dict:
        """Results by their `t_capture_ns` (the stamp every output carries)."""
        return {m.t_capture_ns: m for m in self.msgs}

    def stop(self) -> None:
        time.sleep(0.3)  # what is in flight arrives
        self._stop.set()
        self._th.join(5)
