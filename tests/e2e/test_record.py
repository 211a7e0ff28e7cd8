"""MCAP recording: files read back with the independent `mcap` reader and the Foxglove
protobuf schemas stored in them, checked against the ZeroMQ stream of the same run;
rotation and the size bound; the flight recorder around a missed budget; replay; and a
full or unusable directory (errors named, cameras unaffected)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import msgpack
import numpy as np
import pytest
from configfile import daemon_config, synthetic
from conftest import ZmqCollector
from foxglove_client import _message_class
from mcap.reader import make_reader
from mcap_doctor import doctor
from test_daemon import run_cli

from edged.outputs.base.draw import mask_colour
from edged.outputs.record import decode_wire
from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message, decode

SEED = 38
MB = 1024 * 1024


def _config(tmp_path: Path, record: dict[str, Any], *, budget_ms: float = 10000,
            fps: float = 10, name: str = "rec.yaml") -> Path:
    return daemon_config(tmp_path, {"front": synthetic(SEED, fps=fps)}, name=name,
                         budget={"latency_ms": budget_ms}, record=record)


def _read(path: Path) -> list[tuple[str, str, str, int, bytes, bytes]]:
    """(topic, message encoding, schema name, log time, data, schema data) in file order."""
    out = []
    with open(path, "rb") as fh:
        for schema, channel, message in make_reader(fh).iter_messages(log_time_order=False):
            out.append((channel.topic, channel.message_encoding,
                        schema.name if schema else "", message.log_time, message.data,
                        schema.data if schema else b""))
    return out


def test_a_recording_holds_what_was_published(tmp_path, start_daemon):
    rec = tmp_path / "rec"
    cfg = _config(tmp_path, {"dir": str(rec)})
    col = ZmqCollector(f"ipc://{tmp_path}/pub.sock")
    d = start_daemon(cfg)
    d.wait_for("ready")
    time.sleep(3.0)
    assert d.terminate()[0] == 0
    col.stop()
    files = sorted(rec.iterdir())
    assert len(files) == 1 and files[0].name.endswith(".mcap"), files  # no .part left
    assert re.fullmatch(r"edged-\d{8}T\d{6}\.\d{3}Z\.mcap", files[0].name)
    rows = _read(files[0])
    by: dict[str, list] = {}
    for row in rows:
        by.setdefault(row[0], []).append(row)
    assert {t: (e, s) for t, (_, e, s, *_) in ((t, v[0]) for t, v in by.items())} == {
        "/front/image": ("protobuf", "foxglove.CompressedImage"),
        "/front/mask": ("protobuf", "foxglove.RawImage"),
        "/front/mask_color": ("protobuf", "foxglove.CompressedImage"),
        "/front/annotations": ("protobuf", "foxglove.ImageAnnotations"),
        "/front/edged": ("protobuf", "edged.WireMessage"),
        "/edged/control": ("protobuf", "edged.WireMessage"),
        "/edged/stats": ("json", "edged.Stats"),
    }
    # every channel has a schema a viewer decodes it with: protobuf's own decoder reads
    # the wire channels as edged writes them
    wire_cls = _message_class("edged.WireMessage", _b64(by["/front/edged"][0][5]))
    for r in by["/front/edged"][:3] + by["/edged/control"][:3]:
        assert list(wire_cls.FromString(r[4]).frames) == decode_wire(r[4])
    stats_schema = json.loads(by["/edged/stats"][0][5])
    assert "front" in stats_schema["properties"]["cameras"]["properties"]
    # edged's own messages: exactly what the subscriber received, in order, then the
    # end-of-stream
    wire = [decode(decode_wire(r[4])) for r in by["/front/edged"]]
    results = [m for m in wire if isinstance(m, Message)]
    assert isinstance(wire[-1], EndOfStream) and wire[-1].last_seq == results[-1].seq
    got = {m.seq for m in col.msgs}
    assert got and got <= {m.seq for m in results}
    # the track ids and velocities, as the subscriber got them
    recorded = {m.seq: m for m in results}
    for m in col.msgs:
        r_ = recorded[m.seq]
        assert m.track_ids is not None and r_.track_ids is not None
        assert np.array_equal(m.track_ids, r_.track_ids)
        assert np.array_equal(m.velocities, r_.velocities)
    assert any(m.track_ids is not None and (m.track_ids > 0).any() for m in results)
    # in order (seqs may skip: a frame that a newer one replaced before inference, latest
    # wins under load, has no result anywhere; every result published is recorded, above)
    seqs = [m.seq for m in results]
    assert seqs == sorted(set(seqs))
    for r, m in zip(by["/front/edged"], wire):
        if isinstance(m, Message):
            assert r[3] == m.t_capture_ns  # log time = capture time
    # one image, one mask, one annotation per result, stamped like it
    n = len(results)
    assert len(by["/front/image"]) == len(by["/front/mask"]) == len(by["/front/annotations"]) \
        == len(by["/front/mask_color"]) == n >= 20
    # the colour mask: a PNG in the view's colours of the class ids beside it
    image_cls = _message_class("foxglove.CompressedImage", _b64(by["/front/mask_color"][0][5]))
    for (_, _, _, t, data, _), ids_row in zip(by["/front/mask_color"][:5], by["/front/mask"]):
        img = image_cls.FromString(data)
        assert img.format == "png" and ids_row[3] == t
        ids = zmq_by_t_ids(results, t)
        want = np.zeros((*ids.shape, 3), np.uint8)
        for c in (1, 2):  # the demo model's mask classes: background, lines, field
            want[ids == c] = mask_colour(c)
        assert np.array_equal(cv2.imdecode(np.frombuffer(img.data, np.uint8),
                                           cv2.IMREAD_COLOR), want)
    mask_cls = _message_class("foxglove.RawImage", _b64(by["/front/mask"][0][5]))
    zmq_by_t = {m.t_capture_ns: m for m in results}
    for _, _, _, t, data, _ in by["/front/mask"]:
        mk = mask_cls.FromString(data)
        assert mk.timestamp.seconds * 1_000_000_000 + mk.timestamp.nanos == t
        mask = np.frombuffer(mk.data, np.uint8).reshape(mk.height, mk.width)
        assert np.array_equal(mask, zmq_by_t[t].mask_camera())
    times = [r[3] for r in by["/front/image"]]
    assert times == sorted(times) and times == [m.t_capture_ns for m in results]
    # and the file is sound as `mcap doctor` checks one (CRCs, indexes, statistics,
    # every channel with a schema, log times in order per channel)
    report = doctor(files[0], profile="",
                    encodings={"protobuf": "protobuf", "jsonschema": "json"})
    assert report["messages"] == len(rows)


def zmq_by_t_ids(results: list[Message], t: int) -> np.ndarray:
    (m,) = [m for m in results if m.t_capture_ns == t]
    mask = m.mask_camera()
    assert mask is not None
    return mask


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_files_rotate_and_the_directory_stays_under_max_mb(tmp_path, start_daemon):
    rec = tmp_path / "rec"
    cfg = _config(tmp_path, {"dir": str(rec), "rotate_mb": 0.25, "max_mb": 0.8}, fps=15)
    d = start_daemon(cfg)
    d.wait_for("ready")
    time.sleep(5.0)  # about 2.5 MB of frames and results
    assert d.terminate()[0] == 0
    log = d.log()
    m = re.search(r"recorder: (\d+) file\(s\) written, (\d+) message\(s\), (\d+) write "
                  r"error\(s\), (\d+) old file\(s\) deleted", log)
    assert m, log
    written, errors, deleted = int(m.group(1)), int(m.group(3)), int(m.group(4))
    assert written >= 4 and deleted >= 1 and errors == 0, m.group(0)
    left = sorted(rec.iterdir())
    assert all(p.name.endswith(".mcap") for p in left), left
    assert sum(p.stat().st_size for p in left) <= 0.8 * MB
    assert len(left) == written - deleted
    # each file whole: its summary readable, its frames in capture order, and each file's
    # frames after the previous file's. (A file can hold no frame: the one begun by the
    # last stats or end-of-stream message at stop.)
    last_end = 0
    with_frames = 0
    for p in left:
        rows = _read(p)
        assert rows
        t = [r[3] for r in rows if r[0] == "/front/image"]
        assert t == sorted(t)
        if t:
            assert t[0] > last_end
            last_end = t[-1]
            with_frames += 1
    assert with_frames >= len(left) - 1, [p.name for p in left]


def test_the_flight_recorder_keeps_the_seconds_before_a_missed_budget(tmp_path,
                                                                     start_daemon):
    rec = tmp_path / "rec"
    section = {"dir": str(rec), "trigger": "on_miss", "before_s": 1.5, "after_s": 1}
    cfg = _config(tmp_path, section)
    d = start_daemon(cfg)
    d.wait_for("ready")
    time.sleep(2.5)
    assert list(rec.iterdir()) == []  # nothing missed: nothing written
    t_miss = time.time_ns()
    _config(tmp_path, section, budget_ms=1)  # every frame misses now
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("recorder: front ")
    _config(tmp_path, section)  # and then nothing does
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("reload done", timeout=10)
    time.sleep(2.5)  # after_s passes: the event file is finished
    files = [p for p in rec.iterdir() if p.name.endswith(".mcap")]
    assert len(files) == 1, list(rec.iterdir())
    name = files[0].name
    assert re.fullmatch(r"front-\d{8}T\d{6}\.\d{3}Z-(late|stale)\.mcap", name), name
    rows = _read(files[0])
    images = [r[3] for r in rows if r[0] == "/front/image"]
    # the seconds before the event came from memory: frames captured before the budget
    # changed, at most before_s (and a stats interval, the slowest trigger) earlier
    assert images and images[0] < t_miss, (images[0], t_miss)
    assert t_miss - images[0] <= (1.5 + 1.0 + 0.5) * 1e9
    assert images == sorted(images)
    assert d.terminate()[0] == 0
    # stopping wrote nothing more: the event had ended
    assert [p.name for p in rec.iterdir()] == [name]


def test_replay_publishes_a_recording_with_its_timing(tmp_path):
    rec = tmp_path / "rec"
    p = run_cli("record", "-c", str(_config(tmp_path, {"dir": str(rec)})), "--duration", "2",
                "--no-frames")
    assert p.returncode == 0, p.stderr
    (f,) = list(rec.iterdir())
    rows = [r for r in _read(f) if r[0] == "/front/image"]
    assert rows == []  # --no-frames
    recorded = [decode(decode_wire(r[4])) for r in _read(f) if r[0] == "/front/edged"]
    results = [m for m in recorded if isinstance(m, Message)]
    ep = f"ipc://{tmp_path}/replay.sock"
    got: list[Message | EndOfStream] = []
    arrival: list[float] = []
    with Subscriber(ep) as sub:
        proc = subprocess.Popen([*_edged(), "replay", str(f), "--endpoint", ep],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            m = sub.recv(timeout=0.1)
            if isinstance(m, Message | EndOfStream):
                got.append(m)
                arrival.append(time.monotonic())
                if isinstance(m, EndOfStream):
                    break
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    msgs = [m for m in got if isinstance(m, Message)]
    # the same messages, in order, stamps untouched
    assert [m.seq for m in msgs] == [m.seq for m in results]
    assert [m.t_capture_ns for m in msgs] == [m.t_capture_ns for m in results]
    assert isinstance(got[-1], EndOfStream)
    # with the original spacing: the replay takes as long as the recording did
    span = (results[-1].t_capture_ns - results[0].t_capture_ns) / 1e9
    took = arrival[len(msgs) - 1] - arrival[0]
    assert took >= 0.8 * span, (took, span)
    wire_rows = [r for r in _read(f) if r[2] == "edged.WireMessage"]  # results and control
    assert f"replayed {len(wire_rows)} message(s)" in err, err


def _edged() -> list[str]:
    import sys

    return [sys.executable, "-m", "edged"]


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); a full disk needs one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_logged_and_counted_and_the_camera_goes_on(tmp_path, start_daemon):
    with _tmpfs(tmp_path / "small", "size=400k") as small:
        cfg = _config(tmp_path, {"dir": str(small), "rotate_mb": 5, "max_mb": 10}, fps=15)
        col = ZmqCollector(f"ipc://{tmp_path}/pub.sock")
        d = start_daemon(cfg)
        d.wait_for("ready")
        d.wait_for("recorder: cannot write", timeout=20)
        time.sleep(1.0)
        code, _ = d.terminate()
        col.stop()
        log = d.log()
        assert code == 0
        assert "No space left on device" in log, log
        m = re.search(r"recorder: \d+ file\(s\) written, \d+ message\(s\), (\d+) write", log)
        assert m and int(m.group(1)) >= 1, log
        # the camera never waited for the disk: results kept coming, in order
        seqs = [x.seq for x in col.msgs]
        assert len(seqs) >= 20 and seqs == sorted(seqs)
        assert col.eos and col.eos[0].last_seq == seqs[-1]
        # what was being written when the disk filled is gone, not left half-written
        assert not [p for p in small.iterdir() if p.name.endswith(".part")]


def test_an_unusable_record_dir_fails_check_and_run_alike(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = _config(tmp_path, {"dir": f"{blocker}/rec"})
    p = run_cli("check", "-c", str(cfg))
    want = f"record.dir {blocker}/rec: cannot write there (Not a directory)"
    assert p.returncode == 1 and want in p.stderr, p.stderr
    r = run_cli("run", "-c", str(cfg), "--frames", "1")
    assert r.returncode == 1 and want in r.stderr, r.stderr
    assert "Traceback" not in p.stderr + r.stderr
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        cfg = _config(tmp_path, {"dir": str(ro)})
        p = run_cli("check", "-c", str(cfg))
        assert p.returncode == 1
        assert f"record.dir {ro}: cannot write there (Read-only file system)" in p.stderr
    cfg = _config(tmp_path, {"dir": f"{tmp_path}/ok", "rotate_mb": 50, "max_mb": 10})
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 1 and "record.rotate_mb (50) is more than record.max_mb (10)" \
        in p.stderr, p.stderr


def test_the_flight_recorder_writes_a_stalled_camera_s_last_seconds(tmp_path, start_daemon,
                                                                   mjpeg_server):
    from edged import synth

    server = mjpeg_server(lambda i: synth.render(SEED, i, 320, 240).image, fps=10)
    rec = tmp_path / "rec"
    cfg = tmp_path / "stall.yaml"
    cfg.write_text(f"""\
