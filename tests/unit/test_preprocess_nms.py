from __future__ import annotations

import cv2
import numpy as np
import pytest

from edged.inference.nms import box_iou, nms
from edged.inference.preprocess import Preprocessor, PreprocessSpec
from edged.results import Letterbox


def naive(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The obvious, allocation-heavy reference implementation."""
    h, w = frame.shape[:2]
    r = min(spec.input_w / w, spec.input_h / h)
    cw, ch = round(w * r), round(h * r)
    rgb = cv2.cvtColor(cv2.resize(frame, (cw, ch)), cv2.COLOR_BGR2RGB).astype(np.float32)
    canvas = np.full((spec.input_h, spec.input_w, 3), spec.pad_value, np.float32)
    px, py = (spec.input_w - cw) // 2, (spec.input_h - ch) // 2
    canvas[py:py + ch, px:px + cw] = rgb
    out = canvas * spec.scale
    if spec.mean is not None:
        out = (out - np.array(spec.mean)) / np.array(spec.std)
    return out.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (1920, 1080), (416, 416), (300, 100)])
@pytest.mark.parametrize("spec", [PreprocessSpec(), PreprocessSpec(pad_value=114),
                                  PreprocessSpec(mean=(0.485, 0.456, 0.406),
                                                 std=(0.229, 0.224, 0.225))])
def test_preprocessor_matches_reference(size, spec):
    rng = np.random.default_rng(0)
    pre = Preprocessor(spec)
    for _ in range(2):  # second call reuses the buffers
        img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        box = pre(img)
        np.testing.assert_allclose(pre.tensor, naive(img, spec), atol=1e-5)
    assert box.content_w <= 416 and box.content_h <= 416


def test_buffers_are_reused_and_padding_survives_size_changes():
    pre = Preprocessor(PreprocessSpec())
    ptr = pre.tensor.ctypes.data
    pre(np.full((480, 640, 3), 255, np.uint8))
    pre(np.full((640, 480, 3), 255, np.uint8))  # portrait: padding moves to the sides
    assert pre.tensor.ctypes.data == ptr
    assert pre.tensor[0, :, 0:5, :].max() == 1.0  # old padding rows are now content
    assert pre.tensor[0, :, :, 0:5].max() == 0.0


def test_letterbox_round_trip():
    box = Letterbox.fit(640, 480, 416, 416)
    assert (box.pad_x, box.pad_y, box.content_w, box.content_h) == (0, 52, 416, 312)
    cam = np.array([[10.0, 20.0, 300.0, 400.0]], np.float32)
    np.testing.assert_allclose(box.boxes_to_camera(box.boxes_to_input(cam), 640, 480), cam,
                               atol=1e-4)
    mask = np.arange(416 * 416, dtype=np.int64).reshape(416, 416)
    assert box.crop_mask(mask).shape == (312, 416)
    stretch = Letterbox.fit(640, 480, 416, 416, "stretch")
    assert (stretch.pad_x, stretch.pad_y) == (0, 0)


def test_nms_class_aware_and_groups():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.4).tolist() == [0, 3]
    groups = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, 0.4, groups=groups).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.4, groups=groups, max_keep=2).tolist() == [0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_matches_brute_force():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (200, 2))
    wh = rng.uniform(5, 30, (200, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(0, 1, 200)
    keep = nms(boxes, scores, 0.5)
    # every dropped box overlaps a kept, better box by more than the threshold
    iou = box_iou(boxes, boxes[keep])
    dropped = np.setdiff1d(np.arange(200), keep)
    for i in dropped:
        assert any(iou[i, j] > 0.5 and scores[k] >= scores[i] for j, k in enumerate(keep))
    kept_iou = box_iou(boxes[keep], boxes[keep])
    np.fill_diagonal(kept_iou, 0)
    assert kept_iou.max() <= 0.5


def test_reference_nms_arithmetic_agrees_on_clear_cases_and_keeps_empty_boxes():
    """float32_offsets: ultralytics'/yolov5's own arithmetic (class offset 7680 in
    float32, torchvision's `iou > t` test): the same answer as edged's exact NMS away
    from the threshold, and a zero-area box is kept, as torchvision keeps it (NaN IoU)."""
    from edged.inference.nms import nms

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 500, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (200, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 200).astype(np.float32)
    groups = rng.integers(0, 40, 200)
    exact = nms(boxes, scores, 0.45, groups=groups)
    ref = nms(boxes, scores, 0.45, groups=groups, float32_offsets=True)
    assert exact.tolist() == ref.tolist()
    empty = np.array([[10, 10, 10, 10], [10, 10, 10, 10]], np.float32)
    assert nms(empty, np.array([0.9, 0.8], np.float32), 0.45,
               float32_offsets=True).tolist() == [0, 1]
