"""Issue 29, "Nothing silent, nothing lost": what a hostile or unlucky user broke, one
test per numbered case (named for it), each through the real command or daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_daemon import write_config
from test_reload import cams, count, gather

from edged.wire.client import Subscriber
from edged.wire.codec import Message

REPO = Path(__file__).resolve().parents[2]


def edged(*args: str, timeout: float = 120, cwd: Path | None = None,
          memory_gb: float | None = None) -> subprocess.CompletedProcess[str]:
    """`edged ARGS` as a user runs it: its exit code, stdout and stderr. `memory_gb`
    bounds its address space, so a regression fails as a MemoryError instead of taking
    the machine's memory."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("EDGED_TRACEBACK", None)

    def limit() -> None:
        if memory_gb is not None:
            import resource

            cap = int(memory_gb * (1 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd, preexec_fn=limit)


def one_user_error(res: subprocess.CompletedProcess[str], command: str, *needles: str) -> str:
    """The command failed (non-zero) with one line on stderr naming the problem, neither
    'internal error' nor a traceback nor OpenCV's own assertion text."""
    err = res.stderr
    assert res.returncode != 0, (res.returncode, res.stdout, err)
    assert "internal error" not in err and "Traceback" not in err, err
    assert "OpenCV" not in err and "Assertion" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    # argparse adds its usage lines before the one error line
    errors = [ln for ln in lines if ln.startswith(f"edged {command}")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], (needle, err)
    return errors[0]


# --------------------------------------------------------------------------- case 7


@pytest.mark.parametrize(("args", "needles"), [
    (("echo", "--connect", "bogus://x", "--timeout", "1"), ("--connect", "bogus://x")),
    (("echo", "--camera", "a/b", "--timeout", "1"), ("--camera", "a/b")),
    (("echo", "--connect", "tcp://:0", "--timeout", "1"), ("--connect", "tcp://:0")),
    (("echo", "--connect", "tcp://127.0.0.1:99999", "--timeout", "1"), ("99999",)),
    (("replay", "/dev/zero"), ("/dev/zero: not a regular file",)),
    (("echo", "--count", "0"), ("--count",)),
    (("echo", "--timeout", "-1"), ("--timeout",)),
    (("replay", "--speed", "nan", "x.mcap"), ("--speed", "nan")),
    (("replay", "--speed", "0", "x.mcap"), ("--speed",)),
    (("record", "--duration", "-1"), ("--duration", "-1")),
    (("record", "--frames", "0"), ("--frames",)),
    (("run", "--duration", "inf"), ("--duration", "inf")),
    (("synth-video", "/proc/edged-test/x.avi", "--frames", "2"), ("/proc/edged-test/x.avi",)),
    (("synth-video", "out.mp4", "--frames", "2"), ("out.mp4", ".avi")),
    (("synth-video", "out.avi", "--width", "100000"), ("--width",)),
    (("eval", "--model", "m.onnx", "--conf", "nan"), ("--conf",)),
])
def test_case7_commands_validate_their_arguments(tmp_path, args, needles):
    res = edged(*args, timeout=60, cwd=tmp_path)
    one_user_error(res, args[0], *needles)
    assert not (tmp_path / "out.mp4").exists()


# --------------------------------------------------------------------------- case 4


def test_case4_config_file_read_with_a_size_bound(tmp_path):
    res = edged("check", "-c", "/dev/zero", timeout=60, memory_gb=3)
    one_user_error(res, "check")
    assert "/dev/zero: not a regular file" in res.stderr, res.stderr
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)  # 2 MB of comments: valid YAML, too large
    res = edged("check", "-c", str(big), timeout=60, memory_gb=3)
    assert res.returncode == 1 and "internal error" not in res.stderr, res.stderr
    assert f"{big}: the config file is larger than 1048576 bytes" in res.stderr, res.stderr


