"""Sharing the inference workers between cameras, and the latency budget.

`Scheduler` hands inference slots to cameras by weighted fair queuing: each request
carries a virtual start tag that advances by 1/weight per frame a camera is given, and a
free slot goes to the waiting request with the smallest tag. Equal weights give round
robin; weights 2:1 give twice the frames; nobody starves. A slot handed back unused
(`release_unused`: no frame, or a frame dropped as stale) costs the camera nothing, so
shares are shares of the inference runs, however many frames a camera drops.

`Budget` decides, per frame, whether it can still be published inside the latency
budget (judged from its age and a running estimate of the stages still ahead).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Waiter:
    camera: str
    vtime: float  # start tag
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class Scheduler:
    """Start-time fair queuing over `slots` inference workers.

    Each camera's next request carries a start tag: its previous tag + 1/weight. A
    camera that was idle (no frame waiting) re-joins no earlier than the system clock
    (the tag of the latest grant), so it cannot claim the time it was away; a camera
    that is kept busy keeps its credit, although it has at most one request out.
    """

    def __init__(self, slots: int, weights: dict[str, float]) -> None:
        if slots < 1:
            raise ValueError("need at least one inference slot")
        self.free = slots
        self.weights = dict(weights)
        self.next_tag = {c: 0.0 for c in weights}
        self.clock = 0.0
        self._waiting: list[_Waiter] = []
        self._early: dict[str, asyncio.Future[None]] = {}  # see release(then=...)
        self._granted_at: dict[str, float] = {}  # start tag of each camera's latest grant
        self._order = 0  # tie-break: arrival order

    def add(self, camera: str, weight: float) -> None:
        """A new camera (or new weight): it starts at the present."""
        self.weights[camera] = weight
        self.next_tag[camera] = max(self.next_tag.get(camera, 0.0), self.clock)

    async def acquire(self, camera: str, rejoin: bool = False) -> None:
        """Wait until `camera` is granted an inference slot (`rejoin`: it was idle)."""
        early = self._early.pop(camera, None)
        if early is not None:  # asked for in release(then=camera)
            await self._await(early)
            return
        tag = self.next_tag.get(camera, 0.0)
        if rejoin:
            tag = max(tag, self.clock)
        if self.free > 0 and not self._waiting:
            self._grant(camera, tag)
            return
        await self._await(self._enqueue(camera, tag))

    def _enqueue(self, camera: str, tag: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._order += 1
        self._waiting.append(_Waiter(camera, tag, self._order, fut))
        self._dispatch()
        return fut

    async def _await(self, fut: asyncio.Future[None]) -> None:
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted but nobody will use it
            else:
                self._waiting = [w for w in self._waiting if w.future is not fut]
            raise

    def _grant(self, camera: str, tag: float) -> None:
        self.free -= 1
        self.clock = tag
        self._granted_at[camera] = tag
        self.next_tag[camera] = tag + 1.0 / self.weights.get(camera, 1.0)

    def _dispatch(self) -> None:
        while self.free > 0 and self._waiting:
            best = min(self._waiting, key=lambda w: (w.vtime, w.seq))
            self._waiting.remove(best)
            if best.future.done():
                continue
            self._grant(best.camera, best.vtime)
            best.future.set_result(None)

    def release(self, then: str | None = None) -> None:
        """Free a slot. `then`: a camera that will ask again at once (its next frame is
        waiting); its request joins the queue before the slot is handed out, so it is not
        passed over for the moment between its result and its next request."""
        if then is not None and then not in self._early:
            self.free += 1  # the request below may take this very slot
            self._early[then] = self._enqueue(then, self.next_tag.get(then, 0.0))
            return
        self.free += 1
        self._dispatch()

    def release_unused(self, camera: str) -> None:
        """Free the slot just granted to `camera` without charging it: nothing ran (no
        frame, or its frame was dropped as stale), so its next request keeps the start tag
        of this grant. Only what actually ran counts towards a camera's share."""
        tag = self._granted_at.pop(camera, None)
        if tag is not None:
            self.next_tag[camera] = tag
        self.release()

    def forget(self, camera: str) -> None:
        """A camera that stops: drop its early request, giving back a slot it was granted."""
        early = self._early.pop(camera, None)
        if early is None:
            return
        if early.done() and not early.cancelled():
            self.release()
        else:
            early.cancel()
            self._waiting = [w for w in self._waiting if w.future is not early]


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
    send: RunningEstimate = field(default_factory=RunningEstimate)  # encode + send, ms

    def can_finish(self, age_ms: float) -> bool:
        """Could a frame this old still be published in time? (True until we know.)"""
        est = self.ahead.value
        return est is None or age_ms + est <= self.latency_ms

    def is_late(self, e2e_ms: float) -> bool:
        return e2e_ms > self.latency_ms
