"""CaptureThread on its own: stalls, corrupt frames, crash budgets, reconnect limits.

Real sources (an HTTP MJPEG server on loopback read by OpenCV's FFmpeg backend, video
files written here, image folders) wherever they can show the behaviour. Two small
Source subclasses stand in for what cannot be produced on demand here: a source whose
code raises (a bug, for the crash budget) and one blocked in a call that never returns
(a wedged driver). They are the capture thread's extension point, not mocks.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from capturerun import Recorder, garbage_jpeg, start
from daemonrun import write_video

from edged.capture.base import RestartPolicy
from edged.capture.sources import make_source
from edged.capture.supervisor import CaptureThread


def play_to_end(source) -> tuple[Recorder, CaptureThread]:
    """Run a finite source (no loop) until its capture thread stops; every frame kept."""
    rec = Recorder(lossless=True)
    cap = start(rec, source, RestartPolicy())
    try:
        rec.wait(lambda: cap.state == "stopped")
        rec.drain()
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    return rec, cap


class CrashingSource:
    """Delivers `good` frames per session, then raises like a buggy source would."""

    live = True
    description = "crashing test source"

    def __init__(self, good: int, crash_sessions: int | None = None) -> None:
        self.good, self.crash_sessions = good, crash_sessions
        self.sessions = 0
        self.n = 0

    def open(self) -> None:
        self.sessions += 1
        self.n = 0

    def read(self) -> np.ndarray | None:
        self.n += 1
        if self.n > self.good and (self.crash_sessions is None
                                   or self.sessions <= self.crash_sessions):
            raise ZeroDivisionError(f"bug in session {self.sessions}")
        time.sleep(0.01)
        return np.zeros((24, 32, 3), np.uint8)

    def close(self) -> None:
        pass

    def default_fps(self) -> float | None:
        return None

    def fresh(self) -> CrashingSource:
        return self


def test_crash_budget_then_failed_naming_camera_and_last_error():
    rec = Recorder()
    cap = start(rec, CrashingSource(good=2), RestartPolicy(crash_budget=3, crash_window_s=60))
    try:
        rec.wait(lambda: cap.state == "failed")
        cap.join(5)
    finally:
        cap.stop()
        rec.close()
    assert cap.crashes == 4  # the budget of 3 restarts, then one crash too many
    assert cap.error == ("camera cam: capture crashed 4 times within 60 s, giving up; last "
                         "error: capture crashed: ZeroDivisionError: bug in session 4")
    states = [s for s, _ in rec.states]
    assert states == ["running", "reconnecting", "running", "reconnecting", "running",
                      "reconnecting", "running", "failed"], rec.states
    assert "restart 1 of 3 within 60 s" in rec.states[1][1]
    assert len(rec.frames) == 8 and [f.seq for f in rec.frames] == list(range(8))
    assert rec.handoff.closed  # the pipeline sees the end and publishes end-of-stream


def test_crashes_within_budget_recover():
    rec = Recorder()
    src = CrashingSource(good=2, crash_sessions=2)
    cap = start(rec, src, RestartPolicy(crash_budget=3, crash_window_s=60))
    try:
        rec.wait(lambda: len(rec.frames) >= 30)
        assert cap.state == "running" and cap.crashes == 2 and src.sessions == 3
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    assert cap.state == "stopped"


class WedgedSource:
    """A live source whose read blocks inside a call until `gate` opens, like a driver
    that stops answering. Frames flow while the gate is open."""

    live = True
    description = "wedged test source"

    def __init__(self, gate: threading.Event, log: list[str]) -> None:
        self.gate, self.log = gate, log
        self.closed = False

    def open(self) -> None:
        self.log.append("open")

    def read(self) -> np.ndarray | None:
        time.sleep(0.02)
        self.gate.wait()
        return np.full((24, 32, 3), 7, np.uint8)

    def close(self) -> None:
        self.closed = True
        self.log.append("close")

    def default_fps(self) -> float | None:
        return None

    def fresh(self) -> WedgedSource:
        return WedgedSource(self.gate, self.log)


def test_stall_abandons_the_blocked_reader_and_caps_stuck_threads(caplog):
    gate = threading.Event()
    gate.set()
    events: list[str] = []
    first = WedgedSource(gate, events)
    rec = Recorder()
    cap = start(rec, first, RestartPolicy(stall_timeout_s=1.0, max_abandoned=2))
    try:
        rec.wait(lambda: len(rec.frames) >= 5)
        gate.clear()  # every read now blocks, and so does every fresh reader's
        rec.wait(lambda: cap.stuck_readers() == 2)
        # the cap holds: the supervisor has come to open a third reader and declined
        rec.wait(lambda: any("waiting for one to return before reopening it" in r.getMessage()
                             for r in caplog.records))
        assert cap.state == "reconnecting" and cap.abandoned_readers == 2
        assert cap.stuck_readers() == 2 and cap.stalls == 2
        assert ("reconnecting", "no frame for 1 s; retrying every <= 0.2 s") in rec.states
        # the stuck reader was never closed behind its back
        assert not first.closed
        n = len(rec.frames)
        gate.set()  # the driver answers again: stuck readers return, a new one runs
        rec.wait(lambda: cap.state == "running" and len(rec.frames) >= n + 5)
        rec.wait(lambda: cap.stuck_readers() == 0)
        assert first.closed  # closed by its own thread once it returned
    finally:
        cap.stop()
        gate.set()
        cap.join(5)
        rec.close()
    seqs = [f.seq for f in rec.frames]
    assert seqs == list(range(len(seqs)))  # abandoned readers never handed over a frame


def test_max_reconnects_gives_up_on_a_dead_url(mjpeg_server):
    server = mjpeg_server(lambda i: np.zeros((24, 32, 3), np.uint8))
    url = server.url
    server.close()  # nothing listens there any more
    rec = Recorder()
    cap = start(rec, make_source("url", url), RestartPolicy(max_reconnects=2))
    try:
        rec.wait(lambda: cap.state == "failed")
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    assert cap.reconnects == 2
    # the reason is the connection's own (edged opens http URLs itself, see mjpeg.py)
    assert cap.error == (f"camera cam: gave up after 2 reconnects without a frame; last "
                         f"error: cannot open {url}: [Errno 111] Connection refused")


def test_mjpeg_garbage_parts_are_counted_and_a_run_of_them_restarts(mjpeg_server):
    img = np.full((120, 160, 3), 90, np.uint8)
    garbage_only = threading.Event()

    def part(i: int):
        if garbage_only.is_set() or i % 3 == 1:
            return garbage_jpeg(i)
        return img

    server = mjpeg_server(part, fps=40)
    rec = Recorder()
    cap = start(rec, make_source("url", server.url), RestartPolicy(max_corrupt_frames=5))
    try:
        # one garbage part in three: skipped and counted, the camera keeps running
        rec.wait(lambda: len(rec.frames) >= 20)
        assert cap.state == "running" and cap.reconnects == 0
        assert cap.corrupt >= 5
        garbage_only.set()
        rec.wait(lambda: cap.state == "reconnecting")
        garbage_only.clear()
        n = len(rec.frames)
        rec.wait(lambda: cap.state == "running" and len(rec.frames) >= n + 5)
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    detail = [d for s, d in rec.states if s == "reconnecting"][0]
    assert re.match(rf"5 bad frames in a row, last: an undecodable MJPEG part \(\d+ bytes\) "
                    rf"from {re.escape(server.url)}", detail), detail
    assert all(f.image.shape == (120, 160, 3) and int(f.image.mean()) == 90
               for f in rec.frames)


def test_truncated_video_ends_early_with_frames_counted(tmp_path: Path):
    video = tmp_path / "t.avi"
    write_video(video, 50, (320, 240))
    size = video.stat().st_size
    with open(video, "r+b") as f:
        f.truncate(int(size * 0.6))
    rec, cap = play_to_end(make_source("video", str(video), loop=False))
    good = len(rec.frames)
    assert 20 <= good < 40, good  # what the first 60 % of the file holds
    assert cap.corrupt == 8  # FILE_READ_RETRIES tries past the cut, then the end
    assert rec.states[-1] == ("stopped", f"video {video} ends at frame {good} of 50 "
                              "(truncated or unreadable)")


def test_corrupt_frame_in_the_middle_of_a_video_is_skipped(tmp_path: Path):
    video = tmp_path / "c.avi"
    write_video(video, 30, (320, 240))
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    data[starts[10]:starts[10] + 400] = bytes(400)  # wipe the 11th frame's JPEG header
    video.write_bytes(bytes(data))
    rec, cap = play_to_end(make_source("video", str(video), loop=False))
    assert cap.corrupt == 1 and len(rec.frames) == 29
    assert rec.states[-1] == ("stopped", "end of stream")


def test_image_swapped_for_garbage_is_skipped_and_counted(tmp_path: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((30, 40, 3), 10 * i, np.uint8))
    (folder / "2.png").write_bytes(b"not a png at all")
    rec, cap = play_to_end(make_source("images", str(folder), loop=False))
    assert [int(f.image.mean()) for f in rec.frames] == [0, 10, 30]
    assert cap.corrupt == 1


def test_folder_with_no_readable_image_fails_clearly(tmp_path: Path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"junk")
    rec = Recorder(lossless=True)
    cap = start(rec, make_source("images", str(folder), loop=True), RestartPolicy())
    try:
        rec.wait(lambda: cap.state == "failed")
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    assert cap.error == f"no readable image in {folder}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_repeated_stalls_of_a_real_stream_leak_no_threads_or_fds(mjpeg_server):
    img = np.full((120, 160, 3), 90, np.uint8)
    server = mjpeg_server(lambda i: img, fps=30)
    policy = RestartPolicy(stall_timeout_s=0.5)
    rec = Recorder()
    # FFmpeg's read timeout follows the policy (2 x 0.5 + 1 s): abandoned readers return
    cap = start(rec, make_source("url", server.url, policy=policy), policy)
    try:
        rec.wait(lambda: len(rec.frames) >= 10)
        threads, fds = threading.active_count(), open_fds()
        for i in range(1, 5):
            server.hang.set()
            rec.wait(lambda i=i: cap.stalls == i)
            server.hang.clear()
            n = len(rec.frames)
            rec.wait(lambda n=n: cap.state == "running" and len(rec.frames) > n + 5)
        # every abandoned reader came back, closed its capture and its connection
        rec.wait(lambda: cap.stuck_readers() == 0 and threading.active_count() == threads
                 and open_fds() == fds)
    finally:
        cap.stop()
        cap.join(5)
        rec.close()
    assert cap.abandoned_readers == 4 and cap.reconnects == 4
    seqs = [f.seq for f in rec.frames]
    assert seqs == list(range(len(seqs)))


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    """A 20000x20000 PNG took 2.4 GB for one frame: now its header is read (PNG, JPEG,
    BMP, WebP) and the image skipped as corrupt in well under a second."""
    import struct
    import time as _time
    import zlib

    from edged.capture.base import CorruptFrame
    from edged.capture.readers.images import ImageFolderSource, image_size

    def png(path, w, h):
        # a valid PNG header and a tiny (invalid-size) IDAT: only the header is read
        def chunk(kind, data):
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data)))
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2,
                                                                          0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    folder = tmp_path / "imgs"
    folder.mkdir()
    png(folder / "000.png", 20000, 20000)
    ok = np.zeros((48, 64, 3), np.uint8)
    for ext in ("png", "jpg", "bmp", "webp"):
        cv2.imwrite(str(folder / f"001.{ext}"), ok)
        assert image_size(str(folder / f"001.{ext}")) == (64, 48), ext
    src = ImageFolderSource(str(folder), loop=False, max_pixels=7680 * 4320)
    src.open()
    t = _time.monotonic()
    with pytest.raises(CorruptFrame, match=r"20000x20000 = 400000000 pixels, above max_pixels"):
        src.read()
    assert _time.monotonic() - t < 1.0
    assert src.read().shape == (48, 64, 3)  # the next image is read as usual
