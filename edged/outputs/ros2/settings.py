"""`ros2`: ROS 2 topics over DDS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import Field, ValidationInfo, field_validator

from edged.config.errors import custom_error
from edged.config.fields import Float, Int, Section

if TYPE_CHECKING:
    from edged.config import Config

ROS_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Ros2Config(Section):
    """ROS 2 topics over DDS (`edged[ros2]`): Cyclone DDS in the daemon, no ROS runtime."""

    namespace: str = "edged"  # topics /<namespace>/<camera>/...; "" for /<camera>/...
    # the DDS domain; None: the ROS_DOMAIN_ID environment variable, else 0
    domain_id: Int | None = Field(None, ge=0, le=232)
    # a Cyclone DDS XML file (interfaces, multicast, unicast peers); None: CYCLONEDDS_URI,
    # else Cyclone's defaults
    cyclonedds_config: Path | None = None
    mask_color: bool = False  # also /<ns>/<camera>/mask_color (rgb8)
    image: bool = False  # also /<ns>/<camera>/image/compressed (JPEG)
    image_fps: Float = Field(5.0, gt=0, le=60)  # the most images per second per camera
    quality: Int = Field(80, ge=10, le=100)
    # samples each stream writer keeps for reliable readers' repairs (keep last N): with 1,
    # a 300 KB mask still being repaired is replaced by the next and lost
    # (memory: at most N samples per writer, N x 300 KB for a 640x480 raw mask); 10 is a
    # ROS 2 reader's default depth
    history_depth: Int = Field(10, ge=1, le=100)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        parts = value.strip("/").split("/") if value.strip("/") else []
        bad = [p for p in parts if not ROS_NAME_RE.fullmatch(p)]
        if bad:
            raise custom_error("ros_name", f"{bad[0]!r} is not a ROS 2 name token: use "
                                "letters, digits and _, not starting with a digit")
        return "/".join(parts)

    @field_validator("cyclonedds_config")
    @classmethod
    def _xml_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = value if value.is_absolute() else \
            Path((info.context or {}).get("base_dir") or Path.cwd()) / value
        if not path.is_file():
            raise custom_error("file_not_found", f"Cyclone DDS config not found: {path}")
        return path

    def check_with(self, config: Config) -> None:
        bad = [n for n, c in config.cameras.items() if c.enabled and not ROS_NAME_RE.fullmatch(n)]
        if bad:
            raise custom_error(
                "ros_camera_name",
                f"camera {bad[0]!r}: with ros2 on, each camera name is part of its ROS 2 "
                "topics (/<namespace>/<camera>/...), so it must be letters, digits and _, "
                "not starting with a digit: rename the camera")
