"""ROS 2 topics over DDS: a Cyclone DDS participant in the daemon, and the sink that
writes each camera's results as standard ROS 2 messages (no ROS runtime needed).

Topics per camera, under `/<namespace>/<camera>/` (ROS 2 names; on the DDS wire each is
`rt/` + the name):

- `mask`: sensor_msgs/msg/Image `mono8`, class ids at camera resolution;
- `mask/compressed`: sensor_msgs/msg/CompressedImage, the same class ids as a lossless
  PNG (image_transport's `compressed` transport, a few KB instead of 300: the topic a
  Fast DDS reader with default socket buffers receives whole, see the README);
- `mask/label_info`: vision_msgs/msg/LabelInfo, segmentation class names (latched);
- `mask_color`: Image `rgb8`, with `ros2.mask_color`; and `mask_color/compressed` (PNG);
- `detections`: vision_msgs/msg/Detection2DArray, one hypothesis per box (class id as
  text, score), `id` = the detection's track id as text ("" when it has none);
- `label_info`: LabelInfo, detection class names (latched);
- `instances`: Image `mono16` for formats with instance masks, pixel = the detection's
  index in `detections` + 1;
- `image/compressed`: sensor_msgs/msg/CompressedImage `jpeg`, with `ros2.image`, at
  most `image_fps`;

and `/diagnostics` (diagnostic_msgs/msg/DiagnosticArray, one status per camera from each
`_stats`). `header.stamp` is the capture time, `header.frame_id` the camera's
`frame_id`. QoS: reliable, volatile (transient local for LabelInfo), which both the
sensor-data profile (best effort) and the default profile (reliable) of a ROS 2
subscriber match; keep last `ros2.history_depth` (10): a reliable reader that lost
fragments of a sample (a 300 KB mask overflows a 212 KB socket buffer) can still have them
repaired after the next frame is written. A message is built, and a PNG
encoded, only while a reader is matched on that topic (LabelInfo always).

Thread ownership: this sink's thread writes; Cyclone DDS has threads of its own, and its
listener callbacks only update the matched counts (a dict assignment).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from cyclonedds._clayer import ddspy_write_ts
from cyclonedds.core import DDSException, Listener
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from edged.outputs.base.draw import encode_jpeg, is_background, mask_colour
from edged.outputs.base.png import with_palette
from edged.outputs.base.ros2msgs import Ros2Error, cdr, msgs
from edged.outputs.base.ros2msgs.convert import detections, diagnostic_status, instance_ids
from edged.outputs.base.ros2msgs.typehash import user_data
from edged.outputs.base.sink import Outcome, Sink
from edged.outputs.ros2.settings import Ros2Config
from edged.results import Result
from edged.telemetry import ControlEvent, StatsReport

log = logging.getLogger("edged.ros2")



def stream_qos(depth: int, max_blocking_ms: int = 100) -> Qos:
    """Results: a few samples kept for reliable readers' repairs (the writer's memory:
    depth x 300 KB for a raw mask)."""
    return Qos(Policy.Reliability.Reliable(duration(milliseconds=max_blocking_ms)),
               Policy.History.KeepLast(depth), Policy.Durability.Volatile)


LATCHED_QOS = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)),
                  Policy.History.KeepLast(1), Policy.Durability.TransientLocal)


# compressed_image_transport's `format` for a PNG (encoding; "png compressed" and, for
# colour, the order of the PNG's channels as OpenCV decodes them): its subscriber decodes
# these as they are
PNG_MONO8 = "mono8; png compressed "
PNG_RGB8 = "rgb8; png compressed bgr8"  # (an indexed PNG: decoders expand it to colour)
def ros_type_name(dds_name: str) -> str:
    """`pkg/msg/T` for the DDS type name `pkg::msg::dds_::T_`."""
    pkg, sub, _, t = dds_name.split("::")
    return f"{pkg}/{sub}/{t.removesuffix('_')}"


def _stamp(t_ns: int) -> msgs.Time:
    return msgs.Time(t_ns // 1_000_000_000, t_ns % 1_000_000_000)


class _Writer:
    """A DataWriter that knows whether any reader is matched."""

    def __init__(self, participant: DomainParticipant, name: str, kind: type,
                 qos: Qos) -> None:
        self.name = name
        self.matched = 0
        self.skipped = 0  # samples not written because the writer was throttled

        def on_matched(_writer: Any, status: Any) -> None:
            self.matched = int(status.current_count)

        self.topic: Topic[Any] = Topic(participant, "rt" + name, kind)
        # the type hash in USER_DATA, as the RMWs of Iron and later announce it (tools
        # such as `ros2 topic info -v` show it; Jazzy's RMWs compare it where both sides
        # have one)
        ros_type = ros_type_name(kind.__idl_typename__)  # type: ignore[attr-defined]
        qos = qos + Qos(Policy.Userdata(user_data(ros_type)))
        self.writer = DataWriter(participant, self.topic, qos=qos,
                                 listener=Listener(on_publication_matched=on_matched))

    def write(self, sample: Any, t_ns: int) -> None:
        self.writer.write(sample, timestamp=t_ns)

    def delete(self) -> None:
        # Cyclone's Python entities stay registered until deleted explicitly
        self.writer.__del__()
        self.topic.__del__()

    def write_cdr(self, data: bytes, t_ns: int) -> None:
        ret = ddspy_write_ts(self.writer._ref, data, t_ns)
        if ret == DDSException.DDS_RETCODE_TIMEOUT:
            # a raw image's writer (no blocking time): its unacknowledged data is over
            # Cyclone's watermark because a reader repairs slowly; skip this sample rather
            # than hold up every other topic of this and later frames
            self.skipped += 1
            return
        if ret < 0:
            raise DDSException(ret, f"writing {self.name}")


@dataclass(slots=True)
class _Camera:
    frame_id: str
    mask: _Writer
    mask_png: _Writer
    mask_labels: _Writer
    detections: _Writer
    labels: _Writer
    instances: _Writer
    mask_color: _Writer | None
    mask_color_png: _Writer | None
    image: _Writer | None
    labels_for: tuple[tuple[str, ...], tuple[str, ...], float | None] | None = None
    next_image_ns: int = 0
    written: dict[str, int] = field(default_factory=dict)


# At deletion Cyclone waits up to WriterLingerDuration (1 s by default) per writer for
# its readers' acknowledgements: with a reader still repairing raw masks a stop took
# seconds. The user's file (or CYCLONEDDS_URI) comes after and may set it again.
EDGED_CYCLONE_XML = ('<CycloneDDS><Domain Id="any"><Internal><WriterLingerDuration>100 ms'
                     '</WriterLingerDuration></Internal></Domain></CycloneDDS>')


def cyclone_config(config: Ros2Config) -> str:
    """Cyclone's configuration: edged's fragment, then `ros2.cyclonedds_config`, else
    CYCLONEDDS_URI (which a Domain made with a configuration does not read itself)."""
    parts = [EDGED_CYCLONE_XML]
    if config.cyclonedds_config is not None:
        parts.append(config.cyclonedds_config.resolve().as_uri())
    elif os.environ.get("CYCLONEDDS_URI", "").strip():
        parts.append(os.environ["CYCLONEDDS_URI"].strip())
    return ",".join(parts)


def domain_id_of(config: Ros2Config) -> int:
    if config.domain_id is not None:
        return config.domain_id
    raw = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 232:
        raise Ros2Error(f"ROS_DOMAIN_ID={raw!r}: expected a number 0-232 (or set "
                        "ros2.domain_id)")
    return int(raw)


class Ros2Sink(Sink):
    name = "ros2"

    def __init__(self, config: Ros2Config, cameras: dict[str, str]) -> None:
        """`cameras`: name -> frame_id."""
        self.config = config
        self.domain_id = domain_id_of(config)
        try:
            # a Domain made first with the XML configures the participant after it
            self._domain: Domain | None = Domain(self.domain_id, config=cyclone_config(config))
            self.participant = DomainParticipant(self.domain_id)
        except DDSException as e:
            where = f" with {config.cyclonedds_config}" if config.cyclonedds_config else ""
            raise Ros2Error(f"ros2: Cyclone DDS cannot start on domain {self.domain_id}"
                            f"{where}: {e}") from None
        self._qos = stream_qos(config.history_depth)
        # the raw images never wait for a slow reader (see _Writer.write_cdr)
        self._raw_qos = stream_qos(config.history_depth, max_blocking_ms=0)
        self._prefix = "/" + config.namespace if config.namespace else ""
        self._frame_ids = dict(cameras)
        self._cams: dict[str, _Camera] = {}
        for name in cameras:
            self._camera(name)
        self.diagnostics = _Writer(self.participant, "/diagnostics", msgs.DiagnosticArray,
                                   self._qos)
        self._lut_for: tuple[str, ...] | None = None
        self._lut_rgb = np.zeros((1, 256, 3), np.uint8)  # class id -> RGB, for cv2.LUT
        self.build_ms: list[float] = []  # per delivery with a reader, for the bench

    def _camera(self, name: str) -> _Camera:
        cam = self._cams.get(name)
        if cam is None:
            p, base, c = self.participant, f"{self._prefix}/{name}", self.config
            cam = self._cams[name] = _Camera(
                self._frame_ids.get(name, name),
                _Writer(p, f"{base}/mask", msgs.Image, self._raw_qos),
                _Writer(p, f"{base}/mask/compressed", msgs.CompressedImage, self._qos),
                _Writer(p, f"{base}/mask/label_info", msgs.LabelInfo, LATCHED_QOS),
                _Writer(p, f"{base}/detections", msgs.Detection2DArray, self._qos),
                _Writer(p, f"{base}/label_info", msgs.LabelInfo, LATCHED_QOS),
                _Writer(p, f"{base}/instances", msgs.Image, self._raw_qos),
                _Writer(p, f"{base}/mask_color", msgs.Image, self._raw_qos)
                if c.mask_color else None,
                _Writer(p, f"{base}/mask_color/compressed", msgs.CompressedImage, self._qos)
                if c.mask_color else None,
                _Writer(p, f"{base}/image/compressed", msgs.CompressedImage, self._qos)
                if c.image else None)
        return cam

    def open(self) -> None:
        log.info("ROS 2 topics on DDS domain %d under %s/<camera>/ (Cyclone DDS%s)",
                 self.domain_id, self._prefix or "", f", {self.config.cyclonedds_config}"
                 if self.config.cyclonedds_config else "")

    # ------------------------------------------------------------------ results

    def deliver(self, outcome: Outcome) -> None:
        r, frame = outcome.result, outcome.frame
        cam = self._camera(r.camera)
        t = r.t_capture_wall_ns
        t0 = time.perf_counter()
        any_reader = False
        self._labels(cam, r, t)
        header = msgs.Header(stamp=_stamp(t), frame_id=cam.frame_id)
        # the detections first: small, and what a robot acts on; the masks' PNG encoding
        # (~1.5 ms) would otherwise delay them (docs/benchmarks.md, "Latency per output")
        if cam.detections.matched:
            cam.detections.write(detections(r, header), t)
            any_reader = True
        raw_colour = cam.mask_color is not None and cam.mask_color.matched
        png_colour = cam.mask_color_png is not None and cam.mask_color_png.matched
        if cam.mask.matched or cam.mask_png.matched or raw_colour or png_colour:
            mask = outcome.mask.camera()
            if mask is not None:
                h, w = mask.shape
                if cam.mask.matched:
                    cam.mask.write_cdr(cdr.image(t, cam.frame_id, h, w, "mono8", w,
                                                 mask.data), t)
                # one PNG encoding for both compressed masks and every other sink (the
                # colour one is the same pixels with a palette)
                png = (outcome.mask.png() or b"") if cam.mask_png.matched or png_colour \
                    else b""
                if cam.mask_png.matched:
                    cam.mask_png.write_cdr(cdr.compressed_image(
                        t, cam.frame_id, PNG_MONO8, png), t)
                if raw_colour or png_colour:
                    self._tables(r.mask_classes)
                if cam.mask_color is not None and raw_colour:
                    rgb = cv2.LUT(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR), self._lut_rgb)
                    cam.mask_color.write_cdr(cdr.image(t, cam.frame_id, h, w, "rgb8", 3 * w,
                                                       rgb.data), t)
                if cam.mask_color_png is not None and png_colour:
                    cam.mask_color_png.write_cdr(cdr.compressed_image(
                        t, cam.frame_id, PNG_RGB8, with_palette(png, self._lut_rgb[0])), t)
                any_reader = True
        if cam.instances.matched and r.detections.instance_masks is not None:
            ids = instance_ids(r)
            h, w = ids.shape
            cam.instances.write_cdr(cdr.image(t, cam.frame_id, h, w, "mono16", 2 * w,
                                              ids.data), t)
            any_reader = True
        due = False
        if cam.image is not None and cam.image.matched and frame is not None:
            due, cam.next_image_ns = image_due(cam.next_image_ns, r.t_capture_mono_ns,
                                               self.config.image_fps)
        if due and cam.image is not None and frame is not None:
            cam.image.write_cdr(cdr.compressed_image(
                t, cam.frame_id, "jpeg", encode_jpeg(frame.image, self.config.quality)), t)
            any_reader = True
        if any_reader and len(self.build_ms) < 100_000:
            self.build_ms.append((time.perf_counter() - t0) * 1e3)

    def _tables(self, classes: tuple[str, ...]) -> None:
        """Class id -> RGB in the view's colours, background classes black: the raw
        colour mask's lookup table (cv2.LUT: 0.3 ms at 640x480 where numpy's fancy
        indexing takes 3.6) and the PNG's palette."""
        if classes != self._lut_for:
            self._lut_rgb[:] = 0
            for i, name in enumerate(classes[:256]):
                if not is_background(name):
                    self._lut_rgb[0, i] = mask_colour(i)[::-1]  # (the view's are BGR)
            self._lut_for = classes

    def _labels(self, cam: _Camera, r: Result, t: int) -> None:
        """LabelInfo once per model (and again after a model switch); transient local, so
        a late joiner gets the last one."""
        key = (r.class_names, r.mask_classes, r.conf_threshold)
        if cam.labels_for == key:
            return
        cam.labels_for = key
        header = msgs.Header(stamp=_stamp(t), frame_id=cam.frame_id)
        # the detections passed this score threshold; the mask has none
        cam.labels.write(msgs.LabelInfo(header=header, class_map=[
            msgs.VisionClass(i, n) for i, n in enumerate(r.class_names)],
            threshold=r.conf_threshold or 0.0), t)
        cam.mask_labels.write(msgs.LabelInfo(header=header, class_map=[
            msgs.VisionClass(i, n) for i, n in enumerate(r.mask_classes)]), t)

    # ------------------------------------------------------------------ statistics

    def control(self, event: ControlEvent) -> None:
        if not isinstance(event, StatsReport) or not self.diagnostics.matched:
            return
        statuses = [diagnostic_status(name, snap)
                    for name, snap in event.snapshot.cameras.items()]
        self.diagnostics.write(msgs.DiagnosticArray(
            header=msgs.Header(stamp=_stamp(event.t_ns), frame_id=""), status=statuses),
            event.t_ns)

    def close(self) -> None:
        if self.build_ms:
            log.info("ros2: built and wrote %d result(s) for readers, %.2f ms median",
                     len(self.build_ms), float(np.median(self.build_ms)))
        skipped = {w.name: w.skipped for cam in self._cams.values()
                   for w in (cam.mask, cam.mask_color, cam.instances)
                   if w is not None and w.skipped}
        if skipped:
            log.info("ros2: raw images skipped while a reader was behind: %s",
                     ", ".join(f"{k} {v}" for k, v in skipped.items()))
        # explicitly, writers first: the Python entities are never garbage-collected, and
        # a domain configured again in this process (a restart, the bench) must be free
        for cam in self._cams.values():
            for w in (cam.mask, cam.mask_png, cam.mask_labels, cam.detections, cam.labels,
                      cam.instances, cam.mask_color, cam.mask_color_png, cam.image):
                if w is not None:
                    w.delete()
        self._cams.clear()
        self.diagnostics.delete()
        self.participant.__del__()
        if self._domain is not None:
            self._domain.__del__()
            self._domain = None


def image_due(next_ns: int, t_ns: int, fps: float) -> tuple[bool, int]:
    """Whether the frame captured at `t_ns` (monotonic) is the next image at `fps`
    (`next_ns`: when the next is due, 0 at first), and when the one after is due.

    Images are due at ideal times one period apart, not a period after the last one sent:
    from a 15 fps camera at 5 fps that is every third frame, where "now + period" waits
    for the fourth (3.75 fps). A frame up to half a period early counts, so jitter in the
    camera's timing does not skip one; after a gap (no reader, a stall) the schedule
    starts again at this frame."""
    period = int(1e9 / fps)
    if t_ns < next_ns - period // 2:
        return False, next_ns
    nxt = next_ns + period
    return True, nxt if t_ns - period // 2 < nxt else t_ns + period
