"""ROS 2 over DDS: a second, real DDS participant (Cyclone DDS) in the test process
subscribes to the daemon's topics with the ROS 2 type definitions and QoS profiles,
decodes every message and checks it against the ZeroMQ stream of the same frames and the
synthetic scene's ground truth. Both sides are pinned to the loopback interface with
multicast off and a unicast peer on 127.0.0.1: no packet leaves the machine."""

from __future__ import annotations

import functools
import os
import random
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from configfile import daemon_config, synthetic
from conftest import ZmqCollector
from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration
from daemonlog import processed_intervals
from daemonrun import run_cli, wait_until

from edged import synth
from edged.outputs.base.ros2msgs import cdr, msgs
from edged.outputs.base.ros2msgs.typehash import user_data

SEED = 38
FIELD = 2
LOOPBACK_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>120</MaxAutoParticipantIndex>
      <Peers><Peer address="127.0.0.1"/></Peers>
    </Discovery>
  </Domain>
</CycloneDDS>
"""
# ROS 2's profiles (rmw_qos_profile_sensor_data, rmw_qos_profile_default)
SENSOR_DATA = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(5),
                  Policy.Durability.Volatile)
DEFAULT = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)),
              Policy.History.KeepLast(10), Policy.Durability.Volatile)
LATCHED = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)),
              Policy.History.KeepLast(1), Policy.Durability.TransientLocal)


@pytest.fixture(scope="module")
def domain(tmp_path_factory) -> tuple[int, Path, DomainParticipant]:
    domain_id, participant = _process_participant()
    xml = tmp_path_factory.mktemp("dds") / "loopback.xml"
    xml.write_text(LOOPBACK_XML)
    return domain_id, xml, participant


@functools.cache
def _process_participant() -> tuple[int, DomainParticipant]:
    """One loopback domain and reader participant per test process. Cyclone refuses a
    second `Domain` for an id that still exists in the process (PRECONDITION_NOT_MET), and
    a module's participant is freed only when the garbage collector gets to it: modules
    that use this fixture (test_all_clients imports it) share one."""
    # a domain of its own, so parallel runs on one machine never meet
    domain_id = random.Random(os.getpid()).randrange(100, 230)
    dom = Domain(domain_id, config=LOOPBACK_XML)
    participant = DomainParticipant(domain_id)
    participant._keep_domain = dom  # type: ignore[attr-defined]
    return domain_id, participant


def _config(tmp_path: Path, domain_id: int, xml: Path, *, camera: str = "front",
            **ros2: Any) -> Path:
    return daemon_config(tmp_path, {camera: synthetic(SEED, frame_id="cam_front_optical")},
                         name="ros2.yaml",
                         ros2={"namespace": "robot/perception", "domain_id": domain_id,
                               "cyclonedds_config": str(xml), "image": True, "image_fps": 2,
                               **ros2})


def _stamp_ns(h: msgs.Header) -> int:
    return h.stamp.sec * 1_000_000_000 + h.stamp.nanosec


def test_cdr_of_the_image_messages_is_byte_for_byte_cyclone_s():
    rng = np.random.default_rng(0)
    for h, w, enc, ch in ((48, 64, "mono8", 1), (5, 7, "rgb8", 3), (3, 9, "mono16", 2)):
        data = rng.integers(0, 255, (h, w * ch), np.uint8)
        ref = msgs.Image(header=msgs.Header(stamp=msgs.Time(1796170577, 914600511),
                                            frame_id="cam_front"), height=h, width=w,
                         encoding=enc, step=w * ch, data=data.tobytes()).serialize()
        ref = ref.ljust((len(ref) + 3) & ~3, b"\0")  # as DataWriter.write pads it
        assert cdr.image(1796170577914600511, "cam_front", h, w, enc, w * ch, data.data) == ref
    ref = msgs.CompressedImage(header=msgs.Header(stamp=msgs.Time(5, 7), frame_id="ab"),
                               format="jpeg", data=b"\xff\xd8xyz").serialize()
    assert cdr.compressed_image(5_000_000_007, "ab", "jpeg", b"\xff\xd8xyz") == \
        ref.ljust((len(ref) + 3) & ~3, b"\0")


def test_ros2_topics_carry_the_results_to_a_dds_reader(tmp_path, start_daemon, domain):
    domain_id, xml, p = domain
    ns = "rt/robot/perception/front"
    # the mask twice: once with each ROS 2 profile a subscriber might use
    readers = {
        "mask_sensor": DataReader(p, Topic(p, f"{ns}/mask", msgs.Image), qos=SENSOR_DATA),
        "mask_default": DataReader(p, Topic(p, f"{ns}/mask", msgs.Image), qos=DEFAULT),
        "mask_png": DataReader(p, Topic(p, f"{ns}/mask/compressed", msgs.CompressedImage),
                               qos=DEFAULT),
        "detections": DataReader(p, Topic(p, f"{ns}/detections", msgs.Detection2DArray),
                                 qos=DEFAULT),
        "image": DataReader(p, Topic(p, f"{ns}/image/compressed", msgs.CompressedImage),
                            qos=SENSOR_DATA),
        "diagnostics": DataReader(p, Topic(p, "rt/diagnostics", msgs.DiagnosticArray),
                                  qos=DEFAULT),
    }
    col = ZmqCollector(f"ipc://{tmp_path}/pub.sock")
    d = start_daemon(_config(tmp_path, domain_id, xml))
    d.wait_for("ready")
    got: dict[str, list] = {k: [] for k in readers}

    def enough() -> bool:
        """Two diagnostics (one a second), four images (image_fps 2) and 20 samples on
        every other topic: enough for the comparisons below (10 masks, 5 balls, 5
        tracked)."""
        for k, r in readers.items():
            got[k].extend(r.take(N=50))
        return all(len(v) >= {"diagnostics": 2, "image": 4}.get(k, 20)
                   for k, v in got.items())

    wait_until("samples on every topic", enough)
    # a late joiner gets the class names (transient local)
    labels = DataReader(p, Topic(p, f"{ns}/label_info", msgs.LabelInfo), qos=LATCHED)
    mask_labels = DataReader(p, Topic(p, f"{ns}/mask/label_info", msgs.LabelInfo), qos=LATCHED)
    late: dict[str, list] = {"labels": [], "mask_labels": []}
    end = time.monotonic() + 60
    while time.monotonic() < end and not (late["labels"] and late["mask_labels"]):
        late["labels"].extend(labels.take(N=5))
        late["mask_labels"].extend(mask_labels.take(N=5))
        time.sleep(0.05)
    # each writer announces its ROS 2 type hash in USER_DATA, as rmw does
    pubs = BuiltinDataReader(p, BuiltinTopicDcpsPublication)
    announced: dict[str, bytes] = {}
    end = time.monotonic() + 60
    while time.monotonic() < end and f"{ns}/mask/compressed" not in announced:
        for e in pubs.take(N=100):
            announced[e.topic_name] = next((q.data for q in e.qos
                                            if isinstance(q, Policy.Userdata)), b"")
        time.sleep(0.05)
    assert d.terminate()[0] == 0
    col.stop(eos=1)
    zmq_msgs = col.by_capture
    assert announced[f"{ns}/mask"] == user_data("sensor_msgs/msg/Image"), announced
    assert announced[f"{ns}/mask/compressed"] == user_data("sensor_msgs/msg/CompressedImage")
    assert announced["rt/diagnostics"].startswith(b"typehash=RIHS01_")
    for k, v in got.items():
        assert v, (k, {k2: len(v2) for k2, v2 in got.items()}, d.log())
    # masks: class ids at camera resolution, the ZeroMQ mask exactly, the scene's field
    checked = 0
    for m in got["mask_sensor"] + got["mask_default"]:
        assert (m.width, m.height, m.encoding, m.step, m.is_bigendian) == \
            (640, 480, "mono8", 640, 0)
        assert m.header.frame_id == "cam_front_optical"
        zm = zmq_msgs.get(_stamp_ns(m.header))
        if zm is None:
            continue
        mask = np.frombuffer(bytes(m.data), np.uint8).reshape(480, 640)
        assert np.array_equal(mask, zm.mask_camera())
        gt = synth.render(SEED, zm.seq, 640, 480).segmentation
        inter = ((mask == FIELD) & (gt == FIELD)).sum()
        assert inter / ((mask == FIELD) | (gt == FIELD)).sum() > 0.9, zm.seq
        checked += 1
    assert checked >= 10, checked
    # the PNG mask: the same class ids, losslessly
    for m in got["mask_png"]:
        zm = zmq_msgs.get(_stamp_ns(m.header))
        assert m.format == "mono8; png compressed " and m.header.frame_id == "cam_front_optical"
        png = cv2.imdecode(np.frombuffer(bytes(m.data), np.uint8), cv2.IMREAD_UNCHANGED)
        if zm is not None:
            assert np.array_equal(png, zm.mask_camera())
    # detections: one per ZeroMQ box, centre and size in camera pixels
    balls = tracked = 0
    for arr in got["detections"]:
        zm = zmq_msgs.get(_stamp_ns(arr.header))
        if zm is None:
            continue
        assert len(arr.detections) == len(zm.boxes)
        for i, (det, box, cid, score) in enumerate(zip(arr.detections, zm.boxes.astype(float),
                                                       zm.class_ids, zm.scores)):
            x1, y1, x2, y2 = box
            c = det.bbox.center.position
            assert (c.x, c.y, det.bbox.size_x, det.bbox.size_y) == \
                ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
            (hyp,) = det.results
            assert hyp.hypothesis.class_id == str(cid)
            assert hyp.hypothesis.score == float(score)
            # the track id, as the ZeroMQ message has it ("" for a detection without one)
            assert zm.track_ids is not None
            tid = int(zm.track_ids[i])
            assert det.id == (str(tid) if tid else "")
            tracked += tid > 0
            assert _stamp_ns(det.header) == zm.t_capture_ns
        gt = synth.render(SEED, zm.seq, 640, 480)
        gb = [b for b, k in zip(gt.boxes, gt.classes) if k == 0]
        ours = [d_.bbox for d_ in arr.detections if d_.results[0].hypothesis.class_id == "0"]
        if gb and ours:
            b, o = gb[0], ours[0]
            ox1, oy1 = o.center.position.x - o.size_x / 2, o.center.position.y - o.size_y / 2
            ix = max(0.0, min(b[2], ox1 + o.size_x) - max(b[0], ox1))
            iy = max(0.0, min(b[3], oy1 + o.size_y) - max(b[1], oy1))
            union = (b[2] - b[0]) * (b[3] - b[1]) + o.size_x * o.size_y - ix * iy
            assert ix * iy / union > 0.5, zm.seq
            balls += 1
    assert balls >= 5, balls
    assert tracked >= 5, tracked  # ids reach ROS 2, not only empty ones
    assert [c.class_name for c in late["labels"][-1].class_map] == ["ball", "goalpost",
                                                                    "robot"]
    assert [c.class_id for c in late["labels"][-1].class_map] == [0, 1, 2]
    assert [c.class_name for c in late["mask_labels"][-1].class_map] == \
        ["background", "lines", "field"]
    # images: JPEG at most image_fps (2), by their capture stamps: the first, then one
    # per 0.5 s slot (the slots keep ideal times, so the first gap may be shorter)
    assert all(i.format == "jpeg" and bytes(i.data[:2]) == b"\xff\xd8" for i in got["image"])
    stamps = sorted(_stamp_ns(i.header) for i in got["image"])
    span_s = (stamps[-1] - stamps[0]) / 1e9
    assert len(stamps) <= span_s * 2 + 2, (len(stamps), span_s)
    st = got["diagnostics"][-1].status[0]
    values = {kv.key: kv.value for kv in st.values}
    assert st.name == "edged: front" and st.level == 0 and values["state"] == "running"
    assert float(values["processed_fps"]) > 0 and "dropped_stale" in values


def test_nothing_is_built_without_a_reader(tmp_path, start_daemon, domain):
    domain_id, xml, _ = domain
    d = start_daemon(_config(tmp_path, domain_id, xml, camera="lonely"))
    d.wait_for("ready")
    # two stats intervals of results with no reader
    wait_until("two stats intervals", lambda: processed_intervals(d.log(), "lonely") >= 2)
    assert d.terminate()[0] == 0
    log = d.log()
    assert "ROS 2 topics on DDS domain" in log
    assert "ros2: built and wrote" not in log, log  # no result was built for anyone


def test_ros2_config_errors(tmp_path, domain):
    domain_id, xml, _ = domain
    cfg = _config(tmp_path, domain_id, xml, camera="front-left")
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 1 and "camera 'front-left': with ros2 on" in p.stderr, p.stderr
    cfg = _config(tmp_path, domain_id, tmp_path / "missing.xml")
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 1 and "Cyclone DDS config not found" in p.stderr, p.stderr
    cfg = _config(tmp_path, domain_id, xml)
    cfg.write_text(cfg.read_text().replace(f"  domain_id: {domain_id}\n", ""))
    p = run_cli("check", "-c", str(cfg), env={**os.environ, "ROS_DOMAIN_ID": "lots"})
    assert p.returncode == 1 and "ROS_DOMAIN_ID='lots'" in p.stderr, p.stderr
    p = run_cli("check", "-c", str(cfg), env={**os.environ, "ROS_DOMAIN_ID": str(domain_id)})
    assert p.returncode == 0 and f"ros2: DDS domain {domain_id}" in p.stdout, p.stderr


def test_record_rosbag_writes_a_bag_rosbags_reads(tmp_path, domain):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    domain_id, xml, _ = domain
    cfg = _config(tmp_path, domain_id, xml)
    bag = tmp_path / "bag"
    p = run_cli("record", "-c", str(cfg), "--duration", "3", "--rosbag", str(bag))
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in bag.iterdir()) == ["bag_0.mcap", "metadata.yaml"]
    ns = "/robot/perception/front"
    # read with rosbags, which knows nothing of edged: vision_msgs come from the bag's
    # own schemas
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        counts = {c.topic: c.msgcount for c in r.connections}
        assert types == {
            f"{ns}/label_info": "vision_msgs/msg/LabelInfo",
            f"{ns}/mask/label_info": "vision_msgs/msg/LabelInfo",
            f"{ns}/mask": "sensor_msgs/msg/Image",
            f"{ns}/detections": "vision_msgs/msg/Detection2DArray",
            f"{ns}/image/compressed": "sensor_msgs/msg/CompressedImage",
            "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
        }, types
        # the QoS `ros2 bag play` will offer: the live writers' (metadata v9 lists)
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in r.connections}
        assert qos[f"{ns}/label_info"].durability.name == "TRANSIENT_LOCAL"
        assert qos[f"{ns}/mask"].durability.name == "VOLATILE"
        assert qos[f"{ns}/mask"].reliability.name == "RELIABLE"
        assert qos[f"{ns}/mask"].depth == 1
        n = counts[f"{ns}/mask"]
        assert n >= 15 and counts[f"{ns}/detections"] == counts[f"{ns}/image/compressed"] == n
        assert counts[f"{ns}/label_info"] == counts[f"{ns}/mask/label_info"] == 1
        masks, dets = {}, {}
        labels = None
        for conn, t, raw in r.messages():
            m = r.deserialize(raw, conn.msgtype)
            if conn.topic == f"{ns}/mask":
                assert t == _stamp_ns(m.header) and m.header.frame_id == "cam_front_optical"
                masks[t] = np.asarray(m.data, np.uint8).reshape(m.height, m.width)
            elif conn.topic == f"{ns}/detections":
                dets[t] = m
            elif conn.topic == f"{ns}/label_info":
                labels = [c.class_name for c in m.class_map]
    assert labels == ["ball", "goalpost", "robot"]
    assert sorted(masks) == sorted(dets)  # a mask and detections for every frame
    assert sorted(masks) == list(masks)  # in capture order
    # the mask is the scene's: the field where the ground truth says field. The bag has no
    # sequence numbers; frame i is scene i unless frames were dropped before it (a loaded
    # machine), so the best of the next few scenes is taken
    def field_iou(mask: np.ndarray, k: int) -> float:
        gt = synth.render(SEED, k, 640, 480).segmentation
        inter = ((mask == FIELD) & (gt == FIELD)).sum()
        return float(inter / ((mask == FIELD) | (gt == FIELD)).sum())

    k = 0
    for mask in masks.values():
        best = max(range(k, k + 6), key=lambda j: field_iou(mask, j))
        assert field_iou(mask, best) > 0.9, (k, best)
        k = best + 1
    # a bag directory is new: an existing one is an error that names it
    p = run_cli("record", "-c", str(cfg), "--duration", "1", "--rosbag", str(bag))
    assert p.returncode == 1 and f"record.dir {bag}: a rosbag2 bag needs a new directory" \
        in p.stderr, p.stderr


def test_instance_ids_and_detections_follow_the_boxes():
    from edged.outputs.base.ros2msgs.convert import detections, instance_ids
    from edged.results import Detections, Result, Tracks

    a = np.zeros((10, 20), np.uint8)
    a[2:8, 3:20] = 1  # x 13-29, y 22-27 in camera pixels
    b = np.ones((6, 6), np.uint8)
    det = Detections(np.array([[10.0, 20.0, 30.0, 30.0], [25.0, 24.0, 31.0, 30.0]], np.float32),
                     np.array([0.9, 0.6], np.float32), np.array([2, 0], np.int32), [a, b])
    r = Result("c", 0, 7, 7, 64, 48, det, ("ball", "goalpost", "robot"), None, (), None)
    ids = instance_ids(r)
    assert ids.dtype == np.uint16 and ids.shape == (48, 64)
    assert ids[22, 13] == 1 and ids[20, 10] == 0  # inside a's mask / in its box, not mask
    assert ids[25, 26] == 2  # a and b overlap here: the later detection is on top
    assert ids[23, 26] == 1  # a alone (b starts at y 24)
    assert set(np.unique(ids)) == {0, 1, 2}
    arr = detections(r, msgs.Header(frame_id="f"))
    assert [d.id for d in arr.detections] == ["", ""]  # tracking off: no ids
    r.tracks = Tracks(0, np.array([0, 12]), np.zeros((2, 2), np.float32), 1)
    assert [d.id for d in detections(r, msgs.Header(frame_id="f")).detections] == ["", "12"]
    assert [d.results[0].hypothesis.class_id for d in arr.detections] == ["2", "0"]
    c = arr.detections[0].bbox
    assert (c.center.position.x, c.center.position.y, c.size_x, c.size_y) == (20, 25, 20, 10)


def test_image_fps_keeps_ideal_times():
    """5 fps from a 15 fps camera is every third frame (a timer restarted at each image
    gave 3.75), whatever the camera's jitter; after a gap the schedule starts again."""
    from edged.outputs.ros2.sink import image_due

    rng = np.random.default_rng(1)
    t0 = 5_000_000_000
    ts = [t0 + round(i * 1e9 / 15 + rng.normal(0, 3e6)) for i in range(150)]  # 10 s
    nxt, sent = 0, []
    for t in ts:
        due, nxt = image_due(nxt, t, 5.0)
        if due:
            sent.append(t)
    # one in three frames: 50 in the 10 s (51 where the last frame, up to half a period
    # early, counts for the image due at 10 s)
    assert len(sent) in (50, 51), len(sent)
    rate = (len(sent) - 1) / ((sent[-1] - sent[0]) / 1e9)
    assert 4.95 < rate < 5.1, rate
    assert (np.diff(sent) > 100e6).all()  # never two frames in a row
    later = t0 + 60_000_000_000  # a minute without frames: no burst to catch up
    due, nxt = image_due(nxt, later, 5.0)
    assert due and not image_due(nxt, later + 66_000_000, 5.0)[0]


