"""`Config`: the whole file, one field per section."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import Field, field_validator, model_validator

from edged.config.camera import BudgetConfig, CameraConfig
from edged.config.errors import custom_error
from edged.config.fields import CameraName, Frozen
from edged.config.foxglove import FoxgloveConfig
from edged.config.log import LogConfig
from edged.config.model import ModelConfig
from edged.config.publish import PublishConfig
from edged.config.record import RecordConfig
from edged.config.ros2 import ROS_NAME_RE, Ros2Config
from edged.config.view import ViewConfig
from edged.redaction import Redactor
from edged.tracking.config import TrackingConfig

# Cameras one daemon serves (enabled ones; disabled ones cost nothing). Measured up to
# 100 synthetic cameras on 2 cores in docs/benchmarks.md ("Scale: many cameras"); far
# beyond it start-up and stop outgrow systemd's timeouts, so more is a config error.
MAX_CAMERAS: Final = 128
# The sections a config file may have; `source_file` and `secrets` are Config fields set
# by the loader, never written in the file.
FILE_SECTIONS: Final = ("model", "camera_defaults", "cameras", "publish", "budget", "log",
                        "view", "foxglove", "record", "ros2")


class Config(Frozen):
    model: ModelConfig
    cameras: dict[CameraName, CameraConfig]  # camera_defaults and budget already merged in
    publish: PublishConfig = Field(default_factory=PublishConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    view: ViewConfig | None = None  # the live view; None: off
    foxglove: FoxgloveConfig | None = None  # Foxglove live; None: off
    record: RecordConfig | None = None  # MCAP recording; None: off
    ros2: Ros2Config | None = None  # ROS 2 topics over DDS; None: off
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # merged into cameras
    source_file: Path | None = None  # None: parsed from a string
    # the values ${VAR} substitutions inserted (set by the loader, never in the file):
    # hidden in every output by `redactor()`
    secrets: frozenset[str] = Field(default_factory=frozenset, exclude=True, repr=False)

    def redactor(self) -> Redactor:
        """The redaction every rendering of a source or config value goes through."""
        return Redactor(self.secrets)

    @model_validator(mode="after")
    def _ros_camera_names(self) -> Config:
        if self.ros2 is not None:
            bad = [n for n, c in self.cameras.items() if c.enabled and not ROS_NAME_RE.fullmatch(n)]
            if bad:
                raise custom_error(
                    "ros_camera_name",
                    f"camera {bad[0]!r}: with ros2 on, each camera name is part of its ROS 2 "
                    "topics (/<namespace>/<camera>/...), so it must be letters, digits and _, "
                    "not starting with a digit: rename the camera")
        return self

    @field_validator("cameras")
    @classmethod
    def _at_least_one(cls, cameras: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        if not cameras:
            raise custom_error("no_cameras", "at least one camera is required")
        enabled = sum(c.enabled for c in cameras.values())
        if enabled > MAX_CAMERAS:
            raise custom_error(
                "too_many_cameras",
                f"{enabled} enabled cameras; edged serves at most MAX_CAMERAS = {MAX_CAMERAS} "
                "per daemon (each is a capture thread, a publish queue share and, when "
                "synthetic, 15 to 35 MB of scene; see docs/benchmarks.md, \"Scale: many "
                "cameras\"): disable some (enabled: false) or run a second edged")
        return cameras
