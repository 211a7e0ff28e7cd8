"""Per-frame work done once (issue 32): one mask PNG for every sink, and a replay reader
that decodes no further ahead of the model than one frame."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from test_daemon import write_video

from edged.capture.base import RestartPolicy
from edged.capture.handoff import Handoff
from edged.capture.sources import make_source
from edged.capture.supervisor import CaptureThread


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
