"""The shipped demo model: accuracy on unseen synthetic scenes, through edged itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edged.inference.manifest import load_manifest
from edged.synth import CLASS_NAMES, SEG_CLASS_NAMES, render
from edged.tools.evaluate import DetMeter, SegMeter
from edged.wire.client import Subscriber
from edged.wire.codec import Message

MODELS = Path(__file__).resolve().parents[2] / "models"
INT8 = MODELS / "yoeo-demo-int8.onnx"
FP32 = MODELS / "yoeo-demo-fp32.onnx"
# a few points under the model card's figures (500 scenes); these runs use fewer scenes
MIN_MIOU = 0.87
MIN_MAP = 0.80


def test_shipped_models_follow_the_yoeo_contract():
    import onnxruntime as ort

    total = 0
    for path in (FP32, INT8):
        total += path.stat().st_size
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,) = s.get_inputs()
        assert (inp.name, inp.type, inp.shape) == ("InputLayer", "tensor(float)", [1, 3, 416, 416])
        det, seg = s.get_outputs()
        assert (det.name, det.type) == ("Detections", "tensor(float)")
        assert det.shape[0] == 1 and det.shape[2] == 8
        assert (seg.name, seg.type, seg.shape) == ("Segmentations", "tensor(uint8)",
                                                   [1, 416, 416])
        m = load_manifest(path.with_suffix(".json"))
        assert m.format == "yoeo" and m.classes == CLASS_NAMES and m.seg_classes == SEG_CLASS_NAMES
    assert total <= 10 * 1024 * 1024


def test_eval_command_meets_the_model_card(tmp_path):
    p = subprocess.run([sys.executable, "-m", "edged", "eval", "--model", str(INT8), "--scenes",
                        "60", "--seed", "1000000", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["scenes"] == 60
    assert set(res["iou"]) == set(SEG_CLASS_NAMES) and set(res["ap50"]) == set(CLASS_NAMES)
    assert res["miou"] >= MIN_MIOU, res
    assert res["map50"] >= MIN_MAP, res


def test_subscriber_sees_the_scene_ground_truth(tmp_path, tcp_endpoint, start_daemon):
    """The demo model on six synthetic cameras, scored on what a subscriber receives.

    Six evaluation sequences (never used in training), twelve frames each: one sequence
    alone is too correlated to say anything about accuracy.
    """
    seeds = range(1_000_100, 1_000_106)
    cams = "\n".join(f"""\
  cam{i}:
    source: synthetic
    mode: every_frame
    fps: 10
    seed: {seed}""" for i, seed in enumerate(seeds))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""\
model:
  path: {INT8}
  conf_threshold: 0.05
cameras:
{cams}
publish:
  endpoints: [{tcp_endpoint}]
""")
    seg, det = SegMeter(3), DetMeter(3)
    got: list[Message] = []
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg, "--frames", "12")
        end = time.monotonic() + 90
        while time.monotonic() < end and len(sub.ended) < len(seeds):
            msg = sub.recv(timeout=0.5)
            if isinstance(msg, Message):
                got.append(msg)
        assert d.proc.wait(20) == 0, d.log()
    assert len(got) >= 50, d.log()
    for msg in got:
        # a synthetic camera renders frame `seq` of its sequence
        truth = render(seeds[int(msg.camera[3:])], msg.seq, 640, 480)
        seg.add(msg.mask_camera(), truth.segmentation)
        det.add(msg.boxes, msg.scores, msg.class_ids, truth.boxes, truth.classes)
    miou = float(np.nanmean(seg.iou()))
    map50 = float(np.nanmean(det.ap()))
    assert miou >= MIN_MIOU, seg.iou()
    assert map50 >= MIN_MAP, det.ap()