@pytest.mark.parametrize("kind", ["flow", "block", "aliases"])
def test_case4_deeply_nested_yaml_is_a_located_error(tmp_path, kind):
    cfg = tmp_path / "deep.yaml"
    if kind == "flow":
        cfg.write_text("model: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
        where = f"{cfg}:1:"
    elif kind == "block":
        cfg.write_text("model:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(200))
                       + "  " * 201 + "v: 1\n")
        where = f"{cfg}:"
    else:  # each anchor stays within the bound, their expansion does not
        text = "a0: &a0 [1]\n"
        for i in range(1, 30):
            text += f"a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40 + "\n"
        cfg.write_text(text)
        where = f"{cfg}:"
    res = edged("check", "-c", str(cfg), timeout=60, memory_gb=3)
    assert res.returncode == 1, res
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert where in res.stderr and "nested more than 64 levels deep" in res.stderr, res.stderr


# --------------------------------------------------------------------------- case 3

HUGE = """\
  huge:
    source: synthetic
    width: 100000
    height: 100000"""


@pytest.mark.parametrize("command", ["check", "run"])
def test_case3_huge_camera_size_refused_by_check_and_run(tmp_path, test_model, tcp_endpoint,
                                                          command):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(a=10) + "\n"
                       + HUGE + "\n  wide:\n    source: synthetic\n    width: 5000\n"
                       "    height: 5000\n  fast:\n    source: synthetic\n    fps: 1e9")
    res = edged(command, "-c", str(cfg), timeout=120, memory_gb=4)
    assert res.returncode == 1, (res.returncode, res.stderr)
    err = res.stderr
    assert "internal error" not in err and "MemoryError" not in err, err
    for line in (f"{cfg}:13: cameras.huge.width: Input should be less than or equal to 16384",
                 f"{cfg}:14: cameras.huge.height: Input should be less than or equal to 16384",
                 f"{cfg}:15: cameras.wide: a synthetic camera renders at most 8294400 pixels",
                 f"{cfg}:21: cameras.fast.fps: Input should be less than or equal to 1000"):
        assert line in err, (line, err)


def test_case3_reload_with_a_huge_camera_is_refused_and_the_old_one_kept(
        tmp_path, test_model, tcp_endpoint, start_daemon):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(a=10))
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready", timeout=120)
        before = [m for m in gather(sub, 0, until=count("a", 3), limit=60)
                  if isinstance(m, Message)]
        cfg.write_text(cfg.read_text().replace("width: 160", "width: 100000")
                       .replace("height: 120", "height: 100000"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("reload rejected", timeout=60)
        after = [m for m in gather(sub, 0, until=count("a", 5), limit=60)
                 if isinstance(m, Message)]
        assert d.terminate(timeout=30)[0] == 0
    log = d.log()
    assert "cameras.a.width: Input should be less than or equal to 16384" in log, log
    assert "reload done" not in log and "Traceback" not in log and "MemoryError" not in log
    # the running camera was never touched: its sequence numbers just continue
    assert before and len(after) >= 5 and after[0].seq > before[-1].seq
    assert all((m.frame_w, m.frame_h) == (160, 120) for m in after)


# --------------------------------------------------------------------------- case 5

GOOD_MANIFEST = {"format": "yoeo", "input_name": "InputLayer",
                 "outputs": {"detections": "Detections", "segmentation": "Segmentations"},
                 "classes": ["ball", "goalpost", "robot"],
                 "seg_classes": ["background", "lines", "field"]}


@pytest.fixture
def manifest_model(tmp_path, test_model) -> Path:
    model = tmp_path / "m.onnx"
    shutil.copyfile(test_model, model)
    return model


@pytest.mark.parametrize(("change", "needles"), [
    ({"outputs": {"detections": "Dets", "segmentation": "Segmentations"}},
     ("'detections' = 'Dets' is not a graph output",)),
    ({"input_name": "image"}, ("input_name:", "'image' is not a graph input")),
    ({"conf_threshold": "high"}, ("conf_threshold: must be a number", "'high'")),
    ({"conf_threshold": 7}, ("conf_threshold: Input should be less than or equal to 1",)),
    ({"iou_threshold": float("nan")}, ("iou_threshold:",)),
    ({"seg_classes": "field"}, ("seg_classes: must be a list", "'field'")),
    ({"classes": []}, ("classes: an empty list names no class",)),
    ({"seg_classes": []}, ("seg_classes: an empty list names no class",)),
    ({"classes": ["ball", 3]}, ("classes[1]: must be a string",)),
    ({"classes": ["ball", "ball"]}, ("classes: the same name twice: ball",)),
    ({"max_detections": 10**9}, ("max_detections:",)),
    ({"multi_label": "yes"}, ("multi_label: must be true or false",)),
    ({"preprocess": {"input_w": "416"}}, ("preprocess.input_w: must be a whole number",)),
    ({"preprocess": {"input_w": 0}}, ("preprocess.input_w:",)),
    ({"preprocess": {"mean": [1, 2]}}, ("preprocess.mean:",)),
    ({"preprocess": {"colour": "rgb"}}, ("unknown key in 'preprocess': colour",)),
    ({"options": {"mask_threshold": "0.5"}}, ("options.mask_threshold: must be a number",)),
    ({"session": {"disabled_optimizers": "NhwcTransformer"}},
     ("session.disabled_optimizers: must be a list",)),
    ({"format": 5}, ("format: must be a string",)),
])
def test_case5_bad_manifest_is_one_line_naming_file_and_key(manifest_model, change, needles):
    from edged.inference.runner import ModelError, ModelOptions, ModelRunner

    mpath = manifest_model.with_suffix(".json")
    mpath.write_text(json.dumps(GOOD_MANIFEST | change))
    with pytest.raises(ModelError) as info:
        ModelRunner(ModelOptions(path=manifest_model, threads=1))
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{mpath}:"), text
    for needle in needles:
        assert needle in text, (needle, text)


def test_case5_good_manifest_still_loads(manifest_model):
    from edged.inference.runner import ModelOptions, ModelRunner

    manifest_model.with_suffix(".json").write_text(json.dumps(GOOD_MANIFEST))
    runner = ModelRunner(ModelOptions(path=manifest_model, threads=1))
    assert runner.manifest.classes == ("ball", "goalpost", "robot")
    assert runner.manifest.seg_classes == ("background", "lines", "field")


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"[" * 100_000, b""])
def test_case5_binary_or_broken_manifest_through_edged_check(tmp_path, manifest_model, content):
    mpath = manifest_model.with_suffix(".json")
    mpath.write_bytes(content)
    cfg = write_config(tmp_path / "cfg.yaml", manifest_model, ["tcp://127.0.0.1:1"], cams(a=10))
    res = edged("check", "-c", str(cfg), timeout=120)
    line = one_user_error(res, "check", str(mpath))
    assert "internal error" not in line and "UnicodeDecodeError" not in line, line


