"""The .msg definitions (ROS 2 Jazzy) of the types edged writes, for rosbag2 files: a
bag's MCAP schema (`ros2msg`) holds a type's definition followed by each type it uses,
so any reader can decode the CDR without ROS installed. Constants and comments of the
upstream files are left out where they do not change the layout; neither is part of a
type's RIHS01 hash either (`edged.outputs.base.ros2msgs.typehash` hashes these definitions, and
tests/e2e/test_rosbag.py checks them against the upstream files)."""

from __future__ import annotations

DEFS: dict[str, str] = {
    "builtin_interfaces/msg/Time": "int32 sec\nuint32 nanosec\n",
    "std_msgs/msg/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "sensor_msgs/msg/Image": "std_msgs/Header header\nuint32 height\nuint32 width\n"
                             "string encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n",
    "sensor_msgs/msg/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data\n",
    "geometry_msgs/msg/Point": "float64 x\nfloat64 y\nfloat64 z\n",
    "geometry_msgs/msg/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n",
    "geometry_msgs/msg/Pose": "Point position\nQuaternion orientation\n",
    "geometry_msgs/msg/PoseWithCovariance": "Pose pose\nfloat64[36] covariance\n",
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\n"
                                     "float64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": "ObjectHypothesis hypothesis\n"
                                                "geometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\nObjectHypothesisWithPose[] results\n"
                                   "BoundingBox2D bbox\nstring id\n",
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo": "std_msgs/Header header\nVisionClass[] class_map\n"
                                 "float32 threshold\n",
    "diagnostic_msgs/msg/KeyValue": "string key\nstring value\n",
    "diagnostic_msgs/msg/DiagnosticStatus": "byte OK=0\nbyte WARN=1\nbyte ERROR=2\n"
                                            "byte STALE=3\nbyte level\nstring name\n"
                                            "string message\nstring hardware_id\n"
                                            "KeyValue[] values\n",
    "diagnostic_msgs/msg/DiagnosticArray": "std_msgs/Header header\nDiagnosticStatus[] status\n",
}

_BUILTIN = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
            "int32", "uint32", "int64", "uint64", "string", "wstring"}


def _deps(name: str) -> list[str]:
    pkg = name.split("/")[0]
    out = []
    for line in DEFS[name].splitlines():
        t = line.split()[0].split("[")[0]
        if t in _BUILTIN:
            continue
        full = f"{t.split('/')[0]}/msg/{t.split('/')[1]}" if "/" in t else f"{pkg}/msg/{t}"
        out.append(full)
    return out


def definition(name: str) -> str:
    """`name`'s definition with every type it uses, as rosbag2 stores it."""
    seen: list[str] = []

    def walk(n: str) -> None:
        for d in _deps(n):
            if d not in seen:
                seen.append(d)
                walk(d)

    walk(name)
    parts = [DEFS[name]]
    for d in seen:
        pkg, _, t = d.split("/")
        parts.append("=" * 80 + f"\nMSG: {pkg}/{t}\n" + DEFS[d])
    return "".join(parts)
