"""ROS 2 natively (`ros2:` in the config, optional extra `edged[ros2]`): standard ROS 2
topics written over DDS by Cyclone DDS, without a ROS installation.

`settings` is its config section (`Ros2Config`); `sink` holds the participant and the
sink; the messages are in `edged.outputs.base.ros2msgs`, which the rosbag2 recorder
shares.
"""

from __future__ import annotations

from edged.config import Config
from edged.outputs.base.output import Held, Output, enabled, frame_ids
from edged.outputs.base.ros2msgs import require_ros2
from edged.outputs.base.sink import Sink
from edged.outputs.ros2.settings import Ros2Config


def _check(config: Config, c: Ros2Config, held: list[Held]) -> str:
    from edged.outputs.ros2.sink import Ros2Sink

    r2 = Ros2Sink(c, frame_ids(config, enabled(config)))
    line = f"ros2: DDS domain {r2.domain_id}, Cyclone DDS started OK"
    r2.close()
    return line


def _build(config: Config, c: Ros2Config, cameras: list[str]) -> Sink:
    from edged.outputs.ros2.sink import Ros2Sink

    return Ros2Sink(c, frame_ids(config, cameras))


OUTPUT = Output("ros2", Ros2Config, queue_size=4, require=lambda _, __: require_ros2(),
                check=_check, build=_build)
