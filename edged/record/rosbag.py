"""rosbag2 output (`edged record --rosbag DIR`, or `record: {format: rosbag2}`): a bag
directory that `ros2 bag play` plays on a robot.

The bag is rosbag2's MCAP storage: `DIR/metadata.yaml` (version 9) and one
`DIR/<name>_0.mcap` with profile `ros2`, one schema per type (`ros2msg`: the .msg
definition and those it uses, `edged.ros2.msgdefs`) and one channel per topic (`cdr`).
The messages are the ROS 2 sink's (docs: README "Connecting ROS 2"): per camera `mask`,
`detections`, `label_info`, `mask/label_info`, `instances` where the model has them,
`image/compressed` when `record.frames`; and `/diagnostics`. Log time = capture time.

The bag is one file: when it reaches `record.max_mb` recording stops (logged), it never
fills the disk. A write error is logged and counted and ends the bag (what was written
stays readable after `ros2 bag reindex`); the cameras are never held up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml
from mcap.writer import CompressionType, Writer

from edged.config import RecordConfig
from edged.daemon.sinks import Outcome, Sink
from edged.record import RecordError
from edged.record.files import MB
from edged.ros2 import cdr, msgs
from edged.ros2.msgdefs import definition
from edged.ros2.sink import detections, diagnostic_status, instance_ids
from edged.view.overlay import encode_jpeg
from edged.wire.codec import TOPIC_STATS
from edged.wire.telemetry import decode_stats

log = logging.getLogger("edged.record")

_FOREVER = {"sec": 2147483647, "nsec": 4294967295}  # rmw's "infinite" duration


def _qos(durability: str) -> list[dict[str, Any]]:
    """The writer's QoS as rosbag2 metadata v9 lists it (what `ros2 bag play` offers)."""
    return [{"history": "keep_last", "depth": 1, "reliability": "reliable",
             "durability": durability, "deadline": dict(_FOREVER),
             "lifespan": dict(_FOREVER), "liveliness": "automatic",
             "liveliness_lease_duration": dict(_FOREVER),
             "avoid_ros_namespace_conventions": False}]


QOS_STREAM = _qos("volatile")
# latched topics (LabelInfo): transient local, so `ros2 bag play` offers them so too
QOS_LATCHED = _qos("transient_local")


def check_bag_dir(config: RecordConfig, *, create: bool = True) -> Path:
    """A new bag directory: rosbag2 refuses to write into one that exists. `create`:
    make it (`edged check` asks the same question without making it)."""
    d = config.dir.expanduser().absolute()
    if d.exists():
        raise RecordError(f"record.dir {d}: a rosbag2 bag needs a new directory, and this "
                          "one exists (choose another, or remove it)")
    if not create:
        return d
    try:
        d.mkdir(parents=True)
    except OSError as e:
        raise RecordError(f"record.dir {d}: cannot create it ({e.strerror or e})") from None
    return d