model:
  path: builtin:yoeo-demo-int8.onnx
  threads: 1
  warmup_runs: 1
cameras:
  door:
    source: {server.url}
    stall_timeout_s: 1
publish:
  endpoints: [ipc://{tmp_path}/pub.sock]
log:
  stats_interval_s: 0.5
record:
  dir: {rec}
  trigger: on_miss
  before_s: 2
  after_s: 0.5
""")
    d = start_daemon(cfg)
    d.wait_for("ready")
    time.sleep(2.5)
    assert list(rec.iterdir()) == []
    t_hang = time.time_ns()
    server.hang.set()  # the camera stops sending without closing
    d.wait_for("recorder: door ", timeout=20)
    server.hang.clear()
    time.sleep(2.0)
    assert d.terminate()[0] == 0
    files = sorted(p.name for p in rec.iterdir())
    assert files and re.fullmatch(r"door-\d{8}T\d{6}\.\d{3}Z-(stall|reconnect)\.mcap",
                                  files[0]), files
    images = [r[3] for r in _read(rec / files[0]) if r[0] == "/door/image"]
    # the seconds before the camera went quiet are in it (before_s 2, from memory)
    assert images and t_hang - int(3e9) <= images[0] < t_hang, (images[:1], t_hang)
    # the stall is noticed stall_timeout_s (1 s) after the hang, so the 2 s kept reach
    # about 1 s before it: 10 frames at 10 fps, at least half of them on a loaded machine
    assert sum(t < t_hang for t in images) >= 5


def test_replay_reads_recordings_of_the_older_msgpack_format(tmp_path):
    """Files written before the wire channels got a protobuf schema carry them as
    `edged.multipart` (a msgpack array of the frames): replay still publishes them."""
    from mcap.writer import Writer
    from test_codec import make_result

    from edged.wire.codec import encode_result

    f = tmp_path / "old.mcap"
    sent = [make_result("front", seq=s) for s in range(3)]
    with open(f, "wb") as fh:
        w = Writer(fh)
        w.start()
        ch = w.register_channel("/front/edged", "edged.multipart", 0)
        for i, r in enumerate(sent):
            frames = [bytes(x) for x in encode_result(r, None)]
            w.add_message(ch, 1_000_000 * (i + 1), msgpack.packb(frames), 1_000_000 * (i + 1))
        w.finish()
    ep = f"ipc://{tmp_path}/old.sock"
    got: list[Message] = []
    with Subscriber(ep) as sub:
        proc = subprocess.Popen([*_edged(), "replay", str(f), "--endpoint", ep],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 20
        while time.monotonic() < end and len(got) < 3:
            m = sub.recv(timeout=0.1)
            if isinstance(m, Message):
                got.append(m)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert [m.seq for m in got] == [0, 1, 2]
    assert "replayed 3 message(s)" in err, err
