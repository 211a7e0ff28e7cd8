"""Issue 29, case 9: RTSP cameras, served by a real RTSP server (GStreamer's gst-rtsp-server,
`tests/rtsp_server.py`, a process of its own) on loopback and read by the real daemon: the
URL forms of common cameras with digest auth, steady reading at the server's rate, the
server restarting (reconnect with back-off), a stall that keeps the session open, and
RTP over TCP or UDP (`rtsp_transport`).

Without the server's packages these tests skip; with EDGED_REQUIRE_RTSP=1 (.ci/run) they
fail instead.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rtsp_server import CAMERA_PATHS, TCP_ONLY, UDP_ONLY, RtspServer, missing, require_or_skip
from rtsp_server import write_clip as write_jpeg_clip
from test_daemon import write_config
from test_reload import gather

from edged.wire.client import Subscriber
from edged.wire.codec import Message
from edged.wire.telemetry import CameraState

FPS = 15
USER, PASSWORD = "viewer", "p@ss:w0rd"  # '@' and ':' must be percent-encoded in a URL
URL_PASSWORD = "p%40ss%3Aw0rd"

_missing: list[str] = []


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator:
    if not _missing:
        _missing.append(missing())  # probed once per session: it starts a python
    require_or_skip(_missing[0])
    clip = write_jpeg_clip(tmp_path / "clip")
    servers: list[RtspServer] = []

    def start(**kw: object) -> RtspServer:
        s = RtspServer(clip, fps=FPS, **kw)  # type: ignore[arg-type]
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def results(msgs: list, camera: str) -> list[Message]:
    return [m for m in msgs if isinstance(m, Message) and m.camera == camera]


def states(msgs: list, camera: str) -> list[tuple[str, str]]:
    return [(m.state, m.detail) for m in msgs if isinstance(m, CameraState) and m.camera == camera]


def has_state(camera: str, state: str):
    return lambda ms: any(s == state for s, _ in states(ms, camera))


def camera_yaml(name: str, url: str, *settings: str) -> str:
    extra = "".join(f"\n    {s}" for s in settings)
    return f"  {name}:\n    source: \"{url}\"{extra}"


def test_case9_camera_url_forms_with_digest_auth_read_steadily(tmp_path, test_model,
                                                               tcp_endpoint, start_daemon,
                                                               rtsp):
    server = rtsp(user=USER, password=PASSWORD)
    cams = "\n".join(camera_yaml(name, server.url(path, password=URL_PASSWORD))
                     for name, path in CAMERA_PATHS.items())
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams)

    def steady(ms: list) -> bool:
        # every camera publishes; the first one over 4 s of capture after the first 2 s
        # (FFmpeg's probe reads about 2 s ahead and hands those frames out at once)
        if not all(results(ms, c) for c in CAMERA_PATHS):
            return False
        first = results(ms, "hikvision")
        return first[-1].t_capture_ns - first[0].t_capture_ns > 6e9

    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=steady, limit=50)
        code, _ = d.terminate()
    log = d.log()
    assert code == 0, log
    for name in CAMERA_PATHS:
        got = results(msgs, name)
        assert got, (name, log)
        assert {(m.frame_w, m.frame_h) for m in got} == {(320, 240)}
    # frames captured per second (sequence numbers count every frame read, also those
    # inference skipped) match the server's rate
    first = results(msgs, "hikvision")
    late = [m for m in first if m.t_capture_ns > first[0].t_capture_ns + 2e9]
    rate = (late[-1].seq - late[0].seq) / ((late[-1].t_capture_ns - late[0].t_capture_ns) / 1e9)
    assert 0.6 * FPS < rate < 1.4 * FPS, rate
    # each camera's own path reached the server, the Dahua query string stripped by it
    assert {p for p, _ in server.setups()} >= {
        p.split("?")[0] + "/stream=0" for p in CAMERA_PATHS.values()}
    assert PASSWORD not in log and URL_PASSWORD not in log and "p@ss" not in log
    assert "Traceback" not in log and "reconnecting" not in log, log


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_case9_server_restart_reconnects_with_backoff(tmp_path, test_model, tcp_endpoint,
                                                      start_daemon, rtsp, transport):
    server = rtsp()
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint],
                       camera_yaml("cam", server.url("/clip"), "stall_timeout_s: 2",
                                   f"rtsp_transport: {transport}"))
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=lambda ms: len(results(ms, "cam")) >= 5, limit=40)
        server.stop()  # the camera reboots: gone at once
        # while it boots, its port answers and hangs up: each reopen is seen and timed
        attempts: list[float] = []
        booting = socket.create_server(("127.0.0.1", server.port))

        def answer() -> None:
            with booting:
                while True:
                    try:
                        conn, _ = booting.accept()
                    except OSError:
                        return
                    attempts.append(time.monotonic())
                    conn.close()
                    if len(attempts) >= 3:
                        return

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        n = len(msgs)
        msgs += gather(sub, 0, until=has_state("cam", "reconnecting"), limit=30)
        t.join(40)
        assert len(attempts) >= 3, (attempts, d.log())
        server.start()  # the camera is back
        n = len(msgs)
        msgs += gather(sub, 0, until=lambda ms: has_state("cam", "running")(ms)
                       and len(results(ms, "cam")) >= 5, limit=40)
        code, _ = d.terminate()
    log = d.log()
    assert code == 0, log
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    # back-off: 0.5 s doubling to 30 s (a gap also holds the failed open's own time)
    assert gaps[0] >= 0.4 and all(b > 1.5 * a for a, b in zip(gaps, gaps[1:],
                                                               strict=False)), gaps
    seq = [s for s, _ in states(msgs, "cam")]
    assert seq[:1] == ["running"] and "reconnecting" in seq and seq[-1] == "running", seq
    detail = next(d_ for s, d_ in states(msgs, "cam") if s == "reconnecting")
    # over UDP too: the RTSP connection closing (or the ICMP answers) fail reads at once
    assert detail.startswith("10 bad frames in a row, last: no frame from rtsp://") and \
        detail.endswith("retrying every <= 30 s"), detail
    assert "camera cam: reconnecting" in log and log.count("camera cam: running") >= 2, log
    after = results(msgs[n:], "cam")
    assert after and min(m.seq for m in after) > max(m.seq for m in results(msgs[:n], "cam"))
    assert "Traceback" not in log


def test_case9_a_stalled_session_is_detected_and_reopened(tmp_path, test_model, tcp_endpoint,
                                                          start_daemon, rtsp):
    server = rtsp()
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint],
                       camera_yaml("cam", server.url("/clip"), "stall_timeout_s: 2"))
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=lambda ms: len(results(ms, "cam")) >= 5, limit=40)
        server.command("stall")  # the session stays open, RTP stops
        t_stall = time.monotonic()
        n = len(msgs)
        msgs += gather(sub, 0, until=has_state("cam", "reconnecting"), limit=30)
        took = time.monotonic() - t_stall
        server.command("resume")
        n2 = len(msgs)
        msgs += gather(sub, 0, until=lambda ms: has_state("cam", "running")(ms)
                       and len(results(ms, "cam")) >= 5, limit=45)
        code, _ = d.terminate()
    log = d.log()
    assert code == 0, log
    detail = next(d_ for s, d_ in states(msgs[n:], "cam") if s == "reconnecting")
    assert detail.startswith("no frame for 2 s"), detail
    # the stall is told within its timeout, plus frames FFmpeg had buffered and a
    # loaded machine's slack
    assert took < 2 + 4, took
    assert "reader thread capture-cam-1 abandoned, blocked in read" in log, log
    assert results(msgs[n2:], "cam"), log
    assert "Traceback" not in log


def test_case9_rtp_over_tcp_or_udp_as_configured(tmp_path, test_model, tcp_endpoint,
                                                 start_daemon, rtsp):
    server = rtsp()
    cams = "\n".join([
        camera_yaml("tcp", server.url(TCP_ONLY), "rtsp_transport: tcp"),
        camera_yaml("udp", server.url(UDP_ONLY), "rtsp_transport: udp"),
        # UDP asked of a camera that only does TCP: never opens (the option is obeyed)
        camera_yaml("wrong", server.url(TCP_ONLY), "rtsp_transport: udp"),
    ])
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams)
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=lambda ms: len(results(ms, "tcp")) >= 5
                      and len(results(ms, "udp")) >= 5 and has_state("wrong", "reconnecting")(ms),
                      limit=45)
        code, _ = d.terminate()
    log = d.log()
    assert code == 0, log
    assert len(results(msgs, "tcp")) >= 5 and len(results(msgs, "udp")) >= 5, log
    assert not results(msgs, "wrong")
    detail = next(d_ for s, d_ in states(msgs, "wrong") if s == "reconnecting")
    assert detail.startswith(f"cannot open {server.url(TCP_ONLY)}"), detail
    setups = server.setups()
    # with the default (auto) FFmpeg asks for TCP first: on the UDP-only path it never did
    assert (UDP_ONLY + "/stream=0", "udp") in setups and \
        (UDP_ONLY + "/stream=0", "tcp") not in setups, setups
    assert (TCP_ONLY + "/stream=0", "tcp") in setups, setups
    assert (TCP_ONLY + "/stream=0", "udp") in setups  # "wrong" asked, and was refused
    assert "Traceback" not in log


def test_rtsp_transport_config(tmp_path, test_model):
    # in camera_defaults it may reach cameras that are not RTSP: they ignore it; a bad
    # value is one located line
    def check(cams: str) -> subprocess.CompletedProcess[str]:
        cfg = write_config(tmp_path / "cfg.yaml", test_model, ["tcp://127.0.0.1:1"], cams,
                           extra="camera_defaults:\n  rtsp_transport: udp\n")
        return subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(cfg)],
                              capture_output=True, text=True, timeout=60)

    ok = check(camera_yaml("usb", "synthetic") + "\n"
               + camera_yaml("gate", "rtsp://127.0.0.1:1/stream1", "rtsp_transport: tcp"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = check(camera_yaml("gate", "rtsp://127.0.0.1:1/stream1", "rtsp_transport: quic"))
    assert bad.returncode == 1
    assert re.search(r"cfg\.yaml:\d+: cameras\.gate\.rtsp_transport: Input should be 'auto', "
                     r"'tcp' or 'udp' \(got 'quic'\)", bad.stderr), bad.stderr
    assert "Traceback" not in bad.stderr


def test_rtsp_transport_keeps_the_operators_own_ffmpeg_options():
    # the variable OpenCV reads at each open: a camera's transport replaces only the
    # operator's transport settings
    from edged.capture.readers import opencv

    assert opencv.ffmpeg_capture_options("auto") == opencv._USER_FFMPEG_OPTIONS
    user = opencv._USER_FFMPEG_OPTIONS
    try:
        opencv._USER_FFMPEG_OPTIONS = "stimeout;5000000|rtsp_transport;udp|rtsp_flags;prefer_tcp"
        assert opencv.ffmpeg_capture_options("tcp") == "stimeout;5000000|rtsp_transport;tcp"
    finally:
        opencv._USER_FFMPEG_OPTIONS = user
