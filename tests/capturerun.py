"""A capture thread run on its own, with what it hands off and the states it reports
collected; and camera input that no decoder accepts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from edged.capture.base import RestartPolicy
from edged.capture.handoff import Handoff
from edged.capture.supervisor import CaptureThread


class Recorder:
    """Collects state changes and drains frames from a live hand-off."""

    def __init__(self, lossless: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.handoff = Handoff(self.loop, lossless=lossless, capacity=64)
        self.states: list[tuple[str, str]] = []
        self.frames: list = []

    def on_state(self, camera: str, state: str, detail: str) -> None:
        self.states.append((state, detail))

    def drain(self) -> None:
        while (f := self.handoff.take()) is not None:
            self.frames.append(f)

    def wait(self, cond: Callable[[], bool], timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.drain()
            if cond():
                return
            time.sleep(0.02)
        raise AssertionError(f"condition not met in {timeout} s; states {self.states}")

    def close(self) -> None:
        self.loop.close()


def start(rec: Recorder, source, policy: RestartPolicy, *, backoff=(0.05, 0.2),
          fps: float | None = None, pace: bool = False) -> CaptureThread:
    cap = CaptureThread("cam", source, rec.handoff, fps=fps, pace=pace, backoff=backoff,
                        on_state=rec.on_state, policy=policy)
    cap.start()
    return cap


def garbage_jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    return b"\xff\xd8" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() + b"\xff\xd9"