class RosbagSink(Sink):
    name = "rosbag"

    def __init__(self, config: RecordConfig, frame_ids: dict[str, str],
                 namespace: str = "edged") -> None:
        """`namespace`: as `ros2.namespace`, so a bag plays on the live topics' names."""
        self.config = config
        self._prefix = "/" + namespace if namespace else ""
        self.dir = check_bag_dir(config)
        self.path = self.dir / f"{self.dir.name}_0.mcap"
        self._fh: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._w = Writer(self._fh, compression=CompressionType.ZSTD, chunk_size=1024 * 1024)
        self._w.start(profile="ros2", library="edged")
        self._frame_ids = frame_ids
        self._schemas: dict[str, int] = {}
        # topic -> (channel id, type, QoS)
        self._channels: dict[str, tuple[int, str, list[dict[str, Any]]]] = {}
        self._counts: dict[str, int] = {}
        self._labels_for: dict[str, Any] = {}
        self._first = self._last = 0
        self.written = 0
        self.errors = 0
        self._full = False

    def open(self) -> None:
        log.info("recording a rosbag2 bag into %s (at most %g MB)", self.dir,
                 self.config.max_mb)

    def _write(self, topic: str, type_name: str, t_ns: int, data: bytes,
               latched: bool = False) -> None:
        if self._fh is None or self._full:
            return
        ch = self._channels.get(topic)
        try:
            if ch is None:
                sid = self._schemas.get(type_name)
                if sid is None:
                    sid = self._schemas[type_name] = self._w.register_schema(
                        type_name, "ros2msg", definition(type_name).encode())
                qos = QOS_LATCHED if latched else QOS_STREAM
                # the MCAP channel holds the same list as YAML text
                cid = self._w.register_channel(
                    topic, "cdr", sid, {"offered_qos_profiles": yaml.safe_dump(qos)})
                ch = self._channels[topic] = (cid, type_name, qos)
            self._w.add_message(ch[0], t_ns, data, t_ns)
            self._counts[topic] = self._counts.get(topic, 0) + 1
            self.written += 1
            self._first = t_ns if not self._first else min(self._first, t_ns)
            self._last = max(self._last, t_ns)
            if self._fh.tell() >= self.config.max_mb * MB:
                self._full = True
                log.error("rosbag: %s reached record.max_mb (%g MB); recording stops here, "
                          "the cameras go on", self.path, self.config.max_mb)
        except OSError as e:
            self.errors += 1
            log.error("rosbag: cannot write %s: %s; the bag ends here, the cameras go on",
                      self.path, e.strerror or e)
            self._close_file()

    def deliver(self, outcome: Outcome) -> None:
        r, frame = outcome.result, outcome.frame
        cam = r.camera
        fid = self._frame_ids.get(cam, cam)
        t = r.t_capture_wall_ns
        base = f"{self._prefix}/{cam}"
        header = msgs.Header(stamp=msgs.Time(t // 1_000_000_000, t % 1_000_000_000),
                             frame_id=fid)
        key = (r.class_names, r.mask_classes)
        if self._labels_for.get(cam) != key:
            self._labels_for[cam] = key
            for topic, names in ((f"{base}/label_info", r.class_names),
                                 (f"{base}/mask/label_info", r.mask_classes)):
                self._write(topic, "vision_msgs/msg/LabelInfo", t, msgs.LabelInfo(
                    header=header, class_map=[msgs.VisionClass(i, n)
                                              for i, n in enumerate(names)]).serialize(),
                    latched=True)
        mask = r.mask_camera()
        if mask is not None:
            mask = np.ascontiguousarray(mask, np.uint8)
            h, w = mask.shape
            self._write(f"{base}/mask", "sensor_msgs/msg/Image", t,
                        cdr.image(t, fid, h, w, "mono8", w, mask.data))
        self._write(f"{base}/detections", "vision_msgs/msg/Detection2DArray", t,
                    detections(r, header).serialize())
        if r.detections.instance_masks is not None:
            ids = instance_ids(r)
            h, w = ids.shape
            self._write(f"{base}/instances", "sensor_msgs/msg/Image", t,
                        cdr.image(t, fid, h, w, "mono16", 2 * w, ids.data))
        if self.config.frames and frame is not None:
            self._write(f"{base}/image/compressed", "sensor_msgs/msg/CompressedImage", t,
                        cdr.compressed_image(t, fid, "jpeg",
                                             encode_jpeg(frame.image, self.config.quality)))

    def control(self, frames: list[bytes]) -> None:
        if not frames or bytes(frames[0]) != TOPIC_STATS.encode():
            return
        st = decode_stats(frames)
        self._write("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", st.t_ns,
                    msgs.DiagnosticArray(
                        header=msgs.Header(stamp=msgs.Time(st.t_ns // 1_000_000_000,
                                                           st.t_ns % 1_000_000_000)),
                        status=[diagnostic_status(n, s) for n, s in st.snapshots.items()]
                    ).serialize())

    def _close_file(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            self._w.finish()
        except OSError as e:
            self.errors += 1
            log.error("rosbag: cannot finish %s: %s", self.path, e.strerror or e)
        finally:
            fh.close()

    def close(self) -> None:
        self._close_file()
        n = sum(self._counts.values())
        meta = {"rosbag2_bagfile_information": {
            "version": 9, "storage_identifier": "mcap",
            "relative_file_paths": [self.path.name],
            "duration": {"nanoseconds": self._last - self._first},
            "starting_time": {"nanoseconds_since_epoch": self._first},
            "message_count": n,
            "topics_with_message_count": [
                {"topic_metadata": {"name": topic, "type": type_name,
                                    "serialization_format": "cdr",
                                    "offered_qos_profiles": qos,
                                    "type_description_hash": ""},
                 "message_count": self._counts.get(topic, 0)}
                for topic, (_, type_name, qos) in self._channels.items()],
            "compression_format": "", "compression_mode": "",
            "files": [{"path": self.path.name,
                       "starting_time": {"nanoseconds_since_epoch": self._first},
                       "duration": {"nanoseconds": self._last - self._first},
                       "message_count": n}],
            "custom_data": {}, "ros_distro": "jazzy"}}
        try:
            (self.dir / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        except OSError as e:
            self.errors += 1
            log.error("rosbag: cannot write %s/metadata.yaml: %s", self.dir, e.strerror or e)
        log.info("rosbag: %d message(s) on %d topic(s) in %s, %d write error(s)", n,
                 len(self._channels), self.dir, self.errors)
