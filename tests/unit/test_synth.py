from __future__ import annotations

import numpy as np

from edged.synth import render


def test_deterministic():
    a, b = render(7, 42), render(7, 42)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.segmentation, b.segmentation)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(render(8, 42).image, a.image)


def test_shapes_and_label_values():
    for w, h in ((640, 480), (320, 240), (800, 600)):
        s = render(3, 5, w, h)
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.segmentation.shape == (h, w)
        assert set(np.unique(s.segmentation)) <= {0, 1, 2}
        assert s.boxes.dtype == np.float32 and s.boxes.shape[1] == 4
        assert len(s.boxes) == len(s.classes)
        if len(s.boxes):
            assert (s.boxes[:, 0] >= 0).all() and (s.boxes[:, 2] <= w).all()
            assert (s.boxes[:, 2] > s.boxes[:, 0]).all() and (s.boxes[:, 3] > s.boxes[:, 1]).all()
            assert set(s.classes.tolist()) <= {0, 1, 2}


def test_consecutive_frames_are_smooth_video():
    # neighbouring frames differ far less than frames of different sequences
    a, b = render(11, 100).image.astype(np.float32), render(11, 101).image.astype(np.float32)
    far = render(12, 100).image.astype(np.float32)
    assert np.abs(a - b).mean() < 0.5 * np.abs(a - far).mean()


def test_scenes_contain_all_classes_and_field():
    classes = set()
    field = []
    for seq in range(30):
        s = render(seq, 250)
        classes |= set(s.classes.tolist())
        field.append((s.segmentation == 2).mean())
    assert classes == {0, 1, 2}
    assert np.median(field) > 0.3


def test_many_seeds_build_each_layout_once():
    """Cameras with 12 seeds (more than the 8 recent layouts plain render() keeps) do not
    evict each other: each layout is built once, however the frames interleave."""
    import gc

    from edged.capture.readers.synthetic import SyntheticSource
    from edged.synth import frames, world

    seeds = range(91000, 91012)
    before = world.LAYOUT_BUILDS[0]
    sources = [SyntheticSource(s, 32, 24) for s in seeds]
    sources.append(SyntheticSource(91000, 32, 24))  # a second camera on a seed: shared
    for src in sources:
        src.open()
    assert world.LAYOUT_BUILDS[0] - before == 12
    for _ in range(3):
        for src in sources:
            img = src.read()
            assert img is not None and img.shape == (24, 32, 3)
    assert world.LAYOUT_BUILDS[0] - before == 12
    # frames are the pure function's frames
    np.testing.assert_array_equal(sources[3].fresh().read(), render(91003, 3, 32, 24).image)
    # fresh() (a restart) keeps the renderer: no rebuild
    sources = [s.fresh() for s in sources]
    for src in sources:
        src.open()
    assert world.LAYOUT_BUILDS[0] - before == 12
    # memory is bounded by the holders: without them, the layouts go (but the 8 most
    # recently used by plain render() calls)
    del sources, src
    gc.collect()
    assert 91001 not in frames._live and 91002 not in frames._live
