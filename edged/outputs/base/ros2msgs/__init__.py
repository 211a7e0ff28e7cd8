"""ROS 2 messages without a ROS installation, shared by the ROS 2 output (DDS) and the
rosbag2 recorder: `msgs` (the Jazzy layouts as DDS types), `msgdefs` and `typehash` (their
definitions and RIHS01 hashes), `cdr` (a fast serializer for the two image messages) and
`convert` (results and statistics as messages).
"""

from __future__ import annotations

from edged.errors import UserError


class Ros2Error(UserError, RuntimeError):
    """ROS 2 output cannot start (its extra is missing, or Cyclone DDS refused)."""


def require_ros2() -> None:
    try:
        import cyclonedds  # noqa: F401
    except ImportError:
        raise Ros2Error("ROS 2 output needs cyclonedds: pip install 'edged[ros2]'") from None
