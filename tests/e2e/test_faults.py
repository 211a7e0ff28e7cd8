"""Faults injected into the real daemon (a subprocess): truncated and replaced video
files, a network camera that hangs without closing, one that sends garbage. Each time the
faulty camera does what docs/operations.md says and the other camera never stops.

SIGTERM while a camera waits in its reconnect backoff is covered by
test_daemon.py::test_bad_camera_does_not_stop_the_others.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from modelgen import painted_frame
from test_capture import garbage_jpeg
from test_daemon import write_config, write_video
from test_reload import cams, count, gather

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message
from edged.wire.telemetry import CameraState


def decodable_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def truncated_video(path: Path, frames: int = 50, keep: float = 0.6) -> int:
    """A real MJPG AVI cut to `keep` of its bytes; returns the frames OpenCV can read."""
    write_video(path, frames, (320, 240))
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))
    n = decodable_frames(path)
    assert 10 < n < frames, n
    return n


def ipcam_config(tmp_path: Path, model: Path, endpoint: str, url: str, setting: str) -> Path:
    """A steady synthetic camera plus `ipcam` on the MJPEG test server, with one setting."""
    return write_config(tmp_path / "cfg.yaml", model, [endpoint], cams(steady=10) + f"""
  ipcam:
    source: {url}
    {setting}""")


def states_of(msgs: list, camera: str) -> list[tuple[str, str]]:
    return [(m.state, m.detail) for m in msgs if isinstance(m, CameraState) and m.camera == camera]


def steady_seqs(msgs: list) -> list[int]:
    return [m.seq for m in msgs if isinstance(m, Message) and m.camera == "steady"]


def test_truncated_video_without_loop_ends_cleanly(tmp_path, test_model, tcp_endpoint,
                                                   start_daemon):
    video = tmp_path / "cut.avi"
    good = truncated_video(video)
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(steady=10) + f"""
  cut:
    source: {video}
    fps: 10
    loop: false""")
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=lambda ms: any(
            isinstance(m, EndOfStream) for m in ms), limit=60)
        # the other camera carries on after the faulty one ended
        msgs += gather(sub, 0, until=count("steady", 10), limit=30)
        code, took = d.terminate()
    assert code == 0 and took < 5.0, d.log()
    eos = [m for m in msgs if isinstance(m, EndOfStream)]
    # the end-of-stream message says why the stream ended early
    assert [(e.camera, e.reason, e.last_seq) for e in eos] == [
        ("cut", f"video {video} ends at frame {good} of 50 (truncated or unreadable)", good - 1)]
    cut = [m.seq for m in msgs if isinstance(m, Message) and m.camera == "cut"]
    assert cut and cut == list(range(cut[0], good)), cut  # every decodable frame, in order
    assert ("stopped", f"video {video} ends at frame {good} of 50 (truncated or unreadable)") \
        in states_of(msgs, "cut"), msgs
    after_eos = msgs[msgs.index(eos[0]):]
    assert len([m for m in after_eos if isinstance(m, Message) and m.camera == "steady"]) >= 10
    log = d.log()
    assert "Traceback" not in log
    assert f"camera cut: undecodable frame {good} of 50 in video {video}" in log


def test_truncated_video_with_loop_keeps_going(tmp_path, test_model, tcp_endpoint,
                                               start_daemon):
    video = tmp_path / "cut.avi"
    good = truncated_video(video, frames=30)
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(steady=10) + f"""
  cut:
    source: {video}
    fps: 20
    loop: true""")
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        # two and a half passes over what is readable
        msgs = gather(sub, 0, until=lambda ms: any(
            isinstance(m, Message) and m.camera == "cut" and m.seq > 2.5 * good for m in ms),
            limit=90)
        code, _ = d.terminate()
    assert code == 0, d.log()
    assert not [m for m in msgs if isinstance(m, EndOfStream)]
    cut = [m for m in msgs if isinstance(m, Message) and m.camera == "cut"]
    assert cut[-1].seq > 2.5 * good, d.log()
    assert all((m.frame_w, m.frame_h) == (320, 240) for m in cut)
    assert all(s == "running" for s, _ in states_of(msgs, "cut"))
    assert len(steady_seqs(msgs)) >= 10
    assert "Traceback" not in d.log()


def test_video_replaced_while_playing_is_picked_up_at_the_next_loop(tmp_path, test_model,
                                                                     tcp_endpoint,
                                                                     start_daemon):
    video = tmp_path / "clip.avi"
    write_video(video, 20, (320, 240))
    new = tmp_path / "new.avi"
    write_video(new, 20, (160, 120))
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(steady=10) + f"""
  clip:
    source: {video}
    fps: 20
    loop: true""")
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=count("clip", 5), limit=60)
        os.replace(new, video)  # a new recording dropped in atomically while playing
        msgs += gather(sub, 0, until=lambda ms: sum(
            isinstance(m, Message) and m.camera == "clip" and m.frame_w == 160
            for m in ms) >= 5, limit=60)
        code, _ = d.terminate()
    assert code == 0, d.log()
    clip = [m for m in msgs if isinstance(m, Message) and m.camera == "clip"]
    sizes = [(m.frame_w, m.frame_h) for m in clip]
    # the open file plays on to its end (the old inode), the next loop reopens the path
    first_new = sizes.index((160, 120))
    assert set(sizes[:first_new]) == {(320, 240)} and set(sizes[first_new:]) == {(160, 120)}
    assert clip[first_new].seq % 20 == 0  # switched exactly at a loop boundary
    seqs = [m.seq for m in clip]
    assert seqs == sorted(seqs)  # one stream: no restart, no end-of-stream
    assert not [m for m in msgs if isinstance(m, EndOfStream)]
    assert "Traceback" not in d.log()


def test_network_camera_that_hangs_is_reopened(tmp_path, test_model, tcp_endpoint,
                                               start_daemon, mjpeg_server):
    img, _ = painted_frame(160, 120)
    server = mjpeg_server(lambda i: img)
    cfg = ipcam_config(tmp_path, test_model, tcp_endpoint, server.url, "stall_timeout_s: 1.5")
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        d.wait_for("camera ipcam: running")
        msgs = gather(sub, 0, until=count("ipcam", 3), limit=30)
        server.hang.set()  # connection stays open, no more frames
        d.wait_for("camera ipcam: reconnecting")
        msgs += gather(sub, 1.0)
        server.hang.clear()  # frames flow again, to the new connection as well
        msgs += gather(sub, 0, until=lambda ms: count("ipcam", 3)(ms) and any(
            isinstance(m, CameraState) and m.camera == "ipcam" and m.state == "running"
            for m in ms), limit=40)
        code, _ = d.terminate()
    assert code == 0, d.log()
    states = states_of(msgs, "ipcam")
    reconnecting = [i for i, (s, _) in enumerate(states) if s == "reconnecting"]
    assert reconnecting and states[reconnecting[0]][1].startswith("no frame for 1.5 s"), states
    assert any(s == "running" for s, _ in states[reconnecting[0]:]), states
    steady = steady_seqs(msgs)
    assert len(steady) >= 20 and steady == sorted(steady)
    assert not [m for m in msgs if isinstance(m, EndOfStream)]
    log = d.log()
    assert log.count("camera ipcam: reconnecting") == 1, log
    assert "reader thread capture-ipcam-1 abandoned, blocked in read" in log
    assert "Traceback" not in log


def test_network_camera_sending_garbage_is_restarted(tmp_path, test_model, tcp_endpoint,
                                                     start_daemon, mjpeg_server):
    img, _ = painted_frame(160, 120)
    garbage = threading.Event()
    server = mjpeg_server(lambda i: garbage_jpeg(i) if garbage.is_set() or i % 4 == 1 else img)
    cfg = ipcam_config(tmp_path, test_model, tcp_endpoint, server.url, "max_corrupt_frames: 5")
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        d.wait_for("camera ipcam: running")
        # one part in four is garbage: skipped, the camera keeps running
        msgs = gather(sub, 0, until=count("ipcam", 10), limit=30)
        garbage.set()
        d.wait_for("camera ipcam: reconnecting")
        garbage.clear()
        msgs += gather(sub, 0, until=lambda ms: count("ipcam", 15)(ms) and any(
            isinstance(m, CameraState) and m.camera == "ipcam" and m.state == "running"
            for m in ms), limit=40)
        code, _ = d.terminate()
    assert code == 0, d.log()
    states = states_of(msgs, "ipcam")
    detail = next(d_ for s, d_ in states if s == "reconnecting")
    assert re.match(rf"5 bad frames in a row, last: an undecodable MJPEG part \(\d+ bytes\) "
                    rf"from {re.escape(server.url)}", detail), detail
    ipcam = [m for m in msgs if isinstance(m, Message) and m.camera == "ipcam"]
    assert all((m.frame_w, m.frame_h) == (160, 120) for m in ipcam)
    assert np.diff([m.seq for m in ipcam]).min() > 0
    assert len(steady_seqs(msgs)) >= 10
    log = d.log()
    assert f"camera ipcam: an undecodable MJPEG part (3004 bytes) from {server.url}" in log
    assert "[mjpeg @" not in log  # FFmpeg's per-frame errors stay out of the journal
    assert "Traceback" not in log


def test_image_swapped_for_a_non_image_mid_run_is_skipped(tmp_path, test_model, tcp_endpoint,
                                                          start_daemon):
    folder = tmp_path / "stills"
    folder.mkdir()
    widths = [320, 240, 200, 160]  # each image its own width: the results say which it was
    for i, w in enumerate(widths):
        cv2.imwrite(str(folder / f"{i}.png"), painted_frame(w, 120)[0])
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(steady=10) + f"""
  stills:
    source: {folder}
    fps: 10
    loop: true""")
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        msgs = gather(sub, 0, until=count("stills", 6), limit=60)
        junk = tmp_path / "junk.png"
        junk.write_bytes(b"\x89PNG\r\n\x1a\n but then not a PNG")
        os.replace(junk, folder / "2.png")
        # frames read from here on (a read of the old file under way may still finish)
        t_swapped = time.time_ns() + 200_000_000
        d.wait_for(f"camera stills: unreadable image {folder / '2.png'}")
        later = gather(sub, 0, until=lambda ms: sum(
            isinstance(m, Message) and m.camera == "stills" and m.t_capture_ns > t_swapped
            for m in ms) >= 9, limit=60)
        code, _ = d.terminate()
    assert code == 0, d.log()
    assert {m.frame_w for m in later if isinstance(m, Message) and m.camera == "stills"
            and m.t_capture_ns > t_swapped} == {320, 240, 160}  # skipped; the others go on
    stills = [m.seq for m in msgs + later if isinstance(m, Message) and m.camera == "stills"]
    assert stills == sorted(stills)
    assert not [m for m in msgs + later if isinstance(m, EndOfStream)]
    assert all(s == "running" for s, _ in states_of(msgs + later, "stills"))
    assert "Traceback" not in d.log()


def test_sigterm_while_a_reader_is_blocked_in_a_hung_stream(tmp_path, test_model, tcp_endpoint,
                                                            start_daemon, mjpeg_server):
    img, _ = painted_frame(160, 120)
    server = mjpeg_server(lambda i: img)
    cfg = ipcam_config(tmp_path, test_model, tcp_endpoint, server.url, "stall_timeout_s: 60")
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg)
        d.wait_for("camera ipcam: running")
        gather(sub, 0, until=count("ipcam", 3), limit=30)
        server.hang.set()  # the reader now sits inside FFmpeg's read, for a long time
        gather(sub, 1.0)
        code, took = d.terminate()
        rest = gather(sub, 0, until=lambda ms: len(
            {m.camera for m in ms if isinstance(m, EndOfStream)}) == 2, limit=5)
    assert code == 0 and took < 5.0, (code, took, d.log())
    assert {(m.camera, m.reason) for m in rest if isinstance(m, EndOfStream)} == {
        ("steady", "shutdown"), ("ipcam", "shutdown")}
    assert "Traceback" not in d.log()
