"""rosbag2 output as ROS writes it, checked with readers that are not edged's: the type
hashes (RIHS01) against `rosbags`' implementation, hashes published by ROS 2 Jazzy and
those a real rosbag2 recorded."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from configfile import daemon_config, synthetic
from mcap.reader import make_reader
from mcap_doctor import doctor
from test_daemon import run_cli

from edged.outputs.base.ros2msgs import typehash
from edged.outputs.base.ros2msgs.msgdefs import DEFS

DATA = Path(__file__).parents[1] / "data"

# The hashes ROS 2 Jazzy ships (/opt/ros/jazzy/share/<pkg>/msg/<Type>.json,
# `type_hashes[0].hash_string`), as several independent projects quote them (found with a
# code search for the Time hash; none of them is ROS itself).
PUBLISHED = {
    "builtin_interfaces/msg/Time":
        "RIHS01_b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197",
    "std_msgs/msg/Header":
        "RIHS01_f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01",
    "sensor_msgs/msg/Image":
        "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
}


def _rosbags_store() -> Any:
    """rosbags' Jazzy type store, with vision_msgs (not in it) registered from the
    upstream .msg files of the Jazzy release, comments and all."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    upstream = json.loads((DATA / "vision_msgs_4.1.1.json").read_text())["msgs"]
    types = {}
    for name, text in upstream.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def test_type_hashes_are_those_ros_2_computes():
    store = _rosbags_store()
    for name in DEFS:
        # rosbags' own REP-2011 code over its own (or upstream) definitions
        assert typehash.rihs01(name) == store.hash_rihs01(name), name
    for name, want in PUBLISHED.items():
        assert typehash.rihs01(name) == want, name
    # the hashes a real rosbag2 (ros2/rosbag2's test bags, Iron-era rolling) wrote into
    # its channels, from the schema text stored beside them: constants, defaults,
    # comments, bounded strings, byte/bool/string sequences
    real = json.loads((DATA / "rosbag2_jazzy_type_hashes.json").read_text())
    assert len(real) == 4
    for name, r in real.items():
        assert typehash.rihs01_of(name, typehash.parse_schema(name, r["schema"])) == \
            r["topic_type_hash"], (name, r["source"])
    assert typehash.user_data("std_msgs/msg/Header") == \
        f"typehash={PUBLISHED['std_msgs/msg/Header']};".encode()


def test_a_definition_that_cannot_be_read_is_an_error():
    with pytest.raises(KeyError, match="no definition"):
        typehash.rihs01_of("a/msg/B", {"a/msg/B": "C c\n"})
    with pytest.raises(ValueError, match="cannot read"):
        typehash.rihs01_of("a/msg/B", {"a/msg/B": "int32[x y\n"})


# ---------------------------------------------------------------------------- a recording

THRESHOLD = 0.45  # model.conf_threshold in the recording's config


