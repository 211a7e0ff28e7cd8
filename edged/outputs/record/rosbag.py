"""rosbag2 output (`edged record --rosbag DIR`, or `record: {format: rosbag2}`): a bag
directory that `ros2 bag play` plays on a robot.

The bag is rosbag2's MCAP storage as rosbag2_storage_mcap writes it: one
`DIR/<name>_0.mcap` with profile `ros2`, one schema per type (`ros2msg`: the .msg
definition and those it uses, `ros2msgs.msgdefs`), one channel per topic (`cdr`, with
`offered_qos_profiles` and `topic_type_hash` = the RIHS01 hash), and a `rosbag2` Metadata
record holding the bag's metadata (`serialized_metadata`); and `DIR/metadata.yaml`.
Payloads are plain CDR, without the 4-byte padding a DDS writer adds.
The messages are the ROS 2 sink's (docs: README "Connecting ROS 2"): per camera `mask`,
`detections`, `label_info` (threshold: the score threshold in force), `mask/label_info`,
`instances` where the model has them, `image/compressed` when `record.frames`; and
`/diagnostics`. Log time = capture time.

Metadata version 8, read by Humble and Jazzy alike (see `METADATA_VERSION`).

The bag is one file: when it reaches `record.max_mb` recording stops (logged), it never
fills the disk. A write error is logged and counted and ends the bag (what was written
stays readable after `ros2 bag reindex`); the cameras are never held up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any

import yaml
from mcap.writer import CompressionType, Writer

from edged.outputs.base.draw import encode_jpeg
from edged.outputs.base.ros2msgs import cdr, msgs
from edged.outputs.base.ros2msgs.convert import detections, diagnostic_status, instance_ids
from edged.outputs.base.ros2msgs.msgdefs import definition
from edged.outputs.base.ros2msgs.typehash import rihs01
from edged.outputs.base.sink import Outcome, Sink
from edged.outputs.record import RecordError
from edged.outputs.record.files import MB
from edged.outputs.record.settings import RecordConfig
from edged.telemetry import ControlEvent, StatsReport

log = logging.getLogger("edged.record")

# rosbag2 metadata.yaml version 8. Humble (rosbag2 0.15) writes 5 and has no upper bound
# on what it reads, but reads `offered_qos_profiles` as a YAML string from version 4 on
# (rosbag2_storage/src/rosbag2_storage/metadata_io.cpp, TopicMetadata decode) and parses
# that string with integer policies (rosbag2_transport/src/rosbag2_transport/qos.cpp);
# version 9, Jazzy's (rosbag2 0.26), makes it a YAML list with policy names, which Humble
# fails on. Jazzy reads a version-8 file whole: the QoS string (integers detected),
# type_description_hash (>= 7), custom_data (>= 6), ros_distro (>= 8)
# (rosbag2_storage/include/rosbag2_storage/yaml.hpp, qos.cpp). Iron wrote 7; Rolling
# wrote 8 between Iron and Jazzy.
METADATA_VERSION = 8
ROS_DISTRO = "jazzy"  # the message layouts are Jazzy's (edged.outputs.base.ros2msgs.msgs)

# RMW_DURATION_INFINITE, as rosbag2 writes an infinite deadline, lifespan or lease
_INFINITE = {"sec": 9223372036, "nsec": 854775807}
# rmw_qos_*_policy_t values, as a version-8 QoS string holds them
_KEEP_LAST, _RELIABLE, _TRANSIENT_LOCAL, _VOLATILE, _AUTOMATIC = 1, 1, 1, 2, 1


def _qos(durability: int) -> str:
    """The live writer's QoS as one offered profile, in the YAML string that both the
    MCAP channel (`offered_qos_profiles`) and metadata.yaml hold: what `ros2 bag play`
    offers."""
    return yaml.safe_dump([{
        "history": _KEEP_LAST, "depth": 1, "reliability": _RELIABLE,
        "durability": durability, "deadline": dict(_INFINITE), "lifespan": dict(_INFINITE),
        "liveliness": _AUTOMATIC, "liveliness_lease_duration": dict(_INFINITE),
        "avoid_ros_namespace_conventions": False}], sort_keys=False).strip()


QOS_STREAM = _qos(_VOLATILE)
# latched topics (LabelInfo): transient local, so `ros2 bag play` offers them so too
QOS_LATCHED = _qos(_TRANSIENT_LOCAL)


def _yaml(data: Any) -> str:
    # keys in rosbag2's order, long strings on one line (as yaml-cpp writes them)
    return yaml.safe_dump(data, sort_keys=False, width=1 << 30)


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
        # CRCs of each chunk and of the whole data section: a reader can tell a damaged bag
        self._w = Writer(self._fh, compression=CompressionType.ZSTD, chunk_size=1024 * 1024,
                         enable_data_crcs=True)
        self._w.start(profile="ros2", library="edged")
        self._frame_ids = frame_ids
        self._schemas: dict[str, int] = {}
        # topic -> (channel id, type, QoS)
        self._channels: dict[str, tuple[int, str, str]] = {}
        self._counts: dict[str, int] = {}
        self._labels_for: dict[str, tuple[Any, ...]] = {}
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
                cid = self._w.register_channel(
                    topic, "cdr", sid, {"offered_qos_profiles": qos,
                                        "topic_type_hash": rihs01(type_name)})
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
        key = (r.class_names, r.mask_classes, r.conf_threshold)
        if self._labels_for.get(cam) != key:  # at the first frame, and after a reload
            self._labels_for[cam] = key
            # the detections passed the score threshold in force; the class-id mask is an
            # argmax, with no threshold
            for topic, names, threshold in (
                    (f"{base}/label_info", r.class_names, r.conf_threshold or 0.0),
                    (f"{base}/mask/label_info", r.mask_classes, 0.0)):
                self._write(topic, "vision_msgs/msg/LabelInfo", t, msgs.LabelInfo(
                    header=header, class_map=[msgs.VisionClass(i, n)
                                              for i, n in enumerate(names)],
                    threshold=threshold).serialize(), latched=True)
        mask = outcome.mask.camera()
        if mask is not None:
            h, w = mask.shape
            self._write(f"{base}/mask", "sensor_msgs/msg/Image", t,
                        cdr.image(t, fid, h, w, "mono8", w, mask.data, dds_pad=False))
        self._write(f"{base}/detections", "vision_msgs/msg/Detection2DArray", t,
                    detections(r, header).serialize())
        if r.detections.instance_masks is not None:
            ids = instance_ids(r)
            h, w = ids.shape
            self._write(f"{base}/instances", "sensor_msgs/msg/Image", t,
                        cdr.image(t, fid, h, w, "mono16", 2 * w, ids.data,
                                  dds_pad=False))
        if self.config.frames and frame is not None:
            self._write(f"{base}/image/compressed", "sensor_msgs/msg/CompressedImage", t,
                        cdr.compressed_image(t, fid, "jpeg",
                                             encode_jpeg(frame.image, self.config.quality),
                                             dds_pad=False))

    def control(self, event: ControlEvent) -> None:
        if not isinstance(event, StatsReport):
            return
        t = event.t_ns
        self._write("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", t,
                    msgs.DiagnosticArray(
                        header=msgs.Header(stamp=msgs.Time(t // 1_000_000_000,
                                                           t % 1_000_000_000)),
                        status=[diagnostic_status(n, s)
                                for n, s in event.snapshot.cameras.items()]
                    ).serialize())

    def metadata(self) -> dict[str, Any]:
        """The bag's metadata (rosbag2's BagMetadata, version 8) as written into
        metadata.yaml and, serialized, into the MCAP's `rosbag2` Metadata record."""
        n = sum(self._counts.values())

        def span() -> dict[str, Any]:  # new dicts each time: no YAML anchors and aliases
            return {"starting_time": {"nanoseconds_since_epoch": self._first},
                    "duration": {"nanoseconds": self._last - self._first}}

        return {
            "version": METADATA_VERSION, "storage_identifier": "mcap",
            "duration": span()["duration"], "starting_time": span()["starting_time"],
            "message_count": n,
            "topics_with_message_count": [
                {"topic_metadata": {"name": topic, "type": type_name,
                                    "serialization_format": "cdr",
                                    "offered_qos_profiles": qos,
                                    "type_description_hash": rihs01(type_name)},
                 "message_count": self._counts.get(topic, 0)}
                for topic, (_, type_name, qos) in self._channels.items()],
            "compression_format": "", "compression_mode": "",
            "relative_file_paths": [self.path.name],
            "files": [{"path": self.path.name, **span(), "message_count": n}],
            "custom_data": {}, "ros_distro": ROS_DISTRO}

    def _close_file(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            # as Jazzy's rosbag2_storage_mcap (update_metadata) at the end of a recording:
            # opening the .mcap alone (`ros2 bag info FILE`, a reindex) reads it. Humble
            # and Iron wrote {"ROS_DISTRO": ...} here and read nothing back
            self._w.add_metadata("rosbag2", {"serialized_metadata": _yaml(self.metadata())})
            self._w.finish()
        except OSError as e:
            self.errors += 1
            log.error("rosbag: cannot finish %s: %s", self.path, e.strerror or e)
        finally:
            fh.close()

    def close(self) -> None:
        self._close_file()
        try:
            (self.dir / "metadata.yaml").write_text(
                _yaml({"rosbag2_bagfile_information": self.metadata()}))
        except OSError as e:
            self.errors += 1
            log.error("rosbag: cannot write %s/metadata.yaml: %s", self.dir, e.strerror or e)
        log.info("rosbag: %d message(s) on %d topic(s) in %s, %d write error(s)",
                 sum(self._counts.values()), len(self._channels), self.dir, self.errors)
