"""`cameras` (each with `camera_defaults` and the global `budget` merged in by the loader)
and `budget`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from edged.capture.defaults import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from edged.config.errors import custom_error
from edged.config.fields import Float, Frozen, Int
from edged.tracking.config import TrackingConfig

URL_SCHEMES: Final = frozenset({"rtsp", "rtsps", "http", "https", "udp"})
# Sizes of a camera (issue 29: a 100000 x 100000 synthetic camera passed validation and
# then died of a 28 GiB MemoryError in `check`, `run` and after a reload).
MAX_SIDE: Final = 16384  # width / height asked of any camera, in pixels
MAX_PIXELS_BOUND: Final = 1 << 28  # camera max_pixels: 268 Mpx, 805 MB a BGR frame
# the synthetic renderer needs ~1.5 GB and 3 s a frame at 8K: 4K UHD is its limit
MAX_SYNTHETIC_PIXELS: Final = 3840 * 2160
MAX_FPS: Final = 1000.0  # fps, max_fps: pacing of a frame every millisecond at most
MAX_SEED: Final = 2**32 - 1  # numpy's seed range
MAX_LATENCY_MS: Final = 3_600_000.0  # budget.latency_ms: an hour


class BudgetConfig(Frozen):
    latency_ms: Float = Field(250.0, gt=0, le=MAX_LATENCY_MS)
    on_late: Literal["publish", "drop"] = "publish"


SourceType = Literal["auto", "synthetic", "video", "images", "v4l2", "url", "gstreamer"]
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class CameraConfig(Frozen):
    source: str
    type: SourceType = "auto"
    enabled: bool = True
    # pacing for synthetic/images/video; requested for v4l2
    fps: Float | None = Field(None, gt=0, le=MAX_FPS)
    width: Int | None = Field(None, gt=0, le=MAX_SIDE)
    height: Int | None = Field(None, gt=0, le=MAX_SIDE)
    fourcc: str | None = None
    loop: bool = True  # files and folders: start again at the end instead of ending the stream
    mode: Literal["auto", "realtime", "every_frame"] = "auto"
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    weight: Float = Field(1.0, gt=0, le=1000)
    max_fps: Float | None = Field(None, gt=0, le=MAX_FPS)
    # After loading this is the global budget with camera_defaults' and the camera's own
    # keys merged over it.
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    # Live sources: no frame for this long while open (or an open that hangs for the
    # longer of twice this and 10 s) is a stall: the source is abandoned and reopened.
    stall_timeout_s: Float = Field(5.0, gt=0, le=3600)
    # Live sources: give up (state failed) after this many reconnects in a row without a
    # frame in between; none = retry forever with capped backoff.
    max_reconnects: Int | None = Field(None, ge=0, le=1_000_000)
    # Live sources: this many undecodable/malformed frames in a row restart the source.
    max_corrupt_frames: Int = Field(10, ge=1, le=1_000_000)
    # frames above this many pixels are skipped as corrupt (a 20000x20000 PNG in a folder
    # would cost 1.2 GB decoded); image files are measured from their header first
    max_pixels: Int = Field(DEFAULT_MAX_PIXELS, ge=1, le=MAX_PIXELS_BOUND)
    # rtsp:// cameras: how RTP travels. auto: over the RTSP connection (TCP) if the camera
    # allows it, else UDP (OpenCV's default); tcp or udp: only that (edged.capture.sources).
    # Other sources ignore it, so camera_defaults can set it for a mixed set of cameras.
    rtsp_transport: Literal["auto", "tcp", "udp"] = "auto"
    # header.frame_id of this camera's ROS 2 messages (live and in rosbag2 output); None:
    # the camera name
    frame_id: str | None = None
    # the global `tracking:` with camera_defaults' and the camera's own keys merged over it
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("source", mode="before")
    @classmethod
    def _source_text(cls, value: Any) -> Any:
        # `source: 0` is a V4L2 index; keep every source a string so there is one type to handle.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise custom_error("camera_source", "the camera source is empty")
        return value

    @field_validator("fourcc")
    @classmethod
    def _fourcc_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 4:
            raise custom_error("fourcc", "a FourCC is exactly 4 characters, e.g. MJPG")
        return value

    @model_validator(mode="after")
    def _frame_size(self) -> CameraConfig:
        synthetic = self.resolved_type() == "synthetic"
        if synthetic:  # its default size (edged.capture.sources.make_source)
            width, height = self.width or 640, self.height or 480
        elif self.width is None or self.height is None:
            return self
        else:
            width, height = self.width, self.height
        pixels = width * height
        if pixels > self.max_pixels:
            raise custom_error(
                "frame_too_large", f"width x height is {width} x {height} = "
                f"{pixels} pixels, more than max_pixels ({self.max_pixels})")
        if synthetic and pixels > MAX_SYNTHETIC_PIXELS:
            raise custom_error(
                "synthetic_too_large", f"a synthetic camera renders at most {MAX_SYNTHETIC_PIXELS} "
                f"pixels (3840 x 2160), not {width} x {height}")
        return self

    def resolved_type(self) -> str:
        """The source type, inferred from `source` when `type` is auto."""
        if self.type != "auto":
            return self.type
        source = self.source.strip()
        if source.lower() == "synthetic":
            return "synthetic"
        if source.isdigit() or source.startswith("/dev/video"):
            return "v4l2"
        # URLs before GStreamer: a password may contain "!".
        match = _URL_RE.match(source)
        if match and match.group(1).lower() in URL_SCHEMES:
            return "url"
        if "!" in source:
            return "gstreamer"
        if (
            any(ch in source for ch in "*?[")
            or Path(source).suffix.lower() in IMAGE_EXTENSIONS
            or Path(source).expanduser().is_dir()
        ):
            return "images"
        return "video"

    def resolved_mode(self) -> str:
        """realtime (drop stale frames) or every_frame (process them all)."""
        if self.mode != "auto":
            return self.mode
        return "every_frame" if self.resolved_type() in ("video", "images") else "realtime"
