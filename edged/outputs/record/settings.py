"""`record`: MCAP or rosbag2 recording, everything or a flight recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edged.config.errors import custom_error
from edged.config.fields import Float, Int, Section


class RecordConfig(Section):
    """MCAP recording (`edged[record]`): everything, or a flight recorder of the seconds
    around a missed budget, a stall, a reconnect or a failed inference."""

    dir: Path
    # mcap: edged's files (Foxglove messages + the wire protocol); rosbag2: one ROS 2 bag
    # (MCAP storage) in a new directory, for `ros2 bag play`
    format: Literal["mcap", "rosbag2"] = "mcap"
    frames: bool = True  # the camera images (JPEG) too; results alone are much smaller
    quality: Int = Field(80, ge=10, le=100)
    max_mb: Float = Field(500.0, gt=0)  # edged's files in `dir`, oldest deleted past it
    rotate_mb: Float = Field(100.0, gt=0)  # a file is closed and a new one begun past it
    trigger: Literal["always", "on_miss"] = "always"
    before_s: Float = Field(10.0, ge=0, le=600)  # on_miss: kept in memory before the event
    after_s: Float = Field(5.0, ge=0, le=600)  # on_miss: written after the (last) event
    buffer_mb: Float = Field(64.0, gt=0, le=4096)  # on_miss: memory bound of that buffer

    @model_validator(mode="after")
    def _sizes(self) -> RecordConfig:
        if self.format == "rosbag2" and self.trigger != "always":
            raise custom_error("rosbag_trigger",
                                "record.format rosbag2 records everything into one bag: "
                                "use trigger: always (the flight recorder writes mcap)")
        if self.rotate_mb > self.max_mb:
            raise custom_error("rotate_over_max",
                                f"record.rotate_mb ({self.rotate_mb:g}) is more than "
                                f"record.max_mb ({self.max_mb:g}): one file could not fit")
        return self