def test_diagnostics_level_is_a_byte_as_ros_declares_it(domain):
    """ROS 2 declares DiagnosticStatus.level `byte` (IDL octet). A reader that checks
    types (Cyclone with XTypes) matches edged's writer only with that declaration: one
    built with `uint8` (what edged declared before) matches nothing."""
    from cyclonedds.idl import make_idl_struct
    from cyclonedds.idl.types import sequence, uint8
    from cyclonedds.pub import DataWriter

    uint8_status = make_idl_struct(
        "Uint8Status", "diagnostic_msgs::msg::dds_::DiagnosticStatus_",
        {"level": uint8, "name": str, "message": str, "hardware_id": str,
         "values": sequence[msgs.KeyValue]})
    uint8_array = make_idl_struct(
        "Uint8Array", "diagnostic_msgs::msg::dds_::DiagnosticArray_",
        {"header": msgs.Header, "status": sequence[uint8_status]})

    _, _, p = domain
    name = f"rt/edged_test_diag_{os.getpid()}"
    writer = DataWriter(p, Topic(p, name, msgs.DiagnosticArray), qos=DEFAULT)
    ros = DataReader(p, Topic(p, name, msgs.DiagnosticArray), qos=DEFAULT)
    wrong_topic = Topic(p, name + "_", msgs.DiagnosticArray)
    wrong = DataReader(p, Topic(p, name + "_", uint8_array), qos=DEFAULT)
    wrong_writer = DataWriter(p, wrong_topic, qos=DEFAULT)
    # the barrier: a well-typed reader made after `wrong` matches the same writer, so
    # that writer has considered `wrong` by then
    right = DataReader(p, wrong_topic, qos=DEFAULT)
    end = time.monotonic() + 60
    while time.monotonic() < end and (
            ros.get_subscription_matched_status().current_count < 1
            or right.get_subscription_matched_status().current_count < 1):
        time.sleep(0.05)
    assert ros.get_subscription_matched_status().current_count == 1
    assert right.get_subscription_matched_status().current_count == 1
    assert wrong_writer.get_publication_matched_status().current_count == 1  # `right` only
    assert wrong.get_subscription_matched_status().current_count == 0
    writer.write(msgs.DiagnosticArray(status=[msgs.DiagnosticStatus(level=2, name="x")]))
    end = time.monotonic() + 60
    got: list = []
    while time.monotonic() < end and not got:
        got = ros.take(N=1)
        time.sleep(0.05)
    assert got and got[0].status[0].level == 2
    assert wrong.get_subscription_matched_status().current_count == 0
    del wrong_writer, right


def test_cyclone_config_puts_the_users_settings_after_edgeds(tmp_path, monkeypatch):
    from edged.outputs.ros2.settings import Ros2Config
    from edged.outputs.ros2.sink import EDGED_CYCLONE_XML, cyclone_config

    xml = tmp_path / "dds.xml"
    xml.write_text(LOOPBACK_XML)
    monkeypatch.setenv("CYCLONEDDS_URI", "file:///elsewhere.xml")
    assert cyclone_config(Ros2Config(cyclonedds_config=xml)) == \
        f"{EDGED_CYCLONE_XML},{xml.resolve().as_uri()}"
    assert cyclone_config(Ros2Config()) == f"{EDGED_CYCLONE_XML},file:///elsewhere.xml"
    monkeypatch.delenv("CYCLONEDDS_URI")
    assert cyclone_config(Ros2Config()) == EDGED_CYCLONE_XML
