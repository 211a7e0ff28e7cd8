"""Scoring the tracker on synthetic sequences with ground-truth identities.

    python -m edged.tools.track_eval gt      # detections = ground truth + noise
    python -m edged.tools.track_eval model   # detections = the demo model on the frames
    python -m edged.tools.track_eval bench   # tracker cost per frame

The ground truth is `edged.synth`'s (`objects`, `render`): boxes, classes and
identities of every visible object, over sequences where the robots walk, the camera
walks and turns its head, objects occlude each other and leave and come back. Scoring
(`gt`, `model`) needs `trackeval` (the reference HOTA/CLEAR/Identity implementation) and,
for the side-by-side, Roboflow's `trackers` (a reference ByteTrack); neither belongs in
edged's dependencies: install them in a venv of their own (docs/benchmarks.md,
"Tracking"). Sequence building, the noise model and running edged's tracker need only
edged, so the tests use them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edged.synth import objects
from edged.tracking import Tracker, TrackingConfig, box_iou

FPS = 30.0
PERIOD_NS = int(round(1e9 / FPS))
# sequences with several objects in view (most seeds' cameras look at the grass near
# their feet much of the time): the first seeds of 0..29 averaging >= 2 objects a frame
# with 12 walking robots added (seed 26 left for the tests)
SEEDS = (4, 6, 9, 19, 25)
CROWD = 12
WIDTH, HEIGHT = 640, 480


@dataclass(frozen=True, slots=True)
class GtFrame:
    index: int
    t_ns: int
    boxes: np.ndarray  # [K, 4] float32
    classes: np.ndarray  # [K] int64
    ids: np.ndarray  # [K] int64, stable over the sequence


@dataclass(frozen=True, slots=True)
class Dets:
    boxes: np.ndarray  # [N, 4] float32
    scores: np.ndarray  # [N] float32
    class_ids: np.ndarray  # [N] int32
    gt: np.ndarray  # [N] int64: the ground-truth id it came from, -1 for a false positive


def gt_sequence(seed: int, frames: int, crowd: int = CROWD, start: int = 0,
                width: int = WIDTH, height: int = HEIGHT) -> list[GtFrame]:
    out = []
    for i in range(start, start + frames):
        b, c, ids = objects(seed, i, width, height, crowd)
        out.append(GtFrame(i, i * PERIOD_NS, b, c, ids))
    return out


@dataclass(frozen=True, slots=True)
class Noise:
    """A detector's errors, drawn per object and frame."""

    miss: float = 0.06  # chance a visible object is not detected
    miss_small: float = 0.3  # ... when its box is under 12 px high
    burst: float = 0.6  # chance a miss goes on into the next frame (occlusion-like runs)
    jitter: float = 0.04  # box edge noise, fraction of width (x) or height (y)
    dip: float = 0.12  # chance the score falls into [0.15, 0.5) (blur, partial view)
    fp_rate: float = 0.3  # false positives per frame (Poisson), score 0.1..0.7
    quant: float = WIDTH / 416  # edges rounded to the model's grid, in camera px
    scale: float = 1.0  # systematic box scale (a different model input size)


