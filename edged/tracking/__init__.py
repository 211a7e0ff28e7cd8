"""Multi-object tracking: persistent ids and velocities for a camera's detections.

Stands alone (numpy and scipy only, no part of the daemon); docs/tracking.md tells how
it works and how it was scored."""

from edged.tracking.config import TrackingConfig
from edged.tracking.tracker import (
    DetectionsLike,
    Track,
    Tracker,
    TrackerOutput,
    TrackState,
    assign,
    box_iou,
)

__all__ = ["DetectionsLike", "Track", "TrackState", "Tracker", "TrackerOutput",
           "TrackingConfig", "assign", "box_iou"]