# --------------------------------------------------------------------------- case 6


def test_case6_frames_of_extreme_shape_are_served(tmp_path, test_model, tcp_endpoint,
                                                  start_daemon):
    import cv2
    import numpy as np

    folder = tmp_path / "slivers"
    folder.mkdir()
    sizes = {(1, 4000), (4000, 1), (2, 9000), (1, 1)}  # (width, height)
    for i, (w, h) in enumerate(sorted(sizes)):
        img = np.full((h, w, 3), 40 * i + 20, np.uint8)
        assert cv2.imwrite(str(folder / f"{i}.png"), img)
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], f"""\
  sliver:
    source: {folder}
    type: images
    fps: 20""")
    seen: dict[tuple[int, int], Message] = {}
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready", timeout=120)
        end = time.monotonic() + 120
        while set(seen) != sizes and time.monotonic() < end:
            m = sub.recv(timeout=0.2)
            if isinstance(m, Message):
                seen[(m.frame_w, m.frame_h)] = m
        assert d.terminate(timeout=30)[0] == 0
    assert set(seen) == sizes, (sorted(seen), d.log())
    for (w, h), m in seen.items():
        assert np.isfinite(m.boxes).all() and np.isfinite(m.scores).all()
        assert (m.boxes[:, 0::2] <= w).all() and (m.boxes[:, 1::2] <= h).all()
        assert m.mask is not None and m.mask.size > 0
    log = d.log()
    assert "inference failed" not in log and "resize" not in log, log


# --------------------------------------------------------------------------- case 2


