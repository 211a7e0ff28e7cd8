"""A ByteTrack-class multi-object tracker for one camera.

`Tracker.update(boxes, scores, class_ids, t_ns)` takes one frame's detections (camera
pixels, as `edged.results.Detections` holds them) and its capture time, and returns a
`TrackerOutput`: every live track, and for each input detection the id of the
confirmed track it updated. Per frame:

1. every track's Kalman state is predicted to `t_ns` (dt from capture timestamps);
2. confirmed and lost tracks are matched to the high-score detections (IoU gate,
   ranked by IoU x score), with an optimal assignment (with `joint_first_stage`,
   tentative tracks take part in the same assignment);
3. confirmed (and by default lost) tracks still unmatched are matched to the low-score
   detections: this is what keeps a track through occlusion and motion blur, when the
   detector's score dips (ByteTrack's idea);
4. confirmed tracks still unmatched become lost;
5. tentative tracks are matched to the remaining high-score detections; a tentative
   track that misses a frame is removed, one with `min_hits` consecutive hits is
   confirmed;
6. remaining detections scoring at least `new_track_score` start tentative tracks;
7. lost tracks unmatched for more than `lost_timeout_s` are removed.

Matching is class-aware by default. Ids come from a counter that only grows for the
tracker's life: `new_epoch()` (camera reconnect) or a capture time that goes backwards
(a replay starting over) clears the tracks and bumps `epoch`, and ids still never repeat.

The state is kept as arrays (structure of arrays) and every step is vectorised over
tracks: the cost per frame is a few dozen numpy calls whatever the number of tracks
(docs/benchmarks.md, "Tracking").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

from edged.tracking.config import TrackingConfig
from edged.tracking.kalman import NDIM, BoxKalman, cxcywh_to_xyxy, xyxy_to_cxcywh


class TrackState(enum.IntEnum):
    TENTATIVE = 0  # seen, not yet `min_hits` frames in a row: not reported as an object
    CONFIRMED = 1  # matched this frame (or within the frame's association)
    LOST = 2  # confirmed, not matched this frame; kept up to `lost_timeout_s`


@dataclass(frozen=True, slots=True)
class Track:
    """One track after a frame's update."""

    track_id: int  # > 0, unique over the tracker's life (all epochs)
    class_id: int
    state: TrackState
    box: tuple[float, float, float, float]  # x1, y1, x2, y2: the filter's estimate, camera px
    velocity: tuple[float, float]  # box centre, px/s (from capture timestamps)
    score: float  # score of the last detection matched
    det_index: int  # index of the detection matched this frame, -1 when none
    age: int  # frames (updates) since the track was born, 0 on its first frame
    hits: int  # frames in which it was matched
    age_s: float  # seconds since birth
    lost_s: float  # seconds since it was last matched (0 when matched this frame)


@dataclass(frozen=True, slots=True)
class TrackerOutput:
    """The tracker's view after one frame, as arrays (one row per live track) and, per
    input detection, which confirmed track it belongs to."""

    t_ns: int
    epoch: int
    ids: np.ndarray  # [T] int64
    class_ids: np.ndarray  # [T] int64
    states: np.ndarray  # [T] int8 (TrackState values)
    boxes: np.ndarray  # [T, 4] float32, x1 y1 x2 y2, camera px
    velocities: np.ndarray  # [T, 2] float32, px/s
    scores: np.ndarray  # [T] float32
    det_index: np.ndarray  # [T] int64, -1: not matched this frame
    ages: np.ndarray  # [T] int64 (frames)
    hits: np.ndarray  # [T] int64
    age_s: np.ndarray  # [T] float64
    lost_s: np.ndarray  # [T] float64
    # per input detection (in input order): id of the confirmed track it updated, 0 for
    # none (a tentative track, a false positive, a class not tracked)
    det_track_ids: np.ndarray  # [N] int64
    det_velocities: np.ndarray  # [N, 2] float32 px/s, 0 where det_track_ids is 0
    removed: tuple[int, ...]  # ids removed in this update

    def tracks(self) -> list[Track]:
        """The rows as `Track` records (built on demand: the arrays are the fast path)."""
        out = []
        boxes, vel = self.boxes.tolist(), self.velocities.tolist()
        for i in range(len(self.ids)):
            b, v = boxes[i], vel[i]
            out.append(Track(int(self.ids[i]), int(self.class_ids[i]),
                             TrackState(int(self.states[i])), (b[0], b[1], b[2], b[3]),
                             (v[0], v[1]), float(self.scores[i]), int(self.det_index[i]),
                             int(self.ages[i]), int(self.hits[i]), float(self.age_s[i]),
                             float(self.lost_s[i])))
        return out

    def confirmed(self) -> list[Track]:
        """Tracks matched this frame and confirmed: the objects to publish."""
        return [t for t in self.tracks() if t.state == TrackState.CONFIRMED]

    def track(self, track_id: int) -> Track | None:
        for t in self.tracks():
            if t.track_id == track_id:
                return t
        return None


