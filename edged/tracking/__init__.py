"""Multi-object tracking: persistent ids and velocities for a camera's detections.

Stands alone (numpy and scipy only, no part of the daemon); docs/tracking.md tells how
it works and how it was scored. The tracker's names are imported on first use: the
config imports `TrackingConfig` from here and must stay light (no numpy, no scipy)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edged.tracking.config import TrackingConfig

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("edged.tracking.tracker"), name)
    raise AttributeError(f"module 'edged.tracking' has no attribute {name!r}")