def _config(tmp: Path, threshold: float, record: dict[str, Any] | None = None) -> Path:
    return daemon_config(tmp, {"front": synthetic(38, frame_id="cam_front_optical")},
                         name="bag.yaml", model={"conf_threshold": threshold}, stats_s=0.5,
                         record=record)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bag of one synthetic camera, images on, recorded by the daemon as a user would."""
    tmp = tmp_path_factory.mktemp("rosbag")
    cfg = _config(tmp, THRESHOLD)
    out = tmp / "bag"
    p = run_cli("record", "-c", str(cfg), "--duration", "3", "--rosbag", str(out))
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["bag_0.mcap", "metadata.yaml"]
    return out


TOPICS = {
    "/edged/front/label_info": "vision_msgs/msg/LabelInfo",
    "/edged/front/mask/label_info": "vision_msgs/msg/LabelInfo",
    "/edged/front/mask": "sensor_msgs/msg/Image",
    "/edged/front/detections": "vision_msgs/msg/Detection2DArray",
    "/edged/front/image/compressed": "sensor_msgs/msg/CompressedImage",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def test_payloads_are_exactly_the_cdr_ros_serializes(bag):
    """Each payload deserialized by rosbags and serialized again is the same bytes: no
    trailing padding (a DDS writer's 4-byte alignment), nothing missing."""
    store = _rosbags_store()
    by_topic: dict[str, list[bytes]] = {}
    with open(bag / "bag_0.mcap", "rb") as fh:
        for _, channel, message in make_reader(fh, validate_crcs=True).iter_messages():
            by_topic.setdefault(channel.topic, []).append(message.data)
    assert set(by_topic) == set(TOPICS)
    for topic, payloads in by_topic.items():
        for data in payloads:
            msg = store.deserialize_cdr(data, TOPICS[topic])
            assert store.serialize_cdr(msg, TOPICS[topic]) == data, topic
    # JPEG lengths vary: some images end off a 4-byte boundary, where padding would show
    assert any(len(d) % 4 for d in by_topic["/edged/front/image/compressed"])
    assert len(by_topic["/edged/front/image/compressed"]) >= 15


def test_label_info_carries_the_threshold_in_force(bag):
    from rosbags.highlevel import AnyReader

    got: dict[str, Any] = {}
    with AnyReader([bag], default_typestore=_rosbags_store()) as r:
        for conn, _, raw in r.messages():
            if conn.msgtype == "vision_msgs/msg/LabelInfo":
                got[conn.topic] = r.deserialize(raw, conn.msgtype)
    labels = got["/edged/front/label_info"]
    assert [c.class_name for c in labels.class_map] == ["ball", "goalpost", "robot"]
    assert labels.threshold == np.float32(THRESHOLD)  # float32 in the message
    assert labels.header.frame_id == "cam_front_optical"
    # the class-id mask is an argmax: no threshold
    assert got["/edged/front/mask/label_info"].threshold == 0.0


def test_a_reloaded_threshold_is_recorded_when_it_takes_effect(tmp_path, start_daemon):
    from rosbags.highlevel import AnyReader

    out = tmp_path / "bag"
    record = {"format": "rosbag2", "dir": str(out)}
    d = start_daemon(_config(tmp_path, THRESHOLD, record))
    d.wait_for("ready")
    time.sleep(1.0)
    t_reload = time.time_ns()
    _config(tmp_path, 0.6, record)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("reload done", timeout=30)
    time.sleep(1.0)
    assert d.terminate()[0] == 0
    labels, dets = [], []
    with AnyReader([out], default_typestore=_rosbags_store()) as r:
        for conn, t, raw in r.messages():
            if conn.topic == "/edged/front/label_info":
                labels.append((t, r.deserialize(raw, conn.msgtype).threshold))
            elif conn.topic == "/edged/front/detections":
                dets.append((t, [x.results[0].hypothesis.score
                                 for x in r.deserialize(raw, conn.msgtype).detections]))
    # one LabelInfo per threshold, each from the first frame it applied to
    assert [x for _, x in labels] == [np.float32(THRESHOLD), np.float32(0.6)]
    assert labels[0][0] == dets[0][0] and labels[1][0] > t_reload
    # and the detections on either side passed the threshold recorded for them
    before = [s for t, scores in dets if t < labels[1][0] for s in scores]
    after = [s for t, scores in dets if t >= labels[1][0] for s in scores]
    assert before and min(before) >= THRESHOLD - 1e-6
    assert after and min(after) >= 0.6 - 1e-6


def test_type_hashes_are_where_jazzy_writes_them(bag):
    from rosbags.highlevel import AnyReader

    store = _rosbags_store()
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    for t in meta["topics_with_message_count"]:
        tm = t["topic_metadata"]
        assert tm["type_description_hash"] == store.hash_rihs01(TOPICS[tm["name"]]), tm["name"]
    with open(bag / "bag_0.mcap", "rb") as fh:
        summary = make_reader(fh).get_summary()
    assert summary is not None
    for ch in summary.channels.values():
        assert ch.metadata["topic_type_hash"] == store.hash_rihs01(TOPICS[ch.topic])
    # rosbags reads them as the connection's digest
    with AnyReader([bag], default_typestore=store) as r:
        assert {c.topic: c.digest for c in r.connections} == {
            t: store.hash_rihs01(n) for t, n in TOPICS.items()}


# ------------------------------------------------------------------ metadata.yaml readers

def _scalar(v: Any) -> bool:
    # yaml-cpp's as<std::string>() takes any scalar, not a sequence, a map or a null
    return isinstance(v, str | int | float | bool)


def _uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _qos_times(p: dict[str, Any]) -> None:
    for k in ("deadline", "lifespan", "liveliness_lease_duration"):
        assert _uint(p[k]["sec"]) and _uint(p[k]["nsec"]), k
    assert isinstance(p["avoid_ros_namespace_conventions"], bool)


def humble_reads(info: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """What rosbag2 0.15 (Humble) does with a metadata.yaml's
    `rosbag2_bagfile_information`; an AssertionError where it throws. Its QoS profiles per
    topic. From ros2/rosbag2 branch humble (d256a5ba):
    rosbag2_storage/src/rosbag2_storage/metadata_io.cpp lines 65-76 (TopicMetadata: from
    version 4, `offered_qos_profiles` is `as<std::string>()`), 90-96, 139-146 (files),
    206-228 (BagMetadata: no upper bound on `version`; compression fields from 3, files
    from 5; other keys ignored); rosbag2_transport/src/rosbag2_transport/qos.cpp lines
    82-100 (`ros2 bag play` parses that string: policies `as<int>()`)."""
    version = info["version"]
    assert isinstance(version, int)
    assert _scalar(info["storage_identifier"])
    assert _uint(info["duration"]["nanoseconds"])
    assert _uint(info["starting_time"]["nanoseconds_since_epoch"])
    assert _uint(info["message_count"])
    assert isinstance(info["topics_with_message_count"], list)
    profiles = []
    for t in info["topics_with_message_count"]:
        tm = t["topic_metadata"]
        assert all(_scalar(tm[k]) for k in ("name", "type", "serialization_format"))
        assert _uint(t["message_count"])
        if version >= 4:
            qos = tm["offered_qos_profiles"]
            assert _scalar(qos), f"Humble reads offered_qos_profiles as a string: {qos!r}"
            parsed = yaml.safe_load(str(qos))
            assert isinstance(parsed, list)
            for p in parsed:
                for k in ("history", "reliability", "durability", "liveliness", "depth"):
                    assert isinstance(p[k], int) and not isinstance(p[k], bool), \
                        f"Humble reads QoS {k} as an int: {p[k]!r}"
                _qos_times(p)
            profiles.append(parsed)
    assert all(_scalar(x) for x in info["relative_file_paths"])
    if version >= 3:
        assert _scalar(info["compression_format"]) and _scalar(info["compression_mode"])
    if version >= 5:
        for f in info["files"]:
            assert _scalar(f["path"]) and _uint(f["message_count"])
            assert _uint(f["starting_time"]["nanoseconds_since_epoch"])
            assert _uint(f["duration"]["nanoseconds"])
    return profiles


_POLICY_NAMES = {"history": {"system_default", "keep_last", "keep_all", "unknown"},
                 "reliability": {"system_default", "reliable", "best_effort", "unknown",
                                 "best_available"},
                 "durability": {"system_default", "transient_local", "volatile", "unknown",
                                "best_available"},
                 "liveliness": {"system_default", "automatic", "manual_by_topic", "unknown",
                                "best_available"}}


def jazzy_reads(info: dict[str, Any]) -> list[dict[str, Any]]:
    """What rosbag2 0.26 (Jazzy) does with a metadata.yaml; its topics' metadata. From
    ros2/rosbag2 branch jazzy (64717ee8): rosbag2_storage/include/rosbag2_storage/yaml.hpp
    lines 125-146 (TopicMetadata: from version 9 `offered_qos_profiles` is a list, 4-8 a
    string; `type_description_hash` from 7), 277-307 (BagMetadata: custom_data from 6,
    ros_distro from 8); rosbag2_storage/src/rosbag2_storage/qos.cpp lines 167-205 (a
    profile whose history is an int is read with int policies, else with names)."""
    version = info["version"]
    assert isinstance(version, int)
    assert _uint(info["duration"]["nanoseconds"]) and _uint(info["message_count"])
    topics = []
    for t in info["topics_with_message_count"]:
        tm = t["topic_metadata"]
        qos = tm["offered_qos_profiles"]
        if version >= 9:
            assert isinstance(qos, list), "Jazzy reads a version-9 QoS as a list"
            profiles = qos
        elif version >= 4:
            assert _scalar(qos), "Jazzy reads a version 4-8 QoS as a string"
            profiles = yaml.safe_load(str(qos))
        for p in profiles if version >= 4 else []:
            as_ints = isinstance(p["history"], int) and 0 <= p["history"] <= 3
            for k, names in _POLICY_NAMES.items():
                assert isinstance(p[k], int) if as_ints else p[k] in names, (k, p[k])
            _qos_times(p)
        if version >= 7:
            assert _scalar(tm["type_description_hash"])
        topics.append(tm)
    if version >= 6:
        assert info["custom_data"] is None or all(
            _scalar(k) and _scalar(v) for k, v in info["custom_data"].items())
    if version >= 8:
        assert _scalar(info["ros_distro"])
    return topics


def test_metadata_yaml_is_read_by_humble_and_jazzy(bag, tmp_path):
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    profiles = humble_reads(info)
    topics = jazzy_reads(info)
    assert {t["name"]: t["type"] for t in topics} == TOPICS
    # the live writers' QoS: reliable (1), keep last (1) 1, volatile (2); LabelInfo
    # transient local (1)
    by_name = dict(zip([t["name"] for t in topics], profiles, strict=True))
    assert [(p["reliability"], p["history"], p["depth"]) for p in by_name["/edged/front/mask"]] \
        == [(1, 1, 1)]
    assert by_name["/edged/front/mask"][0]["durability"] == 2
    assert by_name["/edged/front/label_info"][0]["durability"] == 1
    # and rosbags, reading the same integers, sees the same policies
    from rosbags.highlevel import AnyReader

    with AnyReader([bag], default_typestore=_rosbags_store()) as r:
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in r.connections}
    assert (qos["/edged/front/mask"].reliability.name, qos["/edged/front/mask"].durability.name,
            qos["/edged/front/mask"].history.name) == ("RELIABLE", "VOLATILE", "KEEP_LAST")
    assert qos["/edged/front/label_info"].durability.name == "TRANSIENT_LOCAL"
    assert qos["/edged/front/mask"].liveliness.name == "AUTOMATIC"
    assert info["relative_file_paths"] == ["bag_0.mcap"]
    assert info["files"][0]["path"] == "bag_0.mcap"
    assert info["ros_distro"] == "jazzy"
    # the counts are the file's
    with open(bag / "bag_0.mcap", "rb") as fh:
        summary = make_reader(fh).get_summary()
    assert summary is not None and summary.statistics is not None
    stats = summary.statistics
    assert info["message_count"] == info["files"][0]["message_count"] == stats.message_count
    assert info["starting_time"]["nanoseconds_since_epoch"] == stats.message_start_time
    assert info["duration"]["nanoseconds"] == stats.message_end_time - stats.message_start_time
    # the rules are not vacuous: a version-9 file (as Jazzy and rosbags write it) is
    # one Humble cannot read
    from rosbags.rosbag2 import Writer

    store = _rosbags_store()
    with Writer(tmp_path / "v9", version=9) as w:
        conn = w.add_connection("/s", "std_msgs/msg/String", typestore=store)
        w.write(conn, 1, store.serialize_cdr(store.types["std_msgs/msg/String"]("x"),
                                             "std_msgs/msg/String"))
    v9 = yaml.safe_load((tmp_path / "v9" / "metadata.yaml").read_text())
    jazzy_reads(v9["rosbag2_bagfile_information"])
    with pytest.raises(AssertionError, match="Humble reads offered_qos_profiles as a string"):
        humble_reads(v9["rosbag2_bagfile_information"])


def test_the_mcap_holds_the_rosbag2_metadata_record(bag):
    with open(bag / "bag_0.mcap", "rb") as fh:
        reader = make_reader(fh, validate_crcs=True)
        records = [m for m in reader.iter_metadata() if m.name == "rosbag2"]
    assert len(records) == 1
    assert set(records[0].metadata) == {"serialized_metadata"}  # as Jazzy's plugin writes
    serialized = yaml.safe_load(records[0].metadata["serialized_metadata"])
    # the BagMetadata itself (no rosbag2_bagfile_information around it), equal to the
    # metadata.yaml's, readable by both distributions' rules
    on_disk = yaml.safe_load((bag / "metadata.yaml").read_text())
    assert serialized == on_disk["rosbag2_bagfile_information"]
    humble_reads(serialized)
    jazzy_reads(serialized)


# ------------------------------------------------------------------ an mcap doctor

def test_the_mcap_passes_a_doctor(bag):
    report = doctor(bag / "bag_0.mcap")
    assert report["metadata"] == ["rosbag2"]
    assert set(report["channels"]) == set(TOPICS)
    assert report["schemas"] == set(TOPICS.values())
    # and the mcap package's own reader, CRCs checked, agrees
    with open(bag / "bag_0.mcap", "rb") as fh:
        n = sum(1 for _ in make_reader(fh, validate_crcs=True).iter_messages())
    assert n == report["messages"]


def test_the_doctor_finds_damage(bag, tmp_path):
    buf = bytearray((bag / "bag_0.mcap").read_bytes())
    buf[len(buf) // 3] ^= 0x01  # one bit, in a chunk
    (tmp_path / "damaged.mcap").write_bytes(bytes(buf))
    with pytest.raises(AssertionError, match="data section CRC"):
        doctor(tmp_path / "damaged.mcap")


def _same(a: Any, b: Any, where: str) -> None:
    """rosbags' message `a` and mcap_ros2's `b` hold the same values, field by field."""
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            # ROS 2 field names are lower case, constants (class attributes here) upper
            if f.name != "__msgtype__" and not f.name.isupper():
                _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, np.frombuffer(b, a.dtype) if isinstance(b, bytes)
                              else np.asarray(b, a.dtype)), where
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_foxglove_s_ros2_decoder_reads_the_same(bag):
    """A third decoder, Foxglove's (`mcap-ros2-support`: its own .msg parser and CDR
    reader, what Foxglove's Python tooling uses), gets the values rosbags gets."""
    from mcap_ros2.decoder import DecoderFactory

    store = _rosbags_store()
    n = 0
    with open(bag / "bag_0.mcap", "rb") as fh:
        reader = make_reader(fh, validate_crcs=True, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema is not None
            ref = store.deserialize_cdr(message.data, schema.name)
            _same(ref, decoded, channel.topic)
            n += 1
    assert n >= 60
