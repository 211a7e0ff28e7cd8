"""`tracking:` settings: the tracker's parameters (docs/tracking.md explains each).

`Config.tracking` (global) and `CameraConfig.tracking` (the global section with the
camera's own keys merged over it) hold one; `classes` are names, resolved to the
model's class ids by the daemon (`edged.daemon.tracking`), which knows the model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrackingConfig(BaseModel):
    """How detections become tracks. Times are seconds of capture time, not frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # detection class names to track; None: every class the model detects
    classes: tuple[str, ...] | None = None
    # detections at or above `high_score` are matched first (and may start tracks);
    # those in [low_score, high_score) only keep existing tracks alive (second stage)
    high_score: float = Field(0.5, ge=0.0, le=1.0)
    low_score: float = Field(0.1, ge=0.0, le=1.0)
    # an unmatched high detection starts a (tentative) track at or above this score
    new_track_score: float = Field(0.6, ge=0.0, le=1.0)
    # IoU gates (predicted track box vs detection box) of the three matching stages
    match_iou: float = Field(0.1, gt=0.0, le=1.0)  # confirmed and lost tracks, high dets
    low_match_iou: float = Field(0.2, gt=0.0, le=1.0)  # tracked (and lost) tracks, low dets
    tentative_match_iou: float = Field(0.1, gt=0.0, le=1.0)  # tentative tracks, high dets
    # the second stage (low detections) may find lost tracks too, not only those matched
    # in the previous frame (ByteTrack's paper: only those; Roboflow's trackers: all)
    low_match_lost: bool = True
    # tentative tracks take part in the first stage's assignment with the confirmed and
    # lost ones (Roboflow's ByteTrack), instead of getting what those leave (the paper's
    # order, the default: fewer id switches on the demo model's detections)
    joint_first_stage: bool = False
    # rank candidate pairs by IoU x score (ByteTrack's "fuse score") in the first stage
    fuse_score: bool = True
    # a detection of another class never updates a track
    class_aware: bool = True
    # consecutive matched frames before a track is confirmed (1: at once)
    min_hits: int = Field(2, ge=1)
    # a confirmed track unmatched for longer than this is removed
    lost_timeout_s: float = Field(1.5, ge=0.0)
    # (defaults tuned on sequences 14, 17, 20, 26, 32, 42, 54 and 60, not on those scored
    # in docs/benchmarks.md)
    # Kalman filter (state: centre x, y, width, height and their rates, camera pixels):
    # measurement noise, a fraction of the box's width (x, w) or height (y, h) plus 1 px
    measurement_std: float = Field(0.1, gt=0.0)
    # acceleration noise in px/s^2: a fraction of the box size per s^2 plus an absolute
    # part (a head-mounted camera turns: image motion does not scale with the object)
    accel_std_rel: float = Field(2.0, ge=0.0)
    accel_std_px: float = Field(1500.0, ge=0.0)
    # velocity uncertainty of a new track (px/s): fraction of its size per s plus absolute
    velocity_init_std_rel: float = Field(2.0, ge=0.0)
    velocity_init_std_px: float = Field(200.0, ge=0.0)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> TrackingConfig:
        if not self.low_score <= self.high_score <= self.new_track_score:
            raise ValueError("need low_score <= high_score <= new_track_score (got "
                             f"{self.low_score}, {self.high_score}, {self.new_track_score})")
        return self
