"""The degradation ladder's loop: twice a second it gives the ladder
(`edged.inference.ladder`) what the realtime cameras processed and missed, and applies
the switch it decides: the pool's rung, the budgets' cost estimates forgotten (on the
publish stage's thread, their owner), and a `ModelChanged` event to every sink."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping

from edged.config import Config
from edged.daemon.camera_loop import Camera
from edged.daemon.publish import PublishStage
from edged.daemon.scheduler import Budget
from edged.inference.ladder import Ladder
from edged.inference.pool import InferencePool
from edged.inference.runner import ModelRunner
from edged.inference.triton.runner import TritonRunner
from edged.telemetry import ControlEvent, ModelChanged, StateChanged

log = logging.getLogger("edged.daemon.pipeline")

LADDER_TICK_S = 0.5


def make_ladder(config: Config, rungs: list[ModelRunner]) -> Ladder | None:
    """The configured ladder over `rungs`; None without one, or with a single rung."""
    if config.model.ladder is None or len(rungs) < 2:
        return None
    return Ladder(config.model.ladder, [r.cost_ms or 1.0 for r in rungs], time.monotonic())


class LadderLoop:
    """One task for the whole run: a reload may add or replace the ladder (`ladder`)."""

    def __init__(self, ladder: Ladder | None, pool: InferencePool,
                 cameras: Mapping[str, Camera], stage: Callable[[], PublishStage | None],
                 emit: Callable[[ControlEvent], None]) -> None:
        self.ladder = ladder
        self.pool = pool
        self.cameras = cameras
        self.stage = stage
        self.emit = emit

    async def run(self) -> None:
        while True:
            await asyncio.sleep(LADDER_TICK_S)
            self.announce_remote()  # the tick serves a remote model's news too
            if self.ladder is not None:
                self.tick(self.ladder)

    def announce_remote(self) -> None:
        """A model on an inference server went down (its local session takes over) or
        came back: a `ModelChanged` event and each camera's state detail (the client logs it)."""
        for runner in self.pool.rungs:
            if not isinstance(runner, TritonRunner):
                continue
            for ev in runner.take_events():
                new, old = ((runner.remote_id, runner.local_id) if ev.up
                            else (runner.local_id, runner.remote_id))
                detail = (f"inference back on the server ({ev.reason})" if ev.up else
                          f"inference on the local fallback {new}: {ev.reason}")
                self.emit(ModelChanged(new, self.pool.rung, old, detail))
                for cam in list(self.cameras.values()):
                    self.emit(StateChanged(cam.name, cam.capture.state, detail))

    def tick(self, ladder: Ladder) -> None:
        processed = missed = 0
        e2e: dict[str, list[float]] = {}
        budgets: dict[str, float] = {}
        for cam in list(self.cameras.values()):
            if not cam.realtime:
                continue  # a replayed file waits for the model by design
            s = cam.stats
            miss_now = s.stale + s.late + s.late_dropped
            p0, m0 = s.ladder_seen
            processed += s.processed - p0
            missed += miss_now - m0
            s.ladder_seen = (s.processed, miss_now)
            values = []
            while s.ladder_e2e:
                values.append(s.ladder_e2e.popleft())
            e2e[cam.name] = values
            budgets[cam.name] = cam.budget.latency_ms
        load = len(budgets) / self.pool.workers  # runs a frame may wait for
        switch = ladder.update(time.monotonic(), processed, missed, e2e, budgets, load)
        if switch is None:
            return
        old, new = self.pool.rungs[switch.previous], self.pool.rungs[switch.rung]
        self.pool.rung = switch.rung
        # learn the new variant's cost afresh (the estimate belongs to the publish
        # stage's thread, so it is reset there)
        stage = self.stage()
        if stage is not None:
            stage.call(functools.partial(_forget_costs,
                                         [cam.budget for cam in self.cameras.values()]))
        log.warning("ladder: %s -> %s (%s)", old.model_id, new.model_id, switch.reason)
        self.emit(ModelChanged(new.model_id, switch.rung, old.model_id, switch.reason))


def _forget_costs(budgets: list[Budget]) -> None:
    for b in budgets:
        b.ahead.value = None