def noisy_detections(gt: Sequence[GtFrame], seed: int,
                     noise: Noise | Callable[[int], Noise] = Noise()) -> list[Dets]:
    """Detections for each frame from the truth, deterministic in `seed`. `noise` may be
    a function of the position in the sequence (a resolution switch)."""
    rng = np.random.default_rng([seed, 0x7EAC])
    missing: set[int] = set()
    out = []
    for k, f in enumerate(gt):
        nz = noise(k) if callable(noise) else noise
        boxes, scores, cls, src = [], [], [], []
        still_missing = set()
        for b, c, i in zip(f.boxes.astype(np.float64), f.classes, f.ids):
            h = b[3] - b[1]
            p = nz.burst if i in missing else (nz.miss_small if h < 12 else nz.miss)
            if rng.uniform() < p:
                still_missing.add(int(i))
                continue
            w = b[2] - b[0]
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            hw, hh = w * nz.scale / 2, h * nz.scale / 2
            e = rng.normal(0, nz.jitter, 4) * [w, h, w, h]
            bb = np.array([cx - hw, cy - hh, cx + hw, cy + hh]) + e
            bb = np.round(bb / nz.quant) * nz.quant
            bb = np.clip(bb, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
            if bb[2] - bb[0] < 2 or bb[3] - bb[1] < 2:
                continue
            s = rng.uniform(0.15, 0.5) if rng.uniform() < nz.dip else rng.uniform(0.55, 0.95)
            boxes.append(bb)
            scores.append(s)
            cls.append(int(c))
            src.append(int(i))
        missing = still_missing
        for _ in range(rng.poisson(nz.fp_rate)):
            w, h = rng.uniform(8, 80), rng.uniform(8, 120)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            boxes.append(np.array([x, y, x + w, y + h]))
            scores.append(rng.uniform(0.1, 0.7))
            cls.append(int(rng.integers(0, 3)))
            src.append(-1)
        out.append(Dets(np.array(boxes, np.float32).reshape(-1, 4),
                        np.array(scores, np.float32), np.array(cls, np.int32),
                        np.array(src, np.int64)))
    return out


# one frame of a tracker's published output: boxes (of the detections it matched), ids,
# classes
Published = tuple[np.ndarray, np.ndarray, np.ndarray]


def run_edged(dets: Sequence[Dets], times_ns: Sequence[int],
              config: TrackingConfig | None = None) -> list[Published]:
    """edged's tracker; publishes each confirmed track's matched detection."""
    tr = Tracker(config)
    out = []
    for d, t in zip(dets, times_ns):
        o = tr.update(d.boxes, d.scores, d.class_ids, t)
        keep = o.det_track_ids > 0
        out.append((d.boxes[keep], o.det_track_ids[keep], d.class_ids[keep].astype(np.int64)))
    return out


def run_reference(dets: Sequence[Dets], times_ns: Sequence[int],
                  per_class: bool = False) -> list[Published]:
    """Roboflow's `trackers` ByteTrack with its defaults (and capture timestamps), on the
    same detections; `per_class`: one tracker per class (it matches across classes)."""
    import supervision as sv
    from trackers import ByteTrackTracker

    trackers: dict[int, ByteTrackTracker] = {}
    out = []
    for d, t in zip(dets, times_ns):
        groups = [(c, d.class_ids == c) for c in (0, 1, 2)] if per_class else [
            (-1, np.ones(len(d.scores), bool))]
        boxes, ids, cls = [], [], []
        for c, sel in groups:
            tr = trackers.setdefault(c, ByteTrackTracker(frame_rate=FPS))
            svd = sv.Detections(xyxy=d.boxes[sel].astype(np.float32).reshape(-1, 4),
                                confidence=d.scores[sel], class_id=d.class_ids[sel].astype(int))
            r = tr.update(svd, timestamp=t * 1e-9)
            keep = r.tracker_id >= 0
            boxes.append(r.xyxy[keep])
            # per class: ids made unique across the class trackers
            ids.append(r.tracker_id[keep].astype(np.int64) * 4 + (c + 1))
            cls.append(r.class_id[keep].astype(np.int64))
        out.append((np.concatenate(boxes).reshape(-1, 4), np.concatenate(ids),
                    np.concatenate(cls)))
    return out


def score(gt: Sequence[Sequence[GtFrame]], pub: Sequence[Sequence[Published]],
          cross_check: bool = False) -> dict:
    """HOTA, IDF1, MOTA, ID switches with trackeval, summed over sequences. A pair counts
    as a match only between boxes of the same class (similarity = IoU, 0 otherwise).
    `cross_check`: IDF1, MOTA and ID switches from py-motmetrics as well (`*_mm`)."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    metrics = [HOTA(), CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}),
               Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False})]
    per_seq: list[dict[str, dict]] = [{} for _ in metrics]
    for s, (g_seq, p_seq) in enumerate(zip(gt, pub)):
        g_map: dict[int, int] = {}
        p_map: dict[int, int] = {}
        data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": [],
                      "num_timesteps": len(g_seq)}
        ng = nt = 0
        for g, (pb, pid, pc) in zip(g_seq, p_seq):
            gi = np.array([g_map.setdefault(int(i), len(g_map)) for i in g.ids], int)
            ti = np.array([p_map.setdefault(int(i), len(p_map)) for i in pid], int)
            sim = box_iou(g.boxes.astype(np.float64), pb.astype(np.float64))
            if sim.size:
                sim = np.where(g.classes[:, None] == pc[None, :], sim, 0.0)
            data["gt_ids"].append(gi)
            data["tracker_ids"].append(ti)
            data["similarity_scores"].append(sim)
            ng += len(gi)
            nt += len(ti)
        data.update(num_gt_ids=len(g_map), num_tracker_ids=len(p_map), num_gt_dets=ng,
                    num_tracker_dets=nt)
        for m, store in zip(metrics, per_seq):
            store[str(s)] = m.eval_sequence(data)
    hota, clear, ident = (m.combine_sequences(st) for m, st in zip(metrics, per_seq))
    out = {"HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
           "AssA": float(np.mean(hota["AssA"])), "IDF1": float(ident["IDF1"]),
           "MOTA": float(clear["MOTA"]), "IDSW": int(clear["IDSW"])}
    if cross_check:
        out.update(_motmetrics(gt, pub))
    return out


def _motmetrics(gt: Sequence[Sequence[GtFrame]], pub: Sequence[Sequence[Published]]
                ) -> dict:
    """IDF1, MOTA and ID switches again with py-motmetrics, a second, independent
    implementation (IoU >= 0.5 and the same class for a match, as above)."""
    import motmetrics as mm

    accs = []
    for g_seq, p_seq in zip(gt, pub):
        acc = mm.MOTAccumulator(auto_id=True)
        for g, (pb, pid, pc) in zip(g_seq, p_seq):
            iou = box_iou(g.boxes.astype(np.float64), pb.astype(np.float64))
            ok = (iou >= 0.5) & (g.classes[:, None] == pc[None, :]) if iou.size else iou > 0
            acc.update(g.ids.tolist(), pid.tolist(), np.where(ok, 1.0 - iou, np.nan))
        accs.append(acc)
    mh = mm.metrics.create()
    r = mh.compute_many(accs, metrics=["idf1", "mota", "num_switches"], generate_overall=True)
    o = r.loc["OVERALL"]
    return {"IDF1_mm": float(o["idf1"]), "MOTA_mm": float(o["mota"]),
            "IDSW_mm": int(o["num_switches"])}


# --------------------------------------------------------------------------- scenarios


def _drop_every_third(items: Sequence, keep_phase: int = 2) -> list:
    return [x for k, x in enumerate(items) if k % 3 != keep_phase]


def _scenarios(gt: list[GtFrame], seed: int, dets_for: Callable[[str], list[Dets]]
               ) -> dict[str, tuple[list[GtFrame], list[Dets]]]:
    full = dets_for("base")
    switch = dets_for("switch")
    return {"all frames": (gt, full),
            "every 3rd dropped": (_drop_every_third(gt), _drop_every_third(full)),
            "resolution switch": (gt, switch)}


def _switch_noise(n: int) -> Callable[[int], Noise]:
    coarse = replace(Noise(), quant=WIDTH / 320, jitter=0.06, scale=1.03)

    def f(k: int) -> Noise:
        return Noise() if k < n // 2 else coarse
    return f


TRACKERS: dict[str, Callable[[Sequence[Dets], Sequence[int]], list[Published]]] = {
    "edged": run_edged,
    "reference ByteTrack": run_reference,
    "reference ByteTrack, per class": lambda d, t: run_reference(d, t, per_class=True),
}


def evaluate(seqs: dict[str, list[tuple[list[GtFrame], list[Dets]]]],
             cross_check: bool = True) -> list[dict]:
    rows = []
    for scen, pairs in seqs.items():
        for name, run in TRACKERS.items():
            pubs, ms = [], []
            for g, d in pairs:
                t0 = time.perf_counter()
                pubs.append(run(d, [f.t_ns for f in g]))
                ms.append((time.perf_counter() - t0) * 1e3 / max(len(g), 1))
            r = score([g for g, _ in pairs], pubs, cross_check)
            r.update(scenario=scen, tracker=name, frames=sum(len(g) for g, _ in pairs),
                     ms_per_frame=float(np.mean(ms)))
            rows.append(r)
    return rows


def _table(rows: list[dict]) -> str:
    mm = all("IDF1_mm" in r for r in rows)
    lines = ["| scenario | tracker | frames | HOTA | DetA | AssA | IDF1 | MOTA | ID sw |"
             + (" IDF1 (mm) | MOTA (mm) | ID sw (mm) |" if mm else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if mm else "")]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['tracker']} | {r['frames']} | "
                     f"{100 * r['HOTA']:.1f} | {100 * r['DetA']:.1f} | {100 * r['AssA']:.1f} | "
                     f"{100 * r['IDF1']:.1f} | {100 * r['MOTA']:.1f} | {r['IDSW']} |"
                     + (f" {100 * r['IDF1_mm']:.1f} | {100 * r['MOTA_mm']:.1f} | "
                        f"{r['IDSW_mm']} |" if mm else ""))
    return "\n".join(lines)


def cmd_gt(args: argparse.Namespace) -> list[dict]:
    seqs: dict[str, list] = {}
    for seed in args.seeds:
        gt = gt_sequence(seed, args.frames)

        def dets_for(kind: str, gt: list[GtFrame] = gt, seed: int = seed) -> list[Dets]:
            return noisy_detections(gt, seed, Noise() if kind == "base"
                                    else _switch_noise(len(gt)))
        for scen, pair in _scenarios(gt, seed, dets_for).items():
            seqs.setdefault(scen, []).append(pair)
    return evaluate(seqs, not args.no_motmetrics)


def _model_dets(seed: int, frames: int, model: Path, cache: Path, conf: float,
                start: int = 0) -> list[Dets]:
    """The model's detections on frames [start, frames) of the rendered sequence (cached:
    rendering and inference are the slow part)."""
    path = cache / f"{model.stem}-s{seed}-c{CROWD}-{start}-{frames}-conf{conf}.npz"
    if path.exists():
        z = np.load(path)
        split = np.cumsum(z["counts"])[:-1]
        return [Dets(b, s, c, np.full(len(s), -1, np.int64)) for b, s, c in zip(
            np.split(z["boxes"], split), np.split(z["scores"], split),
            np.split(z["classes"], split))]
    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.results import Frame
    from edged.synth import render

    runner = ModelRunner(ModelOptions(path=model, threads=1, conf_threshold=conf))
    out = []
    for i in range(start, frames):
        img = render(seed, i, WIDTH, HEIGHT, CROWD).image
        d = runner.infer(Frame("eval", i, img, 0, 0)).detections
        out.append(Dets(d.boxes.astype(np.float32), d.scores.astype(np.float32),
                        d.class_ids.astype(np.int32), np.full(len(d), -1, np.int64)))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, counts=np.array([len(d.scores) for d in out]),
                        boxes=np.concatenate([d.boxes for d in out]).reshape(-1, 4),
                        scores=np.concatenate([d.scores for d in out]),
                        classes=np.concatenate([d.class_ids for d in out]))
    return out


def cmd_model(args: argparse.Namespace) -> list[dict]:
    models = Path(__file__).resolve().parents[1] / "models"
    big, small = models / "yoeo-demo-int8.onnx", models / "yoeo-demo-int8-320.onnx"
    seqs: dict[str, list] = {}
    for seed in args.seeds:
        gt = gt_sequence(seed, args.frames)
        d416 = _model_dets(seed, args.frames, big, args.cache, args.conf)

        def dets_for(kind: str, seed: int = seed, d416: list[Dets] = d416) -> list[Dets]:
            if kind == "base":
                return d416
            # the ladder's rung switch: the 320 px model from the middle on
            h = args.frames // 2
            return d416[:h] + _model_dets(seed, args.frames, small, args.cache, args.conf, h)
        for scen, pair in _scenarios(gt, seed, dets_for).items():
            seqs.setdefault(scen, []).append(pair)
    return evaluate(seqs, not args.no_motmetrics)


def _reference_step() -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], object]:
    import supervision as sv
    from trackers import ByteTrackTracker

    ref = ByteTrackTracker(frame_rate=FPS)

    def step(b: np.ndarray, s: np.ndarray, c: np.ndarray, t: int) -> object:
        return ref.update(sv.Detections(xyxy=b, confidence=s, class_id=c), timestamp=t * 1e-9)
    return step


def bench(sizes: Sequence[int] = (10, 50, 200), frames: int = 600, seed: int = 0,
          reference: bool = False) -> dict:
    """Tracker time per `update` with n objects moving and jittering, 5 % of them missed
    in each frame (p50/p99 in ms, after a warm-up of 50 frames). `reference`: Roboflow's
    ByteTrack instead, given the same arrays (its sv.Detections built inside the timing)."""
    rng = np.random.default_rng(seed)
    res = {}
    for n in sizes:
        xy = rng.uniform(0, [WIDTH, HEIGHT], (n, 2))
        wh = rng.uniform(10, 40, (n, 2))
        v = rng.normal(0, 60, (n, 2))
        cls = rng.integers(0, 3, n).astype(np.int32)
        tr = Tracker()
        step: Callable[[np.ndarray, np.ndarray, np.ndarray, int], object] = (
            _reference_step() if reference else tr.update)
        ms = []
        for f in range(frames):
            t = f * PERIOD_NS
            c = xy + v * (t * 1e-9) + rng.normal(0, 1.0, (n, 2))
            boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
            scores = rng.uniform(0.3, 0.95, n).astype(np.float32)
            keep = rng.uniform(size=n) > 0.05
            t0 = time.perf_counter_ns()
            step(boxes[keep], scores[keep], cls[keep], t)
            ms.append((time.perf_counter_ns() - t0) / 1e6)
        m = np.array(ms[50:])
        res[n] = {"p50_ms": float(np.percentile(m, 50)), "p99_ms": float(np.percentile(m, 99))}
    return res


def switch_causes(seeds: Sequence[int] = SEEDS, frames: int = 1000) -> dict[str, int]:
    """Why objects change ids under edged's tracker (gt detections): each time an object
    is published under another id than the last time, by what happened in between."""
    causes = {"out of view > lost_timeout_s": 0, "out of view, shorter": 0,
              "gap while in view": 0, "from one frame to the next": 0}
    timeout = TrackingConfig().lost_timeout_s
    for seed in seeds:
        gt = gt_sequence(seed, frames)
        tr = Tracker()
        last: dict[int, tuple[int, int]] = {}  # object -> (track id, frame)
        for k, (f, d) in enumerate(zip(gt, noisy_detections(gt, seed))):
            o = tr.update(d.boxes, d.scores, d.class_ids, f.t_ns)
            for obj, tid in zip(d.gt.tolist(), o.det_track_ids.tolist()):
                if obj < 0 or tid <= 0:
                    continue
                if obj in last and last[obj][0] != tid:
                    k0 = last[obj][1]
                    away = sum(obj not in gt[j].ids for j in range(k0 + 1, k))
                    if k == k0 + 1:
                        causes["from one frame to the next"] += 1
                    elif away / FPS > timeout:
                        causes["out of view > lost_timeout_s"] += 1
                    elif away:
                        causes["out of view, shorter"] += 1
                    else:
                        causes["gap while in view"] += 1
                last[obj] = (tid, k)
    return causes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edged.tools.track_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gt", help="ground truth + noise, several seeds")
    m = sub.add_parser("model", help="the demo model's detections on the rendered frames")
    for p, frames in ((g, 1000), (m, 1000)):
        p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS if p is g
                                                                    else SEEDS[:3]))
        p.add_argument("--frames", type=int, default=frames, help="frames per sequence")
        p.add_argument("--json", action="store_true")
        p.add_argument("--no-motmetrics", action="store_true",
                       help="skip the cross-check with py-motmetrics")
    m.add_argument("--conf", type=float, default=0.1, help="the model's score threshold")
    m.add_argument("--cache", type=Path, default=Path.home() / ".cache/edged/track_eval")
    b = sub.add_parser("bench", help="tracker cost per frame")
    b.add_argument("--frames", type=int, default=600)
    b.add_argument("--reference", action="store_true", help="time Roboflow's ByteTrack")
    sub.add_parser("causes", help="why objects change ids (gt detections, edged)")
    args = ap.parse_args(argv)
    if args.cmd == "causes":
        print(json.dumps(switch_causes(), indent=2))
        return 0
    if args.cmd == "bench":
        print(json.dumps(bench(frames=args.frames, reference=args.reference), indent=2))
        return 0
    rows = cmd_gt(args) if args.cmd == "gt" else cmd_model(args)
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
