"""Health: the systemd watchdog and the replacement of stuck inference workers.

`Health.run` is one task of the pipeline's TaskGroup. It pings WATCHDOG=1 while the
pipeline can make progress: the task running proves the event loop is alive, and no
inference may be stuck past `model.stuck_after_s`. A run stuck for `RECREATE_AFTER` x
that deadline gets its worker replaced (a fresh session, then a fresh thread; the stuck
frame fails and is counted as an error); pings resume once nothing is stuck. When the
pool's recreation budget is spent, `on_give_up` stops edged with exit code 1, so that
the service manager restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from edged.daemon.notify import Notifier
from edged.daemon.threads import BlockingCalls
from edged.inference.pool import InferencePool, reload_runner
from edged.results import Frame

log = logging.getLogger("edged.daemon.health")

RECREATE_AFTER = 1.5  # a run stuck this many times model.stuck_after_s gets a new worker

Spawn = Callable[[Coroutine[Any, Any, None], str], object]


class Health:
    """Watchdog pings and stuck-worker replacement for one inference pool."""

    def __init__(self, pool: InferencePool, notifier: Notifier, blocking: BlockingCalls,
                 stuck_after_s: Callable[[], float], spawn: Spawn,
                 on_give_up: Callable[[], None]) -> None:
        self.pool = pool
        self.notifier = notifier
        self.blocking = blocking
        self.stuck_after_s = stuck_after_s  # read each time: a reload may change it
        self.spawn = spawn
        self.on_give_up = on_give_up
        self._stuck_reported = False
        self._recreating: set[int] = set()

    def stuck(self) -> tuple[float, str, int] | None:
        """(seconds, camera, seq) of an inference running past model.stuck_after_s."""
        runs = self.pool.stuck(self.stuck_after_s())
        if not runs:
            return None
        seconds, _, frame = max(runs, key=lambda r: r[0])
        return seconds, frame.camera, frame.seq

    async def run(self) -> None:
        period = min((self.notifier.watchdog_s or 2.0) / 3, self.stuck_after_s() / 4)
        while True:
            stuck = self.stuck()
            if stuck is None:
                self.notifier.watchdog()
                self._stuck_reported = False
            elif not self._stuck_reported:
                self._stuck_reported = True
                log.error("inference stuck for %.1f s on camera %s frame %d; watchdog pings "
                          "withheld", *stuck)
            limit = self.stuck_after_s() * RECREATE_AFTER
            for seconds, index, frame in self.pool.stuck(limit):
                if index not in self._recreating:
                    self._recreating.add(index)
                    self.spawn(self._recreate(index, seconds, frame), f"recreate-{index}")
            await asyncio.sleep(period)

    async def _recreate(self, index: int, seconds: float, frame: Frame) -> None:
        reason = (f"inference on camera {frame.camera} frame {frame.seq} stuck for "
                  f"{seconds:.1f} s")
        try:
            rung = self.pool.rung
            try:  # a fresh session first, so a wedged one is not reused
                fresh = await self.blocking.run(reload_runner, self.pool.rungs[rung],
                                                name=f"recreate-{index}")
                self.pool.replace_runner(rung, fresh)
            except Exception as e:  # the old session is still there; the thread is replaced
                log.error("recreating worker %d: cannot reload the model: %s", index, e)
            if self.pool.recreate(index, reason):
                log.error("%s: worker %d recreated (%d so far)", reason, index,
                          self.pool.stats.recreated)
            else:
                log.error("giving up: %s; exiting with status 1 so that the service manager "
                          "restarts edged", self.pool.failed)
                self.on_give_up()
        finally:
            self._recreating.discard(index)
