"""SIGHUP: re-read the config file and apply what changed, one reload at a time.

What cannot change while running (`keep_running`): the publisher and every output are
bound and opened once, at the start, and the worker plan and batch size shape the
running pool; those keep their running values, with a warning naming them. A new model
is loaded and warmed beside the running one and swapped in only once it works; any
failure rejects the reload and changes nothing. Cameras removed or reconfigured are
stopped (with their end-of-stream) and the new and changed ones started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from edged.config import Config
from edged.daemon.camera_loop import Camera
from edged.daemon.ladder_loop import LadderLoop, make_ladder
from edged.daemon.notify import Notifier
from edged.daemon.threads import BlockingCalls
from edged.daemon.tracking import TrackingError, TrackingStage
from edged.inference.cpu import CpuInfo
from edged.inference.pool import InferencePool
from edged.outputs.base.output import Output, output_sections

log = logging.getLogger("edged.daemon.pipeline")

FIXED_MODEL_FIELDS = ("workers", "threads", "batch")  # they shape the running pool


def keep_running(old: Config, new: Config, outputs: Sequence[Output]) -> tuple[Config, list[str]]:
    """`new` with what cannot change while running taken from `old`, and the names of
    those that the new file changed (for the warning)."""
    # publish shapes the publish stage's encoding too, whichever outputs there are
    sections = tuple(dict.fromkeys(("publish", *(o.name for o in outputs))))
    kept = [name for name in sections if getattr(new, name) != getattr(old, name)]
    kept += [f"model.{k}" for k in FIXED_MODEL_FIELDS
             if getattr(new.model, k) != getattr(old.model, k)]
    return new.model_copy(update={
        **{name: getattr(old, name) for name in sections},
        "model": new.model.model_copy(update={k: getattr(old.model, k)
                                              for k in FIXED_MODEL_FIELDS})}), kept


class Running(Protocol):
    """What a reload changes: the pipeline (`edged.daemon.pipeline.Pipeline`)."""

    config: Config
    outputs: tuple[Output, ...]
    cameras: dict[str, Camera]
    pool: InferencePool
    ladder: LadderLoop
    tracking: TrackingStage
    blocking: BlockingCalls
    notifier: Notifier
    cpu: CpuInfo
    stop_event: asyncio.Event

    @property
    def running(self) -> bool: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None: ...

    async def stop_camera(self, name: str, reason: str) -> None: ...

    def add_camera(self, name: str) -> None: ...

    async def reload_outputs(self) -> None: ...


class Reloader:
    """Queues SIGHUPs and runs one reload at a time on the running pipeline."""

    def __init__(self, pipeline: Running) -> None:
        self.p = pipeline
        self.task: asyncio.Task[None] | None = None
        self._again = False
        self.pending = False  # asked for before the pipeline was running

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def request(self) -> None:
        """Re-read the config file and apply what changed. One asked for during a
        reload is queued: one more reload follows, so the last file written wins."""
        if self.p.stop_event.is_set():
            return
        if not self.p.running:  # not running yet: applied once ready
            self.pending = True
            return
        if self.busy:
            if not self._again:
                log.info("SIGHUP during a reload: reloading again when it is done")
            self._again = True
            return
        self.task = self.p.spawn(self._until_current(), "reload")

    def cancel(self) -> None:
        """A reload under way ends where it is: cameras it stopped have had their
        end-of-stream, and it starts no new ones."""
        if self.task is not None and self.busy:
            self.task.cancel()

    async def _until_current(self) -> None:
        while True:
            self._again = False
            await self._reload()
            if not self._again or self.p.stop_event.is_set():
                return

    async def _reload(self) -> None:
        from edged.config import ConfigError, load_config
        from edged.daemon.models import load_rungs

        p = self.p
        p.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        old = p.config
        log.info("SIGHUP: reloading %s", old.source_file or "the built-in default")
        try:
            try:
                new = await p.blocking.run(
                    lambda: load_config(old.source_file, int8_class=p.cpu.int8_class,
                                        sections=output_sections(p.outputs)),
                    name="reload-config")
            except (ConfigError, OSError) as e:
                log.error("reload rejected, the running configuration stays:\n%s", e)
                return
            await p.reload_outputs()
            new, kept = keep_running(old, new, p.outputs)
            if kept:
                log.warning("reload: %s changed; restart edged to apply (kept as running)",
                            ", ".join(kept))
            if new.model != old.model:
                threads = p.pool.runner.threads
                # a model load and warm-up can take seconds: say so before it starts
                log.info("reload: loading model %s", new.model.path)
                try:
                    rungs = await p.blocking.run(load_rungs, new, threads, name="reload-model")
                except Exception as e:  # noqa: BLE001 - any failure to load or warm up
                    # the new model (a bad file, a manifest that does not fit the graph,
                    # a provider error) rejects the reload; nothing running has changed
                    log.error("reload rejected: %s; the running model and configuration "
                              "stay", e)
                    return
                p.pool.use_rungs(rungs)
                p.ladder.ladder = make_ladder(new, rungs)
                log.info("reload: model %s loaded", p.pool.runner.model_id)
            want = {n: c for n, c in new.cameras.items() if c.enabled}
            removed = [n for n in p.cameras if n not in want]
            changed = [n for n in p.cameras if n in want and want[n] != old.cameras.get(n)]
            added = [n for n in want if n not in p.cameras]
            # a new model's detections start new epochs of ids on every camera
            restarted = list(want) if new.model != old.model else changed
            runner = p.pool.runner
            try:
                p.tracking.configure(new, runner.manifest.classes, runner.model_id, restarted)
            except TrackingError as e:
                log.error("reload rejected, the running configuration stays: %s", e)
                return
            for n in removed:
                await p.stop_camera(n, "removed by reload")
            for n in changed:
                await p.stop_camera(n, "reconfigured")
            p.config = new
            for n in changed + added:
                if p.stop_event.is_set():
                    break  # stopping: no new camera starts
                p.add_camera(n)
            logging.getLogger().setLevel(new.log.level.upper())
            log.info("reload done: %d camera(s) unchanged, %d restarted, %d added, %d removed",
                     len(p.cameras) - len(changed) - len(added), len(changed), len(added),
                     len(removed))
        finally:
            p.notifier.ready(f"{len(p.cameras)} camera(s) after reload")
