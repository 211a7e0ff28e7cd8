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


def test_cell_argmax_is_argmax_of_the_pixel_shuffle():
    """The export's argmax on the /4 cells gives exactly the mask of the shuffled logits,
    ties included (first maximum wins, as ArgMax)."""
    import torch.nn.functional as F

    from edged.training.model import NUM_SEG, SHUFFLE, cell_argmax

    g = torch.Generator().manual_seed(0)
    cells = torch.randn(2, NUM_SEG * SHUFFLE * SHUFFLE, 13, 11, generator=g)
    # quantised logits make ties common, as an int8 head's are
    cells = torch.cat([cells, (cells * 2).round() / 2])
    want = F.pixel_shuffle(cells, SHUFFLE).argmax(1).to(torch.uint8)
    got = cell_argmax(cells)
    assert got.dtype == torch.uint8 and got.shape == (4, 13 * SHUFFLE, 11 * SHUFFLE)
    assert torch.equal(got, want)
    assert len(set(got.unique().tolist())) == NUM_SEG
