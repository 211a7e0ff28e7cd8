"""ROS 2 natively (`ros2:` in the config, optional extra `edged[ros2]`): standard ROS 2
topics written over DDS by Cyclone DDS, without a ROS installation.

`msgs` holds the message types (the ROS 2 Jazzy layouts as DDS types), `cdr` a fast
serializer for the two image messages, `sink` the participant and the sink.
"""

from __future__ import annotations


class Ros2Error(RuntimeError):
    """ROS 2 output cannot start (its extra is missing, or Cyclone DDS refused)."""


def require_ros2() -> None:
    try:
        import cyclonedds  # noqa: F401
    except ImportError:
        raise Ros2Error("ROS 2 output needs cyclonedds: pip install 'edged[ros2]'") from None
