"""The degradation ladder: cheaper model variants when the latency budget cannot be met.

Rung 0 is `model.path`; `model.ladder.variants` follow, cheapest last. The policy is
fed, a few times a second, how many frames the realtime cameras had processed and how
many missed the budget (dropped as stale, or finished late), plus the end-to-end
latencies published since the last call:

- down one rung when more than `miss_ratio` of the frames missed over the last
  `down_after_s` seconds (and at least that long after the previous switch);
- up one rung when, for `up_after_s` seconds, nothing missed and every camera's p90
  latency, plus what the rung above costs more per run times the runs a frame waits
  for (`load`: realtime cameras per worker, at least 1), fits `headroom` x its budget.

The two conditions cannot hold at once (up needs zero misses, down needs many), and the
up condition predicts the cost of the rung above from measured costs, so the ladder
does not oscillate between a rung that misses and one that fits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class LadderPolicy(Protocol):
    """The thresholds above (`model.ladder` in the config has them): a protocol, so the
    stage does not import the config that sits a floor above it."""

    @property
    def down_after_s(self) -> float: ...
    @property
    def up_after_s(self) -> float: ...
    @property
    def miss_ratio(self) -> float: ...
    @property
    def headroom(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Switch:
    rung: int
    previous: int
    reason: str


class Ladder:
    def __init__(self, config: LadderPolicy, costs_ms: list[float], now: float) -> None:
        if len(costs_ms) < 2:
            raise ValueError("a ladder needs at least two rungs")
        self.config = config
        self.costs = costs_ms
        self.rung = 0
        self._switched_at = now
        self._samples: deque[tuple[float, int, int]] = deque()  # (t, processed, missed)
        self._e2e: deque[tuple[float, dict[str, list[float]]]] = deque()
        self._headroom_since: float | None = None

    @property
    def last_rung(self) -> int:
        return len(self.costs) - 1

    def update(self, now: float, processed: int, missed: int,
               e2e_ms: dict[str, list[float]], budgets_ms: dict[str, float],
               load: float = 1.0) -> Switch | None:
        """One observation: counts since the previous call, latencies by camera."""
        c = self.config
        self._samples.append((now, processed, missed))
        self._e2e.append((now, e2e_ms))
        keep = max(c.down_after_s, c.up_after_s)
        while self._samples and now - self._samples[0][0] > keep:
            self._samples.popleft()
        while self._e2e and now - self._e2e[0][0] > c.up_after_s:
            self._e2e.popleft()
        dwell = now - self._switched_at
        down_p, down_m = self._totals(now - c.down_after_s)
        # processed already includes frames that finished late; stale ones never ran
        seen = down_p + down_m
        ratio = down_m / seen if seen else 0.0
        if (self.rung < self.last_rung and dwell >= c.down_after_s and seen
                and ratio > c.miss_ratio):
            return self._switch(now, self.rung + 1,
                                f"{ratio:.0%} of {seen} frames missed the budget in the last "
                                f"{c.down_after_s:g} s")
        if self.rung == 0:
            return None
        # only inference gets dearer: capture, pre/post-processing and sending do not
        extra = max(0.0, self.costs[self.rung - 1] - self.costs[self.rung]) * max(load, 1.0)
        _, up_m = self._totals(now - c.up_after_s)
        worst = None
        window: dict[str, list[float]] = {}
        for _, by_cam in self._e2e:
            for cam, values in by_cam.items():
                window.setdefault(cam, []).extend(values)
        fits = up_m == 0
        for cam, values in window.items():
            if not values or cam not in budgets_ms:
                continue
            p90 = float(np.percentile(values, 90)) + extra
            share = p90 / budgets_ms[cam]
            worst = share if worst is None else max(worst, share)
            if share > c.headroom:
                fits = False
        if worst is None:
            fits = False
        if not fits:
            self._headroom_since = None
            return None
        if self._headroom_since is None:
            self._headroom_since = now
        if now - self._headroom_since >= c.up_after_s and dwell >= c.up_after_s:
            return self._switch(now, self.rung - 1,
                                f"headroom for {c.up_after_s:g} s: predicted p90 at "
                                f"{worst:.0%} of the budget")
        return None

    def _totals(self, since: float) -> tuple[int, int]:
        p = m = 0
        for t, proc, miss in self._samples:
            if t > since:
                p += proc
                m += miss
        return p, m

    def _switch(self, now: float, rung: int, reason: str) -> Switch:
        s = Switch(rung, self.rung, reason)
        self.rung = rung
        self._switched_at = now
        self._samples.clear()
        self._e2e.clear()
        self._headroom_since = None
        return s