class DetectionsLike(Protocol):
    # read-only: `edged.results.Detections` is a frozen dataclass
    @property
    def boxes(self) -> np.ndarray: ...
    @property
    def scores(self) -> np.ndarray: ...
    @property
    def class_ids(self) -> np.ndarray: ...


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of a [N, 4] with every box of b [M, 4] (x1 y1 x2 y2): [N, M]
    (float32: pixel boxes need no more, and it halves the memory traffic)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    at = np.ascontiguousarray(np.asarray(a, np.float32).T)
    bt = np.ascontiguousarray(np.asarray(b, np.float32).T)
    iw = np.minimum.outer(at[2], bt[2])
    iw -= np.maximum.outer(at[0], bt[0])
    np.maximum(iw, 0.0, out=iw)
    ih = np.minimum.outer(at[3], bt[3])
    ih -= np.maximum.outer(at[1], bt[1])
    np.maximum(ih, 0.0, out=ih)
    iw *= ih  # intersection
    union = np.add.outer((at[2] - at[0]) * (at[3] - at[1]), (bt[2] - bt[0]) * (bt[3] - bt[1]))
    union -= iw
    np.maximum(union, 1e-6, out=union)
    iw /= union
    return iw


def assign(sim: np.ndarray, gate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the assignment maximising the summed similarity over the
    pairs that pass the gate (pairs outside it can never be chosen).

    A row and a column that are each other's only candidate are an isolated pair that
    any optimal assignment takes; only what remains goes to the solver (with many
    objects, most pairs are isolated and the solver's cubic cost vanishes)."""
    if sim.size == 0:
        return _EMPTY_I, _EMPTY_I
    row_n = gate.sum(axis=1)
    col_n = gate.sum(axis=0)
    lone = gate & (row_n == 1)[:, None] & (col_n == 1)[None, :]
    r1, c1 = np.nonzero(lone)
    free_r = row_n > 0
    free_c = col_n > 0
    free_r[r1] = False
    free_c[c1] = False
    rest_r = np.flatnonzero(free_r)
    rest_c = np.flatnonzero(free_c)
    if len(rest_r) == 0 or len(rest_c) == 0:
        return r1.astype(np.int64), c1.astype(np.int64)
    g = gate[np.ix_(rest_r, rest_c)]
    w = np.where(g, sim[np.ix_(rest_r, rest_c)], 0.0)
    rows, cols = linear_sum_assignment(w, maximize=True)
    keep = g[rows, cols]
    return (np.concatenate([r1, rest_r[rows[keep]]]).astype(np.int64),
            np.concatenate([c1, rest_c[cols[keep]]]).astype(np.int64))


_EMPTY_I = np.zeros(0, np.int64)
# TrackState values as plain ints: comparisons of arrays with them skip enum lookups
_TENTATIVE, _CONFIRMED, _LOST = (int(s) for s in TrackState)


class Tracker:
    """Tracks of one camera (see the module's docstring)."""

    def __init__(self, config: TrackingConfig | None = None,
                 class_ids: tuple[int, ...] | None = None, *, first_id: int = 1,
                 epoch: int = 0) -> None:
        """`class_ids`: the detection classes to track (None: all); the daemon resolves
        `config.classes` (names) to these with the model's class list. `first_id` and
        `epoch`: where a tracker that replaces another (new parameters for the same
        camera) starts, so that ids still never repeat within the boot."""
        if first_id < 1 or epoch < 0:
            raise ValueError(f"first_id must be >= 1 and epoch >= 0 (got {first_id}, {epoch})")
        self.config = config or TrackingConfig()
        c = self.config
        self.kf = BoxKalman(c.measurement_std, c.accel_std_rel, c.accel_std_px,
                            c.velocity_init_std_rel, c.velocity_init_std_px)
        self.class_filter = None if class_ids is None else np.array(sorted(class_ids), np.int64)
        self.epoch = epoch
        self._next_id = first_id
        self._t_ns: int | None = None
        self._clear()

    def _clear(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self._cls = np.zeros(0, np.int64)
        self._state = np.zeros(0, np.int8)
        self._mean = np.zeros((0, 2 * NDIM))
        self._var = np.zeros((0, 3, NDIM))
        self._hits = np.zeros(0, np.int64)
        self._age = np.zeros(0, np.int64)
        self._birth_ns = np.zeros(0, np.int64)
        self._last_ns = np.zeros(0, np.int64)
        self._score = np.zeros(0, np.float32)

    @property
    def next_id(self) -> int:
        return self._next_id

    def __len__(self) -> int:
        return len(self._ids)

    def new_epoch(self) -> int:
        """Forget every track (the camera reconnected, the source restarted): the next
        ids keep counting up. Returns the new epoch number."""
        self._clear()
        self._t_ns = None
        self.epoch += 1
        return self.epoch

    def update_detections(self, det: DetectionsLike, t_ns: int) -> TrackerOutput:
        """`update` with an `edged.results.Detections` (or anything with its fields)."""
        return self.update(det.boxes, det.scores, det.class_ids, t_ns)

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
               t_ns: int) -> TrackerOutput:
        """One frame: detections in camera pixels (x1 y1 x2 y2), their scores and
        classes, and the frame's capture time in nanoseconds (any clock that only goes
        forward, e.g. time.monotonic_ns() at capture)."""
        c = self.config
        t_ns = int(t_ns)
        if self._t_ns is not None and t_ns < self._t_ns:
            self.new_epoch()  # time went backwards: a replay started over
        dt = 0.0 if self._t_ns is None else (t_ns - self._t_ns) * 1e-9
        self._t_ns = t_ns

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        dcls = np.asarray(class_ids, np.int64).reshape(-1)
        n_det = len(scores)

        # 1. predict (lost tracks keep moving, but no longer grow or shrink)
        lost = self._state == _LOST
        if lost.any():
            self._mean[lost, NDIM + 2:] = 0.0
        self.kf.predict(self._mean, self._var, dt)
        pred = cxcywh_to_xyxy(self._mean[:, :NDIM])

        valid = (scores >= c.low_score) & np.isfinite(boxes).all(axis=1)
        if self.class_filter is not None:
            valid &= np.isin(dcls, self.class_filter)
        high = valid & (scores >= c.high_score)
        low = valid & ~high
        det_free = high.copy()  # high detections not yet taken
        track_det = np.full(len(self._ids), -1, np.int64)

        iou = box_iou(pred, boxes)
        if c.class_aware and iou.size:
            iou = np.where(self._cls[:, None] == dcls[None, :], iou, 0.0)

        def stage(rows_sel: np.ndarray, cols_sel: np.ndarray, gate_iou: float,
                  fuse: bool) -> None:
            tr = np.flatnonzero(rows_sel)
            de = np.flatnonzero(cols_sel)
            if len(tr) == 0 or len(de) == 0:
                return
            sub = iou[np.ix_(tr, de)]
            sim = sub * scores[de][None, :] if fuse else sub
            r, k = assign(sim, sub >= gate_iou)
            track_det[tr[r]] = de[k]

        # 2. confirmed and lost (and tentative, `joint_first_stage`) tracks vs high dets
        first = np.ones(len(self._ids), bool) if c.joint_first_stage else (
            self._state != _TENTATIVE)
        stage(first, det_free, c.match_iou, c.fuse_score)
        det_free[track_det[track_det >= 0]] = False
        # 3. confirmed (and lost, `low_match_lost`) tracks still unmatched vs low detections
        second = (self._state != _TENTATIVE) if c.low_match_lost else (
            self._state == _CONFIRMED)
        second &= track_det < 0
        stage(second, low, c.low_match_iou, False)
        # 5. tentative tracks (still unmatched) vs the remaining high detections
        stage((self._state == _TENTATIVE) & (track_det < 0), det_free,
              c.tentative_match_iou, False)

        matched = track_det >= 0
        midx = np.flatnonzero(matched)
        if len(midx):
            self.kf.update(self._mean, self._var, midx, xyxy_to_cxcywh(boxes[track_det[midx]]))
            self._hits[midx] += 1
            self._last_ns[midx] = t_ns
            self._score[midx] = scores[track_det[midx]]
        self._age += 1

        tentative = self._state == _TENTATIVE
        # 4. unmatched confirmed -> lost; matched lost -> confirmed
        self._state[~tentative & matched] = _CONFIRMED
        self._state[~tentative & ~matched] = _LOST
        self._state[tentative & matched & (self._hits >= c.min_hits)] = _CONFIRMED

        # removals: tentative that missed, lost past the timeout
        since = (t_ns - self._last_ns) * 1e-9
        drop = (tentative & ~matched) | ((self._state == _LOST)
                                         & (since > c.lost_timeout_s))
        removed: tuple[int, ...] = ()
        if drop.any():
            removed = tuple(int(i) for i in self._ids[drop])
            self._keep(~drop)
            track_det = track_det[~drop]

        # 6. births
        taken = np.zeros(n_det, bool)
        taken[track_det[track_det >= 0]] = True
        born = np.flatnonzero(high & ~taken & (scores >= c.new_track_score))
        if len(born):
            self._birth(boxes[born], scores[born], dcls[born], t_ns)
            track_det = np.concatenate([track_det, born])

        return self._output(t_ns, track_det, n_det, removed)

    def _keep(self, keep: np.ndarray) -> None:
        self._ids = self._ids[keep]
        self._cls = self._cls[keep]
        self._state = self._state[keep]
        self._mean = self._mean[keep]
        self._var = self._var[keep]
        self._hits = self._hits[keep]
        self._age = self._age[keep]
        self._birth_ns = self._birth_ns[keep]
        self._last_ns = self._last_ns[keep]
        self._score = self._score[keep]

    def _birth(self, boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray, t_ns: int) -> None:
        n = len(scores)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        mean, var = self.kf.initiate(xyxy_to_cxcywh(boxes))
        state = TrackState.CONFIRMED if self.config.min_hits <= 1 else TrackState.TENTATIVE
        stamp = np.full(n, t_ns, np.int64)
        self._ids = np.concatenate([self._ids, ids])
        self._cls = np.concatenate([self._cls, cls])
        self._state = np.concatenate([self._state, np.full(n, state, np.int8)])
        self._mean = np.concatenate([self._mean, mean])
        self._var = np.concatenate([self._var, var])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        self._age = np.concatenate([self._age, np.zeros(n, np.int64)])
        self._birth_ns = np.concatenate([self._birth_ns, stamp])
        self._last_ns = np.concatenate([self._last_ns, stamp])
        self._score = np.concatenate([self._score, scores.astype(np.float32)])

    def _output(self, t_ns: int, track_det: np.ndarray, n_det: int,
                removed: tuple[int, ...]) -> TrackerOutput:
        vel = self._mean[:, NDIM:NDIM + 2].astype(np.float32)
        det_ids = np.zeros(n_det, np.int64)
        det_vel = np.zeros((n_det, 2), np.float32)
        pub = (self._state == _CONFIRMED) & (track_det >= 0)
        if pub.any():
            det_ids[track_det[pub]] = self._ids[pub]
            det_vel[track_det[pub]] = vel[pub]
        return TrackerOutput(
            t_ns=t_ns, epoch=self.epoch, ids=self._ids.copy(), class_ids=self._cls.copy(),
            states=self._state.copy(),
            boxes=cxcywh_to_xyxy(self._mean[:, :NDIM]).astype(np.float32), velocities=vel,
            scores=self._score.copy(), det_index=track_det, ages=self._age.copy(),
            hits=self._hits.copy(), age_s=(t_ns - self._birth_ns) * 1e-9,
            lost_s=(t_ns - self._last_ns) * 1e-9, det_track_ids=det_ids,
            det_velocities=det_vel, removed=removed)
