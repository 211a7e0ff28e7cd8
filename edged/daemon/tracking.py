"""The tracking stage: one `edged.tracking.Tracker` per camera, run on each result after
post-processing, in capture order, on the event loop (`CameraLoops._finish`), before the
result goes to the publish stage.

Trackers are kept by camera name, not with the camera's loop, so that what the daemon
does around them keeps the ids: the ladder switching rungs (boxes stay in camera
pixels), a SIGHUP reload that keeps the model and the camera's `tracking:` section. A
source that reconnects (or a camera a reload restarts) starts a new epoch of ids from
its first frame captured after that; ids keep counting, so they never repeat in a boot.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edged.config import Config
from edged.errors import UserError
from edged.results import Result, Tracks
from edged.telemetry import CameraState, StateChanged
from edged.tracking import Tracker, TrackingConfig, TrackState

TRAIL_POINTS = 30  # box centres kept per track for trails: 2 s at 15 fps

_NO_TRAIL = np.zeros((0, 2), np.float32)


class TrackingError(UserError):
    """A `tracking:` section that does not fit the model (an unknown class name)."""


def resolve_classes(cfg: TrackingConfig, class_names: Sequence[str], where: str,
                    model: str = "") -> tuple[int, ...] | None:
    """`cfg.classes` (names) as the model's class ids; None: every class.

    `where` names the section for the error ("tracking", "cameras.front.tracking")."""
    if cfg.classes is None:
        return None
    ids = []
    for name in cfg.classes:
        if name not in class_names:
            close = difflib.get_close_matches(name, class_names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TrackingError(
                f"{where}.classes: {name!r} is not a detection class of the model"
                f"{f' {model}' if model else ''} (its classes: {', '.join(class_names)})"
                f"{hint}")
        ids.append(class_names.index(name))
    return tuple(sorted(set(ids)))


def check_config(config: Config, class_names: Sequence[str], model: str = "") -> None:
    """Every enabled `tracking:` section's class names against the model's classes:
    TrackingError for the first unknown one (where it is: the global section, or the
    camera whose own section differs)."""
    if config.tracking.enabled:
        resolve_classes(config.tracking, class_names, "tracking", model)
    for name, cam in config.cameras.items():
        if cam.enabled and cam.tracking.enabled and cam.tracking.classes != (
                config.tracking.classes):
            resolve_classes(cam.tracking, class_names, f"cameras.{name}.tracking", model)


@dataclass(slots=True)
class _CameraTracker:
    tracker: Tracker
    class_ids: tuple[int, ...] | None
    # a reconnect: the first frame captured at or after this monotonic time (ns) starts
    # a new epoch; frames of the old connection still in flight keep the old one
    epoch_from_ns: int | None = None
    active: int = 0  # confirmed tracks matched in the last frame
    # track id -> its last TRAIL_POINTS box centres (camera px)
    trails: dict[int, deque[tuple[float, float]]] = field(default_factory=dict)

    def new_epoch(self) -> None:
        self.tracker.new_epoch()
        self.epoch_from_ns = None
        self.trails.clear()


class TrackingStage:
    """The trackers of every camera (see the module's docstring). Used on the event
    loop's thread only."""

    def __init__(self, config: Config, class_names: Sequence[str], model: str = "") -> None:
        self._cams: dict[str, _CameraTracker] = {}
        # per camera name, the id and epoch a replacing tracker starts at: a camera's ids
        # never repeat in a boot, even when a reload removes it and adds it back
        self._resume: dict[str, tuple[int, int]] = {}
        self.configure(config, class_names, model)

    def configure(self, config: Config, class_names: Sequence[str], model: str = "",
                  restarted: Sequence[str] = ()) -> None:
        """Trackers for `config`'s enabled cameras. A camera whose tracking section and
        classes are unchanged keeps its tracker (ids go on); `restarted` cameras (their
        source reopened) start a new epoch; a changed section replaces the tracker, a new
        epoch with ids counting on. TrackingError for an unknown class name, before any
        tracker changes."""
        check_config(config, class_names, model)
        old = self._cams
        for name, ct in old.items():
            self._resume[name] = (ct.tracker.next_id, ct.tracker.epoch + 1)
        self._cams = {}
        for name, cam in config.cameras.items():
            tc = cam.tracking
            if not (cam.enabled and tc.enabled):
                continue
            ids = resolve_classes(tc, class_names, f"cameras.{name}.tracking", model)
            prev = old.get(name)
            if prev is not None and prev.tracker.config == tc and prev.class_ids == ids:
                if name in restarted:
                    prev.new_epoch()
                self._cams[name] = prev
                continue
            first_id, epoch = self._resume.get(name, (1, 0))
            self._cams[name] = _CameraTracker(
                Tracker(tc, ids, first_id=first_id, epoch=epoch), ids)

    def tracking(self, camera: str) -> bool:
        return camera in self._cams

    def reconnected(self, camera: str, t_mono_ns: int) -> int | None:
        """The camera's source is reconnecting: its first frame captured from now on
        starts a new epoch. Returns that epoch (None: the camera is not tracked)."""
        ct = self._cams.get(camera)
        if ct is None:
            return None
        if ct.epoch_from_ns is None:
            ct.epoch_from_ns = t_mono_ns
        return ct.tracker.epoch + 1

    def announce(self, event: StateChanged) -> StateChanged:
        """A camera's state change, on the loop: `reconnecting` starts the camera's next
        epoch (`reconnected`), which the event then announces."""
        if event.state != CameraState.RECONNECTING:
            return event
        epoch = self.reconnected(event.camera, time.monotonic_ns())
        return dataclasses.replace(event, track_epoch=epoch)

    def update(self, result: Result) -> None:
        """Track one result's detections; sets `result.tracks` (left None when the
        camera is not tracked)."""
        ct = self._cams.get(result.camera)
        if ct is None:
            return
        t0 = time.perf_counter()
        if ct.epoch_from_ns is not None and result.t_capture_mono_ns >= ct.epoch_from_ns:
            ct.new_epoch()
        epoch = ct.tracker.epoch
        out = ct.tracker.update_detections(result.detections, result.t_capture_mono_ns)
        if out.epoch != epoch:  # capture time went backwards (a replay started over)
            ct.trails.clear()
        ct.active = int(np.count_nonzero(out.states == TrackState.CONFIRMED))
        for tid in out.removed:
            ct.trails.pop(tid, None)
        trails = []
        boxes = np.asarray(result.detections.boxes, np.float32).reshape(-1, 4)
        for tid, b in zip(out.det_track_ids.tolist(), boxes.tolist()):
            if not tid:
                trails.append(_NO_TRAIL)
                continue
            trail = ct.trails.get(tid)
            if trail is None:
                trail = ct.trails[tid] = deque(maxlen=TRAIL_POINTS)
            trail.append(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
            trails.append(np.array(trail, np.float32))
        result.tracks = Tracks(out.epoch, out.det_track_ids, out.det_velocities, ct.active,
                               tuple(trails))
        # its own stage in the timings: what tracking adds to the camera's latency
        result.timings_ms["track"] = (time.perf_counter() - t0) * 1e3

    def active(self, camera: str) -> int | None:
        """Confirmed tracks in the camera's last frame; None: not tracked."""
        ct = self._cams.get(camera)
        return None if ct is None else ct.active
