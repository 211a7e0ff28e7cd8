"""edged.tracking against the synthetic ground truth (edged.synth's identities).

Fast and deterministic: ground truth from `synth.objects` (no image rendering), one
sequence of 400 frames (seed 26 with 12 walking robots: the camera walks and turns its
head, robots cross and leave the view), detections from the truth with the scorer's
noise model. The scores against a reference ByteTrack are in tests/e2e/test_tracking_scores.py
(its own venv) and docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from pydantic import ValidationError

from edged import synth
from edged.tools.track_eval import (
    FPS,
    HEIGHT,
    PERIOD_NS,
    WIDTH,
    Dets,
    GtFrame,
    Noise,
    gt_sequence,
    noisy_detections,
)
from edged.tracking import Tracker, TrackingConfig, TrackState, assign

SEED = 26  # not one of the scored sequences (edged.tools.track_eval.SEEDS)
FRAMES = 400


@cache
def _gt() -> tuple[GtFrame, ...]:
    return tuple(gt_sequence(SEED, FRAMES))


def perfect(gt: tuple[GtFrame, ...] | list[GtFrame]) -> list[Dets]:
    return [Dets(f.boxes, np.full(len(f.ids), 0.9, np.float32), f.classes.astype(np.int32),
                 f.ids) for f in gt]


def run(dets: list[Dets], times: list[int], config: TrackingConfig | None = None
        ) -> list[np.ndarray]:
    """Per frame, the confirmed track id of each detection (0: none)."""
    tr = Tracker(config)
    return [tr.update(d.boxes, d.scores, d.class_ids, t).det_track_ids for d, t in
            zip(dets, times)]


def runs_of(gt: list[GtFrame] | tuple[GtFrame, ...], min_len: int
            ) -> list[tuple[int, int, int]]:
    """(object id, first, last frame position) of each run of consecutive frames in
    which an object is in view, at least `min_len` long."""
    out = []
    open_: dict[int, int] = {}
    for k, f in enumerate([*gt, None]):
        here = set() if f is None else {int(i) for i in f.ids}
        for i in list(open_):
            if i not in here:
                if k - open_[i] >= min_len:
                    out.append((i, open_[i], k - 1))
                del open_[i]
        for i in here:
            open_.setdefault(i, k)
    return out


def id_persistence(gt, dets: list[Dets], ids: list[np.ndarray], min_len: int = 20
                   ) -> tuple[float, float]:
    """(share of runs followed by one track id only, share of runs in which the most
    common id is >= 90 % of the ids published for the object)."""
    one = major = 0
    runs = runs_of(gt, min_len)
    for obj, a, b in runs:
        seen = []
        for k in range(a, b + 1):
            hit = ids[k][dets[k].gt == obj]
            seen.append(int(hit[0]) if len(hit) and hit[0] > 0 else 0)
        got = [s for s in seen if s]
        if got and len(set(got)) == 1:
            one += 1
        if got and np.bincount(got).max() >= 0.9 * len(got):
            major += 1
    return one / len(runs), major / len(runs)


# --------------------------------------------------------------------------- ground truth


def test_synth_identities_are_stable_and_match_render():
    gt = _gt()
    assert sum(len(f.ids) for f in gt) / len(gt) > 2  # a sequence with things in view
    for f in gt:
        assert len(set(f.ids.tolist())) == len(f.ids)  # one box per object
    # an object keeps its class over the sequence
    cls: dict[int, int] = {}
    for f in gt:
        for i, c in zip(f.ids.tolist(), f.classes.tolist()):
            assert cls.setdefault(i, c) == c
    assert {c for c in cls.values()} >= {1, 2}
    # objects() is exactly what render() labels
    for k in (0, 150, 399):
        s = synth.render(SEED, k, WIDTH, HEIGHT, crowd=12)
        np.testing.assert_array_equal(s.boxes, gt[k].boxes)
        np.testing.assert_array_equal(s.classes, gt[k].classes)
        np.testing.assert_array_equal(s.ids, gt[k].ids)
    # objects leave the view and come back (the head scans)
    runs = runs_of(gt, 1)
    per_obj: dict[int, int] = {}
    for i, _, _ in runs:
        per_obj[i] = per_obj.get(i, 0) + 1
    assert max(per_obj.values()) >= 2


def test_synth_crowd_zero_is_the_seed_itself():
    a, b = synth.render(5, 77), synth.render(5, 77, crowd=0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.ids, b.ids)
    c = synth.render(5, 77, crowd=6)
    assert synth.renderer(5) is not synth.renderer(5, 6)
    # a scene built by hand (no identities) still works
    s = synth.Scene(a.image, a.segmentation, a.boxes, a.classes)
    assert s.ids is None and c.ids is not None


# --------------------------------------------------------------------------- ids


def test_ids_persist_through_the_sequence():
    gt = list(_gt())
    times = [f.t_ns for f in gt]
    dets = perfect(gt)
    one, major = id_persistence(gt, dets, run(dets, times))
    assert one >= 0.95 and major >= 0.95, (one, major)
    noisy = noisy_detections(gt, SEED)
    one, major = id_persistence(gt, noisy, run(noisy, times))
    assert one >= 0.8 and major >= 0.85, (one, major)


def test_ids_never_reused():
    gt = list(_gt())
    noisy = noisy_detections(gt, SEED, replace(Noise(), fp_rate=1.0))
    tr = Tracker()
    removed: set[int] = set()
    last_max = 0
    for d, f in zip(noisy, gt):
        o = tr.update(d.boxes, d.scores, d.class_ids, f.t_ns)
        ids = set(o.ids.tolist())
        assert not ids & removed
        assert len(ids) == len(o.ids)
        born = ids - set(range(1, last_max + 1))
        assert all(i > last_max for i in born)
        last_max = max([last_max, *ids])
        removed |= set(o.removed)
        pub = o.det_track_ids[o.det_track_ids > 0]
        assert len(set(pub.tolist())) == len(pub)  # one detection per track
        # a track's det_index and the detection's track id agree (masks follow tracks)
        for t in o.confirmed():
            assert t.det_index >= 0 and o.det_track_ids[t.det_index] == t.track_id
            assert d.class_ids[t.det_index] == t.class_id
        assert set(pub.tolist()) == {t.track_id for t in o.confirmed()}
    assert len(removed) > 20
    # a new epoch (camera reconnect) clears the tracks, ids keep counting
    n = tr.next_id
    assert tr.new_epoch() == 1 and len(tr) == 0
    o = tr.update(noisy[0].boxes, noisy[0].scores, noisy[0].class_ids, gt[-1].t_ns + 10**9)
    assert o.epoch == 1 and min(o.ids) >= n
    # time going backwards (a replay starting over) is a new epoch too
    n = tr.next_id
    o = tr.update(noisy[0].boxes, noisy[0].scores, noisy[0].class_ids, 0)
    assert o.epoch == 2 and len(o.ids) and min(o.ids) >= n


# --------------------------------------------------------------------------- velocity


def _true_velocity(gt, k: int, obj: int, window_s: float = 4 / FPS) -> np.ndarray | None:
    """The object's image velocity (px/s, box centre) averaged over the `window_s`
    before frame k, from the full ground truth; None where the box touches the image
    border (clipped: its centre does not move with the object) in that time."""
    w = int(round(window_s * FPS))
    if k - w < 0:
        return None
    cs = []
    for j in (k - w, k):
        hit = np.flatnonzero(gt[j].ids == obj)
        if not len(hit):
            return None
        cs.append(gt[j].boxes[hit[0]].astype(np.float64))
    for j in range(k - w, k + 1):
        hit = np.flatnonzero(gt[j].ids == obj)
        if not len(hit):
            return None
        b = gt[j].boxes[hit[0]]
        if b[0] <= 1 or b[1] <= 1 or b[2] >= WIDTH - 1 or b[3] >= HEIGHT - 1:
            return None
    c0, c1 = (cs[0][:2] + cs[0][2:]) / 2, (cs[1][:2] + cs[1][2:]) / 2
    return (c1 - c0) / (w / FPS)


@pytest.mark.parametrize("timing", ["all", "every 3rd dropped", "irregular"])
@pytest.mark.parametrize("noisy", [False, True])
def test_velocity_against_ground_truth(timing: str, noisy: bool):
    """The track's velocity (px/s from capture timestamps) against the truth: with
    frames dropped or irregular gaps, the same velocity, not one distorted by frame
    counts. The Kalman filter's velocity is a recent average: it is compared with the
    true mean over the last 0.13 s (a walking robot's camera bobs at ~3 Hz and sways,
    which a constant-velocity filter follows with a lag, see docs/tracking.md)."""
    gt = list(_gt())
    n = len(gt)
    if timing == "all":
        sel = list(range(n))
    elif timing == "every 3rd dropped":
        sel = [k for k in range(n) if k % 3 != 2]
    else:
        sel = [int(k) for k in np.cumsum(np.random.default_rng(1).integers(1, 4, n)) if k < n]
    dets = noisy_detections(gt, SEED) if noisy else perfect(gt)
    tr = Tracker()
    rel, agree = [], []
    for k in sel:
        d = dets[k]
        o = tr.update(d.boxes, d.scores, d.class_ids, gt[k].t_ns)
        for t in o.confirmed():
            if t.age_s < 0.3:
                continue
            obj = int(d.gt[t.det_index])
            v = None if obj < 0 else _true_velocity(gt, k, obj)
            if v is None:
                continue
            est = np.array(t.velocity)
            rel.append(np.linalg.norm(est - v) / max(np.linalg.norm(v), 20.0))
            agree += [np.sign(est[a]) == np.sign(v[a]) for a in (0, 1) if abs(v[a]) > 40]
    assert len(rel) > 150 and len(agree) > 100
    assert np.median(rel) < (0.3 if noisy else 0.2), np.median(rel)
    assert np.mean(agree) > 0.97, np.mean(agree)


def test_velocity_exact_for_constant_motion_with_jittered_timestamps():
    """A box moving at (150, -60) px/s, frames at irregular times (5..90 ms apart):
    the velocity is px per second of capture time, whatever the gaps."""
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.integers(5_000_000, 90_000_000, 120))
    tr = Tracker()
    for tn in t:
        c = np.array([100.0, 300.0]) + np.array([150.0, -60.0]) * tn * 1e-9
        box = np.array([[c[0] - 10, c[1] - 20, c[0] + 10, c[1] + 20]], np.float32)
        o = tr.update(box, np.array([0.9], np.float32), np.array([2], np.int32), int(tn))
    (trk,) = o.confirmed()
    np.testing.assert_allclose(trk.velocity, (150.0, -60.0), rtol=0.02)
    np.testing.assert_allclose(o.det_velocities[0], (150.0, -60.0), rtol=0.02)


# --------------------------------------------------------------------------- life cycle


def _box(x: float, y: float = 100.0) -> np.ndarray:
    return np.array([[x, y, x + 30, y + 60]], np.float32)


ONE = np.array([0.9], np.float32)
CLS = np.array([2], np.int32)
NONE_B = np.zeros((0, 4), np.float32)
NONE_S = np.zeros(0, np.float32)
NONE_C = np.zeros(0, np.int32)


def test_life_cycle_tentative_confirmed_lost_removed():
    cfg = TrackingConfig(min_hits=3, lost_timeout_s=0.5)
    tr = Tracker(cfg)
    t = 0
    states = []
    for k in range(3):
        o = tr.update(_box(100 + 3 * k), ONE, CLS, t)
        states.append(o.tracks()[0].state)
        t += PERIOD_NS
    assert states == [TrackState.TENTATIVE, TrackState.TENTATIVE, TrackState.CONFIRMED]
    assert o.det_track_ids[0] == o.ids[0] == 1 and o.tracks()[0].det_index == 0
    # missing: lost, then removed after 0.5 s, never reported twice
    lost_at = []
    removed: list[int] = []
    for _ in range(20):
        o = tr.update(NONE_B, NONE_S, NONE_C, t)
        t += PERIOD_NS
        if len(o.ids):
            (trk,) = o.tracks()
            assert trk.state == TrackState.LOST and trk.det_index == -1
            lost_at.append(trk.lost_s)
        removed += o.removed
    assert removed == [1] and 0.45 <= max(lost_at) <= 0.5 + 1e-9
    # a tentative track that misses one frame is gone; ids still count up
    tr.update(_box(300), ONE, CLS, t)
    o = tr.update(NONE_B, NONE_S, NONE_C, t + PERIOD_NS)
    assert o.removed == (2,) and len(tr) == 0


def test_lost_track_found_again_keeps_its_id():
    tr = Tracker()
    t = 0
    for k in range(10):
        o = tr.update(_box(100 + 4 * k), ONE, CLS, t)
        t += PERIOD_NS
    tid = int(o.det_track_ids[0])
    for _ in range(10):  # 0.33 s unseen (occluded), moving on
        o = tr.update(NONE_B, NONE_S, NONE_C, t)
        t += PERIOD_NS
    o = tr.update(_box(100 + 4 * 20), ONE, CLS, t)
    assert o.det_track_ids[0] == tid and o.tracks()[0].state == TrackState.CONFIRMED


def test_low_score_second_stage_keeps_track_through_a_dip():
    def sequence(cfg: TrackingConfig) -> list[int]:
        tr = Tracker(cfg)
        ids = []
        for k in range(30):
            score = 0.3 if 10 <= k < 20 else 0.9  # blur: the detector is unsure
            o = tr.update(_box(100 + 5 * k), np.array([score], np.float32), CLS,
                          k * PERIOD_NS)
            ids.append(int(o.det_track_ids[0]))
        return ids

    ids = sequence(TrackingConfig())
    assert set(ids[2:]) == {ids[2]} and ids[2] > 0  # reported all through the dip
    # without the second stage (low detections ignored) the track is lost in the dip
    no_low = sequence(TrackingConfig(low_score=0.5))
    assert no_low[10:20] == [0] * 10 and no_low[-1] == ids[2]


def test_matching_is_class_aware():
    tr = Tracker()
    for k in range(5):
        tr.update(_box(100), ONE, CLS, k * PERIOD_NS)
    # a ball detection in the robot's place does not continue the robot's track
    o = tr.update(_box(100), ONE, np.array([0], np.int32), 5 * PERIOD_NS)
    (robot,) = [t for t in o.tracks() if t.class_id == 2]
    assert robot.state == TrackState.LOST and o.det_track_ids[0] == 0
    # class-agnostic: it does
    tr = Tracker(TrackingConfig(class_aware=False))
    for k in range(5):
        tr.update(_box(100), ONE, CLS, k * PERIOD_NS)
    o = tr.update(_box(100), ONE, np.array([0], np.int32), 5 * PERIOD_NS)
    assert o.det_track_ids[0] == 1


def test_class_filter_and_empty_frames():
    tr = Tracker(class_ids=(2,))
    o = tr.update(NONE_B, NONE_S, NONE_C, 0)
    assert len(o.ids) == 0 and o.det_track_ids.shape == (0,)
    boxes = np.concatenate([_box(100), _box(300)])
    for k in range(3):
        o = tr.update(boxes, np.array([0.9, 0.9], np.float32), np.array([0, 2], np.int32),
                      (k + 1) * PERIOD_NS)
    assert o.det_track_ids[0] == 0 and o.det_track_ids[1] > 0 and set(o.class_ids) == {2}


# --------------------------------------------------------------------------- ladder


def test_ids_survive_a_resolution_switch():
    """The latency ladder switches the model's input size: detections stay in camera
    pixels, with another quantisation, noise and a slight scale bias. Objects in view
    across the switch keep their ids."""
    gt = list(_gt())
    h = 260  # three objects are in view from 20 frames before to 20 after
    coarse = Noise(miss=0, miss_small=0, dip=0, fp_rate=0, jitter=0.05, quant=WIDTH / 320,
                   scale=1.04)
    fine = Noise(miss=0, miss_small=0, dip=0, fp_rate=0, jitter=0.02, quant=WIDTH / 416)
    dets = noisy_detections(gt, SEED, lambda k: fine if k < h else coarse)
    ids = run(dets, [f.t_ns for f in gt])
    crossing = 0
    for obj, a, b in runs_of(gt, 20):
        if a < h - 10 and b > h + 10:
            crossing += 1
            before = ids[h - 1][dets[h - 1].gt == obj]
            after = [ids[k][dets[k].gt == obj] for k in range(h, h + 10)]
            assert len(before) and before[0] > 0
            assert all(len(x) and x[0] == before[0] for x in after), obj
    assert crossing >= 3


# --------------------------------------------------------------------------- parts


def test_assignment_is_optimal_over_gated_pairs():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(5)
    for _ in range(200):
        n, m = rng.integers(0, 8, 2)
        sim = rng.uniform(0, 1, (n, m))
        gate = sim > rng.uniform(0.2, 0.9)
        r, c = assign(sim, gate)
        assert gate[r, c].all()
        assert len(set(r.tolist())) == len(r) and len(set(c.tolist())) == len(c)
        if n and m:
            w = np.where(gate, sim, 0.0)
            br, bc = linear_sum_assignment(w, maximize=True)
            assert sim[r, c].sum() == pytest.approx(w[br, bc].sum())


def test_config_validation():
    TrackingConfig(low_score=0.2, high_score=0.5, new_track_score=0.5)
    with pytest.raises(ValidationError):
        TrackingConfig(low_score=0.6, high_score=0.5)
    with pytest.raises(ValidationError):
        TrackingConfig(min_hits=0)
    with pytest.raises(ValidationError):
        TrackingConfig(unknown=1)  # type: ignore[call-arg]


def test_non_finite_boxes_are_ignored():
    tr = Tracker(TrackingConfig(min_hits=1))
    boxes = np.concatenate([_box(100), np.full((1, 4), np.nan, np.float32)])
    o = tr.update(boxes, np.array([0.9, 0.9], np.float32), np.array([2, 2], np.int32), 0)
    assert len(o.ids) == 1 and o.det_track_ids.tolist() == [1, 0]
