"""The tracker's scores against set bounds and beside a reference ByteTrack.

Needs `trackeval` (the reference HOTA/CLEAR/Identity code) and Roboflow's `trackers`
(its ByteTrack, with supervision and a GUI OpenCV): neither may enter edged's venv, so
this runs in a venv of its own, `.venv-track` (docs/benchmarks.md, "Tracking"), where
EDGED_REQUIRE_TRACKING_REFS=1 makes a missing package a failure instead of a skip.

Short sequences (2 x 400 frames of the scored seeds, ground truth + noise): the full
table over 5,000 frames and the demo model's detections is in docs/benchmarks.md.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("EDGED_REQUIRE_TRACKING_REFS") != "1":
    pytest.importorskip("trackeval")
    pytest.importorskip("trackers")

from edged.tools.track_eval import (  # noqa: E402
    SEEDS,
    gt_sequence,
    noisy_detections,
    run_edged,
    run_reference,
    score,
)


@pytest.fixture(scope="module")
def scores() -> dict[str, dict]:
    gts, dets = [], []
    for seed in SEEDS[:2]:
        g = gt_sequence(seed, 400)
        gts.append(g)
        dets.append(noisy_detections(g, seed))
    times = [[f.t_ns for f in g] for g in gts]
    return {
        "edged": score(gts, [run_edged(d, t) for d, t in zip(dets, times)]),
        "reference": score(gts, [run_reference(d, t) for d, t in zip(dets, times)]),
        "reference per class": score(gts, [run_reference(d, t, per_class=True)
                                           for d, t in zip(dets, times)]),
    }


def test_scores_within_bounds(scores):
    e = scores["edged"]
    assert e["HOTA"] >= 0.40 and e["IDF1"] >= 0.38 and e["MOTA"] >= 0.75, e


def test_not_worse_than_the_reference_bytetrack(scores):
    """On these 800 frames edged is 0.2-0.8 points below the per-class reference in
    HOTA and IDF1 and has fewer ID switches (2026-12-07); 2 points of slack hold a
    regression, not noise. Over the 5,000 + 3,000 frames of docs/benchmarks.md it is
    level or ahead."""
    e = scores["edged"]
    for name in ("reference", "reference per class"):
        r = scores[name]
        assert e["HOTA"] >= r["HOTA"] - 0.02, (name, e, r)
        assert e["IDF1"] >= r["IDF1"] - 0.02, (name, e, r)
        assert e["IDSW"] <= r["IDSW"] * 1.05 + 2, (name, e, r)