def _replay(path: Path, endpoint: str) -> tuple[subprocess.CompletedProcess[str], list[Message]]:
    """`edged replay PATH` run to its end, with what a subscriber received."""
    got: list[Message] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen([sys.executable, "-m", "edged", "replay", str(path),
                                 "--endpoint", endpoint, "--speed", "20"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            m = sub.recv(timeout=0.1)
            if isinstance(m, Message):
                got.append(m)
            elif m is None and proc.poll() is not None:
                break
        out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), got


def test_case2_recording_cut_by_sigkill_replays_what_it_holds(tmp_path, test_model,
                                                              tcp_endpoint, start_daemon):
    from conftest import ZmqCollector

    rec = tmp_path / "rec"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(a=20),
                       f"record:\n  dir: {rec}\n")
    col = ZmqCollector(tcp_endpoint)
    d = start_daemon(cfg)
    d.wait_for("ready", timeout=120)
    end = time.monotonic() + 120
    while len(col.msgs) < 60 and time.monotonic() < end:
        time.sleep(0.05)
    d.proc.kill()  # SIGKILL: no summary, no rename, whatever was buffered is gone
    d.proc.wait(30)
    col.stop()
    published = sorted(m.seq for m in col.msgs)
    assert len(published) >= 60, d.log()
    (part,) = list(rec.iterdir())
    assert part.name.endswith(".mcap.part"), part
    res, got = _replay(part, f"ipc://{tmp_path}/replay.sock")
    assert res.returncode == 0, res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    seqs = [m.seq for m in got]
    m = re.search(r"recovered (\d+) message\(s\); the file stops being readable at byte "
                  r"(\d+) of (\d+) \(", res.stderr)
    assert m, res.stderr
    assert int(m.group(2)) <= int(m.group(3)) == part.stat().st_size
    # every recovered message (results and control) was replayed, the results received
    assert f"replayed {m.group(1)} message(s)" in res.stderr, res.stderr
    assert 0 < len(got) <= int(m.group(1))
    # what was recovered is the recording from its start, in order, without a hole: every
    # result published in its span is there (seqs themselves may skip: a frame a newer
    # one replaced before inference, latest wins under load, has no result anywhere) ...
    assert seqs and seqs == sorted(set(seqs)), seqs
    assert {q for q in published if seqs[0] <= q <= seqs[-1]} <= set(seqs), (seqs, published)
    assert seqs[0] == published[0] or seqs[0] == 0
    # ... up to the last moments: chunks are written at least every second, so a SIGKILL
    # costs about a second of results plus what the recorder had not yet been handed
    lost_s = (max(m.t_capture_ns for m in col.msgs) - got[-1].t_capture_ns) / 1e9
    assert lost_s <= 3.0, (lost_s, seqs[-1], published[-1])


def _write_recording(path: Path, n: int = 50) -> None:
    """A finished edged MCAP file of `n` small wire messages, one chunk each few."""
    import msgpack
    from mcap.writer import CompressionType, Writer

    with open(path, "wb") as fh:
        w = Writer(fh, compression=CompressionType.ZSTD, chunk_size=2048)
        w.start(profile="", library="test")
        ch = w.register_channel("/a/edged", "edged.multipart", 0)
        for i in range(n):
            w.add_message(ch, 1_000_000 * i, msgpack.packb([b"a/r", bytes([i]) * 100]),
                          1_000_000 * i)
        w.finish()


@pytest.mark.parametrize("kind", ["empty", "garbage", "magic only", "text"])
def test_case2_empty_or_garbage_file_is_one_user_error(tmp_path, kind):
    f = tmp_path / "x.mcap"
    f.write_bytes({"empty": b"", "garbage": bytes(range(256)) * 40,
                   "magic only": b"\x89MCAP0\r", "text": b"hello\n" * 1000}[kind])
    res = edged("replay", str(f), "--endpoint", f"ipc://{tmp_path}/r.sock", timeout=60)
    line = one_user_error(res, "replay", str(f))
    assert "EndOfFile" not in line and "InvalidMagic" not in line, line


