"""Running edged in tests: its config files, its command line, a subscriber's reads,
and waiting on an event with a generous ceiling (never a fixed window)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from modelgen import painted_frame

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message

T = TypeVar("T")

# the ceiling of every wait: generous for a loaded 2-core machine; a wait returns as soon
# as its condition holds, so the ceiling costs nothing when things go well
CEILING_S = 60.0


def wait_until(what: str, cond: Callable[[], T], timeout: float = CEILING_S,
               interval: float = 0.05) -> T:
    """Poll `cond()` until it is truthy (returned); AssertionError naming `what` after
    `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= end:
            raise AssertionError(f"no {what} within {timeout:g} s")
        time.sleep(interval)


def write_config(path: Path, model: Path, endpoints: list[str], cameras: str,
                 extra: str = "") -> Path:
    eps = "\n".join(f"    - {e}" for e in endpoints)
    path.write_text(f"""\
model:
  path: {model}
  threads: 1
  warmup_runs: 1
cameras:
{cameras}
publish:
  endpoints:
{eps}
log:
  stats_interval_s: 1
{extra}""")
    return path


def receive(sub: Subscriber, n: int, timeout: float = CEILING_S) -> list[Message | EndOfStream]:
    out: list[Message | EndOfStream] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        msg = sub.recv(timeout=0.2)
        if msg is not None:
            out.append(msg)
    return out


def write_video(path: Path, frames: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """An MJPG AVI of painted frames (band layout shifted by frame index); returns masks."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (w, h))
    assert vw.isOpened()
    masks = []
    for i in range(frames):
        img, mask = painted_frame(w, h)
        shift = (i * 16) % w
        vw.write(np.ascontiguousarray(np.roll(img, shift, axis=1)))
        masks.append(np.roll(mask, shift, axis=1))
    vw.release()
    return np.stack(masks)


def run_cli(*args: str, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def run_both(cfg: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`edged check` and `edged run` on the same config (run stops itself if it starts)."""
    return run_cli("check", "-c", str(cfg)), run_cli("run", "-c", str(cfg), "--frames", "2")


def cams(**fps: float) -> str:
    return "\n".join(f"""\
  {name}:
    source: synthetic
    width: 160
    height: 120
    fps: {rate}""" for name, rate in fps.items())


def gather(sub: Subscriber, seconds: float, until=None, limit: float = CEILING_S) -> list:
    """Messages for `seconds`, or longer (up to `limit`) until `until(messages)` holds.
    Wait on `until` with `seconds` 0: a window of `seconds` is for what must not wait
    (a daemon that has exited), never a stand-in for an event."""
    out: list = []
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if (elapsed >= seconds and (until is None or until(out))) or elapsed >= limit:
            return out
        m = sub.recv(timeout=0.1)
        if m is not None:
            out.append(m)


def count(camera: str, n: int):
    return lambda msgs: sum(isinstance(m, Message) and m.camera == camera for m in msgs) >= n


def until_eos(sub: Subscriber, cameras: set[str], timeout: float = CEILING_S
              ) -> list[Message | EndOfStream]:
    """Everything received until each of `cameras` has sent its end of stream (the last
    thing the daemon publishes for a camera); AssertionError after `timeout` seconds."""
    out: list[Message | EndOfStream] = []
    ended: set[str] = set()
    end = time.monotonic() + timeout
    while not cameras <= ended:
        assert time.monotonic() < end, \
            f"end of stream from {sorted(ended)} of {sorted(cameras)} within {timeout:g} s"
        m = sub.recv(timeout=0.2)
        if isinstance(m, Message | EndOfStream):
            out.append(m)
            if isinstance(m, EndOfStream):
                ended.add(m.camera)
    return out
