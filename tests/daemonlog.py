"""What the daemon's log proves has happened: markers to wait on instead of a fixed
window, for the tests that need time to pass in the daemon ("nothing happened meanwhile")."""

from __future__ import annotations

import re


def processed_intervals(log: str, camera: str) -> int:
    """Stats lines in `log` whose interval processed frames of `camera`: each is a stats
    interval in which the daemon ran that camera's results through its outputs."""
    return len(re.findall(rf" stats {re.escape(camera)}: capture [\d.]+ fps, "
                          rf"processed (?!0\.0 )[\d.]+ fps", log))
