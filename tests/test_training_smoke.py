"""One training step and an export of the demo network (needs the `train` extra)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


def test_one_step_then_export_follows_the_contract(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from edged.training import export, train

    train.main(["--out", str(tmp_path), "--iters", "1", "--batch", "2", "--workers", "0"])
    ckpt = tmp_path / "checkpoint.pt"
    assert ckpt.is_file()
    export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path), "--calibration-frames", "2"])
    for name in ("yoeo-demo-fp32.onnx", "yoeo-demo-int8.onnx"):
        s = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        det, seg = s.run(None, {"InputLayer": np.zeros((1, 3, 416, 416), np.float32)})
        assert det.shape == (1, 3549, 8) and det.dtype == np.float32
        assert seg.shape == (1, 416, 416) and seg.dtype == np.uint8
        assert (tmp_path / name).with_suffix(".json").is_file()