def test_case2_replay_recovers_a_file_cut_at_any_byte(tmp_path):
    """Every cut of a finished file (and a few damaged bytes) reads up to the damage:
    some messages or a RecordError, never another exception."""
    import random

    from edged.outputs.record import RecordError
    from edged.outputs.record.replay import recover

    whole = tmp_path / "whole.mcap"
    _write_recording(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mcap.part"
    rng = random.Random(29)
    best = 0
    for size in sorted({*range(0, 64), *rng.sample(range(64, len(data)), 150)}):
        damaged = bytearray(data[:size])
        if size % 3 == 0 and size > 100:  # and some flipped bytes inside
            for _ in range(3):
                damaged[rng.randrange(8, size)] ^= 0xFF
        cut.write_bytes(bytes(damaged))
        with open(cut, "rb") as fh:
            try:
                found, rec = recover(fh, cut)
            except RecordError as e:
                assert str(e).startswith(f"{cut}: "), e
                continue
        assert rec.messages == len(found) and rec.good_bytes <= size
        if size % 3:
            # an undamaged prefix gives its messages in order
            assert [t for t, *_ in found] == [1_000_000 * i for i in range(len(found))]
            best = max(best, len(found))
    assert best >= 40  # the long cuts keep most of the 50


def test_case2_recorder_hands_its_chunks_to_the_file_as_it_goes(tmp_path, monkeypatch):
    """The recorder's file, read while still open (as a SIGKILL would leave it), holds
    every message written before the last flush interval: here, with the interval at 0,
    every message."""
    import msgpack

    from edged.outputs.record import files
    from edged.outputs.record.replay import recover

    monkeypatch.setattr(files, "FLUSH_EVERY_S", 0.0)
    f = files.McapFile(tmp_path / "r.mcap")
    try:
        for i in range(5):
            f.write("/a/edged", "edged.multipart", None, 1000 + i,
                    msgpack.packb([b"a/r", b"x" * 10]))
        with open(f.part, "rb") as fh:
            found, rec = recover(fh, f.part)
        assert [t for t, *_ in found] == [1000, 1001, 1002, 1003, 1004], rec
    finally:
        f.close()


# --------------------------------------------------------------------------- case 1


def _inf_rows(all_rows: bool):
    import numpy as np
    from modelgen import PLANTED_ROWS

    rows = PLANTED_ROWS.copy()
    if all_rows:
        rows[:, 2] = np.inf  # every box's width: x1/x2 become NaN
        rows[:, 5:] = np.inf  # and every class score: the product is inf
    else:
        rows[0, 2] = np.inf  # the ball's width
        rows[2, 5] = np.inf  # the goalpost's ball score
        rows[4, 4] = -np.inf  # the robot's objectness: below every threshold, like NaN
        rows[3, 0] = np.nan  # a row under the threshold anyway
    return rows


def test_case1_model_with_some_inf_rows_drops_and_counts_them(tmp_path):
    """In-process, numpy warnings as errors: the finite rows come out as before, the
    Inf ones are dropped before any arithmetic and counted."""
    import warnings

    import numpy as np
    from modelgen import yoeo_model

    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.results import Frame

    model = yoeo_model(tmp_path / "inf.onnx", rows=_inf_rows(all_rows=False))
    runner = ModelRunner(ModelOptions(path=model, threads=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning fails the test
        res = runner.infer(Frame("a", 0, np.zeros((480, 640, 3), np.uint8), 0, 0))
    assert res.nonfinite == 2 and not res.nonfinite_only
    assert np.isfinite(res.detections.boxes).all() and np.isfinite(res.detections.scores).all()
    # the duplicate ball (0.8 x 0.9), which NMS removed before, is the only ball left
    assert [round(float(s), 3) for s in res.detections.scores] == [0.72]


def test_case1_model_with_inf_outputs_publishes_finite_results_and_reports_model_error(
        tmp_path, tcp_endpoint, start_daemon):
    import urllib.request

    import numpy as np
    from conftest import free_port
    from modelgen import yoeo_model

    from edged.wire.codec import EndOfStream
    from edged.wire.telemetry import CameraState, Stats

    model = yoeo_model(tmp_path / "inf.onnx", rows=_inf_rows(all_rows=True))
    port = free_port()
    cfg = write_config(tmp_path / "cfg.yaml", model, [tcp_endpoint], cams(a=10),
                       extra=f'  metrics: "127.0.0.1:{port}"\n')
    cfg.write_text(cfg.read_text().replace("  threads: 1\n", "  threads: 1\n  format: yoeo\n"))
    msgs: list[Message] = []
    states: list[CameraState] = []
    stats: list[Stats] = []
    with Subscriber(tcp_endpoint, states=True, stats=True) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready", timeout=120)
        end = time.monotonic() + 120

        def done() -> bool:
            return (len(msgs) >= 30 and any(s.state == "model_error" for s in states)
                    and any(st.snapshots["a"].state == "model_error"
                            and st.snapshots["a"].model_output.nonfinite_frames >= 3
                            for st in stats if "a" in st.snapshots))

        while not done() and time.monotonic() < end:
            m = sub.recv(timeout=0.2)
            if isinstance(m, Message):
                msgs.append(m)
            elif isinstance(m, CameraState):
                states.append(m)
            elif isinstance(m, Stats):
                stats.append(m)
            assert not isinstance(m, EndOfStream)
        malformed = sub.malformed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            metrics = r.read().decode()
        assert d.terminate(timeout=30)[0] == 0
    log = d.log()
    assert done(), (len(msgs), states, log)
    # what went out decodes with edged's own Subscriber: nothing malformed, all finite
    assert malformed == 0, log
    for m in msgs:
        assert len(m.scores) == 0 and np.isfinite(m.boxes).all() and m.mask is not None
    error = next(s for s in states if s.state == "model_error")
    assert "NaN/Inf" in error.detail, error
    snap = next(st.snapshots["a"] for st in reversed(stats) if "a" in st.snapshots)
    # 4 of the 5 planted rows pass the objectness threshold: each frame drops them
    assert snap.model_output.nonfinite_rows == 4 * snap.model_output.nonfinite_frames
    assert re.search(r'edged_nonfinite_total\{camera="a",kind="rows"\} [1-9]', metrics), metrics
    assert 'edged_camera_up{camera="a",state="model_error"} 0' in metrics, metrics
    # said once (rate-limited), never as numpy's raw warning with source code
    assert log.count("the model's output is NaN/Inf") == 1, log
    assert "RuntimeWarning" not in log and "Traceback" not in log, log


def _inf_format_model(fmt: str, path: Path) -> tuple[Path, int]:
    """A model of `fmt` (tests/formatgen.py) with Inf planted in one of its detections
    that would otherwise be published; the detections it still gives."""
    import formatgen as fg
    import numpy as np

    if fmt == "yolo":
        table = fg.yolo_table("rows", masks=0)
        table[0, fg.YOLO_PLANTED[2][0], 2] = np.inf  # the person's width
        return fg.const_model(path, [("output0", table, None)],
                              metadata={"names": fg.YOLO_NAMES, "task": "detect"}), 1
    if fmt == "mask-rcnn":
        boxes = fg.MRCNN_BOXES.copy()
        boxes[1, 2] = np.inf  # a corner: clipped to the frame's edge before this fix
        return fg.const_model(path, [
            ("boxes", boxes, ["N", 4]), ("labels", fg.MRCNN_LABELS, ["N"]),
            ("scores", fg.MRCNN_SCORES, ["N"]),
            ("masks", fg.roi_masks()[:, None], ["N", 1, 28, 28])],
            input_name="image", input_shape=[3, "height", "width"]), 1
    assert fmt == "sparseinst"
    model = fg.sparseinst_model(path)
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model))
    for node in m.graph.node:
        if node.op_type == "Constant" and node.output[0] == "scores_c":
            arr = numpy_helper.to_array(node.attribute[0].t).copy()
            arr[0, 7] = np.inf  # the second instance's score
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(arr, "scores_c"))
    onnx.save(m, str(model))
    return model, 1


@pytest.mark.parametrize("fmt", ["yolo", "mask-rcnn", "sparseinst"])
def test_case1_other_formats_drop_and_count_inf_detections(tmp_path, fmt):
    import warnings

    import numpy as np

    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.results import Frame

    model, dropped = _inf_format_model(fmt, tmp_path / f"{fmt}.onnx")
    runner = ModelRunner(ModelOptions(path=model, threads=1, format=fmt))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning fails the test
        res = runner.infer(Frame("a", 0, np.zeros((480, 640, 3), np.uint8), 0, 0))
    assert res.nonfinite == dropped, res
    assert len(res.detections) >= 1 and not res.nonfinite_only
    assert np.isfinite(res.detections.boxes).all() and np.isfinite(res.detections.scores).all()
