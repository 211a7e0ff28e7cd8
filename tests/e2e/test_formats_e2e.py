"""Every format end to end: a real `edged run` subprocess with `format: auto`, an image
folder camera, a real Subscriber; boxes, classes and mask pixels checked exactly on the
subscriber side. Also `edged inspect`, text, JSON and --write-manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import formatgen as g
import numpy as np
import pytest

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message

CASES = {
    # format: (model builder, config classes or None)
    "yolo-seg": (g.yolo_seg_model, None),
    "yolo": (g.yolo_det_model, None),
    "semantic": (g.semantic_model, None),
    "yolact": (g.yolact_model, None),
    "mask-rcnn": (g.mask_rcnn_torchvision_model, ["__background__", "person", "bicycle", "car"]),
    "sparseinst": (g.sparseinst_model, ["ball", "robot"]),
}


def serve(tmp_path: Path, start_daemon, model: Path, frame: np.ndarray,
          classes: list[str] | None, model_keys: str = "") -> list[Message]:
    """Run the daemon on a folder of 3 copies of `frame`; the results it published."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    ep = f"ipc://{tmp_path}/e.sock"
    extra = f"\n  classes: {json.dumps(classes)}" if classes else ""
    extra += "".join(f"\n  {line}" for line in model_keys.splitlines())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""\
model:
  path: {model}
  threads: 1
  warmup_runs: 1{extra}
cameras:
  cam:
    source: {folder}
    fps: 5
    loop: false
publish:
  endpoints:
    - {ep}
""")
    msgs: list[Message | EndOfStream] = []
    with Subscriber(ep) as sub:
        d = start_daemon(cfg)
        end = time.monotonic() + 40
        while time.monotonic() < end and not any(isinstance(m, EndOfStream) for m in msgs):
            m = sub.recv(timeout=0.2)
            if m is not None:
                msgs.append(m)
        assert d.proc.wait(10) == 0, d.log()
    assert "Traceback" not in d.log()
    results = [m for m in msgs if isinstance(m, Message)]
    assert results, d.log()
    return results


@pytest.mark.parametrize("fmt", list(CASES))
def test_format_end_to_end(tmp_path, start_daemon, fmt):
    build, classes = CASES[fmt]
    model = build(tmp_path / f"{fmt}.onnx")
    if fmt == "semantic":
        img, truth = g.band_frame()
        for msg in serve(tmp_path, start_daemon, model, img, classes):
            assert len(msg) == 0 and msg.instances is None
            np.testing.assert_array_equal(msg.mask, truth)
            assert msg.mask_classes == ("red", "green", "blue", "dark")
        return
    exp = g.expected(fmt)
    black = np.zeros((g.FRAME_H, g.FRAME_W, 3), np.uint8)
    # formatgen's masks follow the direct rule; the YAML key reaches the adapter
    keys = "mask_mode: direct" if fmt == "yolo-seg" else ""
    for msg in serve(tmp_path, start_daemon, model, black, classes, keys):
        assert (msg.frame_w, msg.frame_h) == (g.FRAME_W, g.FRAME_H)
        np.testing.assert_allclose(msg.boxes, np.array(exp["boxes"]), atol=1e-3)
        assert msg.labels() == exp["labels"]
        np.testing.assert_allclose(msg.scores, exp["scores"], atol=1e-6)
        if exp["instances"] is None:
            assert msg.instances is None and msg.mask is None
            continue
        assert msg.instances is not None and len(msg.instances) == len(exp["instances"])
        for i, want in enumerate(exp["instances"]):
            np.testing.assert_array_equal(msg.instance_mask_camera(i), want)
        np.testing.assert_array_equal(msg.mask, g.expected_class_mask(
            exp["instances"], exp["ids"], exp["scores"], exp["mask_shape"]))
        assert msg.mask_classes[0] == "background"
        assert msg.mask_classes[1:] == msg.class_names


# ----------------------------------------------------------------------------- inspect


def edged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=60)


def test_inspect_text(tmp_path):
    model = g.yolo_seg_model(tmp_path / "seg.onnx")
    p = edged("inspect", str(model), "--runs", "3")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert f"size     {model.stat().st_size / 1e6:.2f} MB ({model.stat().st_size} bytes)" in out
    assert "onnx     IR 8, opsets ai.onnx 17" in out
    assert "input    images float32[1, 3, 416, 416]" in out
    assert "output   output0 float32[1, 11, 3549]" in out
    assert "         output1 float32[1, 4, 104, 104]" in out
    assert "format   yolo-seg: recognised from the graph: YOLO-seg:" in out
    assert "ms per frame (median of 3 runs, black 416x416 frame, 1 thread" in out
    manifest = json.loads(out[out.index("\n{") + 1:])
    assert manifest["format"] == "yolo-seg"
    assert manifest["classes"] == ["person", "robot", "ball"]
    assert not (tmp_path / "seg.json").exists()


def test_inspect_json_and_write_manifest(tmp_path):
    model = g.yolact_model(tmp_path / "ya.onnx")
    p = edged("inspect", str(model), "--json", "--runs", "2", "--write-manifest")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["format"] == "yolact" and info["error"] is None
    assert [o["name"] for o in info["outputs"]] == ["loc", "conf", "mask", "priors", "proto"]
    assert info["opsets"] == {"ai.onnx": 17} and info["latency"]["runs"] == 2
    written = tmp_path / "ya.json"
    assert info["wrote"] == str(written)
    assert json.loads(written.read_text())["options"]["proto_layout"] == "nhwc"
    # the daemon now uses the manifest; inspect says so
    p = edged("inspect", str(model), "--json", "--runs", "1")
    assert json.loads(p.stdout)["why"] == "manifest ya.json"
    # refuses to overwrite, unless forced
    written.write_text(written.read_text().replace('"conf_threshold": 0.3',
                                                   '"conf_threshold": 0.85'))
    p = edged("inspect", str(model), "--write-manifest")
    assert p.returncode == 1 and "exists; pass --force to overwrite it" in p.stderr
    assert '"conf_threshold": 0.85' in written.read_text()
    p = edged("inspect", str(model), "--write-manifest", "--force", "--runs", "1")
    assert p.returncode == 0, p.stderr
    assert '"conf_threshold": 0.3' in written.read_text()


def test_inspect_unrecognised_model_lists_tensors_and_fails(tmp_path):
    model = g.const_model(tmp_path / "odd.onnx", [("weird", np.zeros((1, 7), np.float32), None)])
    p = edged("inspect", str(model))
    assert p.returncode == 1
    assert "output   weird float32[1, 7]" in p.stdout
    assert "format   none: " in p.stdout and "no known model format fits" in p.stdout
    p = edged("inspect", str(tmp_path / "missing.onnx"))
    assert p.returncode == 1 and "model file not found" in p.stderr


def test_inspect_force_rewrites_a_broken_manifest(tmp_path):
    model = g.sparseinst_model(tmp_path / "sp.onnx")
    (tmp_path / "sp.json").write_text('{"format": "sparseinst", "outputs": {"masks": "nope"}}')
    p = edged("inspect", str(model), "--runs", "1")
    assert p.returncode == 1 and "manifest input 'InputLayer' is not a graph input" in p.stdout
    p = edged("inspect", str(model), "--runs", "1", "--write-manifest", "--force")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "format   sparseinst: manifest sp.json" in p.stdout
    assert f"wrote    {tmp_path / 'sp.json'}" in p.stdout
