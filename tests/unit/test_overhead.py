"""Per-frame work done once (issue 32): one mask PNG for every sink, and a replay reader
that decodes no further ahead of the model than one frame."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from test_codec import make_result
from test_daemon import write_video

from edged.capture.base import RestartPolicy
from edged.capture.handoff import Handoff
from edged.capture.sources import make_source
from edged.capture.supervisor import CaptureThread
from edged.outputs.base.png import grey_png, with_palette
from edged.outputs.base.sink import Outcome


def test_every_sink_gets_the_same_mask_png_encoded_once() -> None:
    rng = np.random.default_rng(3)
    mask = np.kron(rng.integers(0, 3, (52, 52), dtype=np.uint8), np.ones((8, 8), np.uint8))
    outcome = Outcome(make_result(mask=mask, frame=(640, 480)), None, False, 0, (b"t",))
    pngs: list[bytes | None] = []
    barrier = threading.Barrier(4)

    def sink() -> None:  # four sink threads asking at once
        barrier.wait()
        pngs.append(outcome.mask.png())

    threads = [threading.Thread(target=sink) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(pngs) == 4 and all(p is pngs[0] for p in pngs)  # one object: one encoding
    png = pngs[0]
    assert png is not None
    camera = outcome.result.mask_camera()
    assert camera is not None and camera.shape == (480, 640)
    assert np.array_equal(outcome.mask.camera(), camera)
    grey = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.dtype == np.uint8 and np.array_equal(grey, camera)
    palette = bytes([0, 0, 0, 255, 0, 0, 0, 0, 255])  # ids 0, 1, 2: black, red, blue (RGB)
    colour = cv2.imdecode(np.frombuffer(with_palette(png, palette), np.uint8), cv2.IMREAD_COLOR)
    bgr = np.array([[0, 0, 0], [0, 0, 255], [255, 0, 0]], np.uint8)
    assert np.array_equal(colour, bgr[camera])


def test_a_result_without_a_mask_has_no_png() -> None:
    outcome = Outcome(make_result(mask=None), None, False, 0, (b"t",))
    assert outcome.mask.camera() is None and outcome.mask.png() is None


def test_grey_png_round_trips_odd_sizes() -> None:
    for h, w in ((1, 1), (3, 641), (481, 7)):
        m = (np.arange(h * w, dtype=np.uint32).reshape(h, w) % 5).astype(np.uint8)
        out = cv2.imdecode(np.frombuffer(grey_png(m), np.uint8), cv2.IMREAD_UNCHANGED)
        assert out.shape == (h, w) and np.array_equal(out, m), (h, w)


def test_the_replay_reader_decodes_at_most_one_frame_ahead(tmp_path: Path) -> None:
    """A file replayed frame by frame: while the consumer holds back, the reader has
    decoded exactly one frame more than were taken (the one queued), never several."""
    clip = tmp_path / "clip.avi"
    write_video(clip, 12, (160, 120))
    loop = asyncio.new_event_loop()
    handoff = Handoff(loop, lossless=True)
    source = make_source("video", str(clip), loop=False)
    cap = CaptureThread("cam", source, handoff, fps=None, pace=False,
                        policy=RestartPolicy())
    cap.start()
    taken = 0
    try:
        for _ in range(12):
            end = time.monotonic() + 30
            while not handoff.ready():
                assert time.monotonic() < end, "no frame within 30 s"
                time.sleep(0.01)
            # give a reader that would run ahead the time to show it (this cannot make a
            # correct reader fail: it has stopped at one frame whatever the delay)
            time.sleep(0.05)
            assert cap.seq == taken + 1, f"{cap.seq} frames decoded, {taken} taken"
            assert handoff.take() is not None
            taken += 1
    finally:
        cap.stop()
        handoff.close()
        cap.join(5)
        loop.close()
    assert taken == 12
