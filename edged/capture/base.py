"""What every camera reader is and how it fails: the `Source` protocol, its errors and
the `RestartPolicy` the capture thread applies to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edged.capture.defaults import DEFAULT_MAX_PIXELS


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names the camera and source."""


class CorruptFrame(SourceError):
    """One frame could not be decoded; the source may still deliver good ones."""


# An unexpected exception inside a source (a bug, not a SourceError) restarts it with
# backoff at most this many times within the window; one more and the camera fails.
CRASH_BUDGET = 5
CRASH_WINDOW_S = 600.0
# A reader thread stuck inside a C call cannot be killed, only abandoned; it normally
# returns when the backend's own timeout fires. At most this many per camera may be
# outstanding: beyond it the camera waits for one to return instead of piling up threads.
MAX_ABANDONED_READERS = 3


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a capture thread reacts to stalls, corrupt frames, disconnects and crashes."""

    stall_timeout_s: float = 5.0
    max_reconnects: int | None = None  # None: retry forever (capped backoff)
    max_corrupt_frames: int = 10
    max_pixels: int = DEFAULT_MAX_PIXELS
    crash_budget: int = CRASH_BUDGET
    crash_window_s: float = CRASH_WINDOW_S
    max_abandoned: int = MAX_ABANDONED_READERS

    @property
    def open_timeout_s(self) -> float:
        # opening a network stream probes it first: RTSP often takes seconds
        return max(2 * self.stall_timeout_s, 10.0)

    @classmethod
    def from_camera(cls, cam: Any) -> RestartPolicy:
        """From a camera's config (`edged.config.CameraConfig`)."""
        return cls(stall_timeout_s=cam.stall_timeout_s, max_reconnects=cam.max_reconnects,
                   max_corrupt_frames=cam.max_corrupt_frames, max_pixels=cam.max_pixels)


class Source(Protocol):
    """A frame reader; `read` blocks until the next frame, None means end of stream."""

    live: bool
    description: str
    # optional `can_stall = False`: reads always return (CaptureThread runs no watchdog)

    def open(self) -> None: ...
    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...
    def default_fps(self) -> float | None: ...

    def fresh(self) -> Source:
        """A new, unopened reader with the same settings. Used after a stall: the old one
        may still be blocked in `read` in an abandoned thread and must not be touched."""
        ...
