"""A trained DBNet text detector served as a binary semantic map, against its own
pipeline: the PP-OCRv4 detection model that the rapidocr_onnxruntime wheel ships, and
that package's own pre-processing (DetPreProcess: BGR, mean/std 0.5, shorter side to
736, sides rounded to multiples of 32) and binarisation (DBPostProcess: prob > 0.3).

rapidocr pins opencv-python, which would fight opencv-python-headless over `cv2`: CI
installs it with --no-deps in `.venv-refs` (the venv of reference implementations,
see .ci/run) and sets EDGED_REQUIRE_REFERENCES=1 there, so this cannot skip in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

if os.environ.get("EDGED_REQUIRE_REFERENCES") != "1":
    pytest.importorskip("rapidocr_onnxruntime")

import onnxruntime as ort  # noqa: E402
import rapidocr_onnxruntime  # noqa: E402
from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess  # noqa: E402

from edged.inference.runner import ModelError, ModelOptions, ModelRunner  # noqa: E402
from edged.results import Frame  # noqa: E402

MODEL = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
# what rapidocr's config.yaml gives its detector
PREPROCESS = (("color", "bgr"), ("mean", (0.5, 0.5, 0.5)), ("std", (0.5, 0.5, 0.5)),
              ("size", "keep_ratio"), ("limit_side", 736), ("limit_type", "min"),
              ("multiple", 32))
SIZES = [(640, 480), (1280, 720), (333, 500), (1000, 300), (810, 1080)]


def text_frame(w: int, h: int, seed: int = 0) -> np.ndarray:
    """Lines of printed text of several sizes on a light, slightly noisy page."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 235, np.uint8)
    img += rng.integers(0, 12, img.shape, dtype=np.uint8)
    y = 0
    words = ["edged", "serves", "DBNet", "text", "maps", "0123", "robot", "camera"]
    while True:
        scale = float(rng.uniform(0.5, 1.6)) * max(w, h) / 900
        y += int(40 * scale) + 8
        if y >= h - 4:
            break
        line = " ".join(rng.choice(words, 4))
        cv2.putText(img, line, (int(rng.uniform(2, w / 5)), y), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (20, 20, 20), max(1, int(2 * scale)), cv2.LINE_AA)
    return img


def reference_mask(img: np.ndarray) -> np.ndarray:
    """rapidocr's own pre-processing and binarisation of the probability map."""
    x = DetPreProcess(736, "min", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])(img)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), so, providers=["CPUExecutionProvider"])
    pred = session.run(None, {session.get_inputs()[0].name: x})[0]
    return pred[0, 0] > 0.3


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return ModelRunner(ModelOptions(path=MODEL, threads=1, mask_threshold=0.3,
                                    preprocess=PREPROCESS))


def test_the_graph_is_read_as_a_binary_probability_map(runner: ModelRunner) -> None:
    assert runner.manifest.format == "semantic"
    assert runner.manifest.options["output_values"] == "probability"
    assert "made by Sigmoid" in runner.format_reason
    assert runner.mask_classes == ("background", "foreground")


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_dbnet_masks_match_its_own_pipeline(runner: ModelRunner, size: tuple[int, int]
                                            ) -> None:
    img = text_frame(*size)
    ref = reference_mask(img)
    res = runner.infer(Frame("cam", 0, img, 0, 0))
    assert res.mask is not None
    assert res.mask.shape == ref.shape  # the same input size: the size rule agrees
    ours = res.mask == 1
    assert ref.sum() > 0.01 * ref.size, "set-up: no text found"
    iou = np.logical_and(ours, ref).sum() / np.logical_or(ours, ref).sum()
    assert iou >= 0.99, f"IoU {iou:.4f} at {size}"


def test_a_size_the_graph_cannot_take_fails_check_and_run_alike(tmp_path: Path) -> None:
    """A fixed 500x500 input (not a multiple of 32): the warm-up inference fails with one
    line naming the model, the size edged fed and onnxruntime's reason, in `edged check`
    and in `edged run`, with exit 1 and no traceback."""
    with pytest.raises(ModelError, match=r"warm-up inference on a 640x480 frame failed: "
                                         r".*edged feeds input x as 1x3x500x500"):
        ModelRunner(ModelOptions(path=MODEL, threads=1, preprocess=(
            ("input_w", 500), ("input_h", 500)))).warmup(1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""\
model:
  path: {MODEL}
  threads: 1
  warmup_runs: 1
  preprocess: {{input_w: 500, input_h: 500}}
cameras:
  cam: {{source: synthetic, width: 640, height: 480}}
publish:
  endpoints: ["ipc://{tmp_path}/p.sock"]
""")
    for cmd in (["check", "-c", str(cfg)], ["run", "-c", str(cfg)]):
        p = subprocess.run([sys.executable, "-m", "edged", *cmd], capture_output=True,
                           text=True, timeout=120)
        out = p.stdout + p.stderr
        assert p.returncode == 1, (cmd, out)
        assert "Traceback" not in out, out
        assert "1x3x500x500" in out and "warm-up inference on a 640x480 frame" in out, out
