"""Sharing the inference workers between cameras, and the latency budget.

`Scheduler` hands inference slots to cameras by weighted fair queuing: each camera
carries a virtual time that advances by 1/weight per frame it is given, and a free slot
goes to the waiting camera with the smallest virtual time. Equal weights give round
robin; weights 2:1 give twice the frames; nobody starves. A camera that was idle joins
at the current virtual time, so it cannot claim a burst for the time it was away.

`Budget` decides, per frame, whether it can still be published inside the latency
budget (judged from its age and a running estimate of the stages still ahead).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Waiter:
    camera: str
    vtime: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class Scheduler:
    def __init__(self, slots: int, weights: dict[str, float]) -> None:
        if slots < 1:
            raise ValueError("need at least one inference slot")
        self.free = slots
        self.weights = dict(weights)
        self.vtime = {c: 0.0 for c in weights}
        self._waiting: list[_Waiter] = []
        self._order = 0  # tie-break: arrival order

    def _floor(self) -> float:
        """Virtual time of the system: the smallest among waiting cameras (or 0)."""
        return min((w.vtime for w in self._waiting), default=min(self.vtime.values(), default=0.0))

    async def acquire(self, camera: str) -> None:
        """Wait until `camera` is granted an inference slot."""
        # an idle camera re-joins at the present, not in the past
        self.vtime[camera] = max(self.vtime[camera], self._floor())
        if self.free > 0 and not self._waiting:
            self._grant(camera)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._order += 1
        self._waiting.append(_Waiter(camera, self.vtime[camera], self._order, fut))
        self._dispatch()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted but nobody will use it
            else:
                self._waiting = [w for w in self._waiting if w.future is not fut]
            raise

    def _grant(self, camera: str) -> None:
        self.free -= 1
        self.vtime[camera] += 1.0 / self.weights.get(camera, 1.0)

    def _dispatch(self) -> None:
        while self.free > 0 and self._waiting:
            best = min(self._waiting, key=lambda w: (w.vtime, w.seq))
            self._waiting.remove(best)
            if best.future.done():
                continue
            self._grant(best.camera)
            best.future.set_result(None)

    def release(self) -> None:
        self.free += 1
        self._dispatch()


class RunningEstimate:
    """Exponentially weighted mean of a duration (ms); starts from the first sample."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, ms: float) -> None:
        self.value = ms if self.value is None else self.value + self.alpha * (ms - self.value)


@dataclass(slots=True)
class Budget:
    """Capture-to-publish bound for one camera."""

    latency_ms: float
    on_late: str = "publish"  # or "drop"
    ahead: RunningEstimate = field(default_factory=RunningEstimate)

    def can_finish(self, age_ms: float) -> bool:
        """Could a frame this old still be published in time? (True until we know.)"""
        est = self.ahead.value
        return est is None or age_ms + est <= self.latency_ms

    def is_late(self, e2e_ms: float) -> bool:
        return e2e_ms > self.latency_ms
