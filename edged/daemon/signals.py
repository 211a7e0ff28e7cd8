"""The daemon's signals from the first instant of `edged run`.

Kept apart from the lifecycle, and light (nothing but `signal`), because it is imported
before anything else is loaded: a SIGTERM or SIGHUP that arrives while the config is read
or the model loads must be recorded, not kill the process.
"""

from __future__ import annotations

import signal
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class EarlySignals:
    """Records the daemon's signals until the event loop takes them over."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        for s in HANDLED:
            signal.signal(s, self._record)

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum))
