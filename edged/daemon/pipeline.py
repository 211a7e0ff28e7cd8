"""The daemon's pipeline: sources -> model runner -> codec -> publisher, under asyncio.

Every task lives in one `asyncio.TaskGroup` owned by `Pipeline.run`; blocking work runs
in threads (capture: one per camera; inference: `edged.inference.pool.InferencePool`; encode +
send: one thread, because a ZeroMQ socket belongs to one thread). Stopping is a single
event: capture threads stop, in-flight frames are finished and published, each camera
gets an end-of-stream message, and the socket is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edged.capture.sources import CaptureThread, Handoff, RestartPolicy, SourceError, source_for
from edged.config import CameraConfig, Config
from edged.daemon.metrics import serve as serve_metrics
from edged.daemon.notify import Notifier
from edged.daemon.scheduler import Budget, Scheduler
from edged.inference.ladder import Ladder
from edged.inference.pool import InferencePool, Models, reload_runner
from edged.inference.runner import ModelRunner
from edged.results import Frame, Result
from edged.wire.codec import MaskEncoder, encode_eos, encode_result
from edged.wire.publisher import Publisher
from edged.wire.telemetry import encode_model_event, encode_state, encode_stats

log = logging.getLogger("edged.daemon.pipeline")

PROBE_AFTER_STALE = 10  # consecutive stale drops before one frame is processed anyway
LADDER_TICK_S = 0.5
IDLE_GRACE_S = 0.1  # waiting longer than this for a frame counts as idle (fair queuing)
DRAIN_S = 3.0  # how long a stop waits for inference runs in flight
RECREATE_AFTER = 1.5  # a run stuck this many times model.stuck_after_s gets a new worker


@dataclass(slots=True)
class CameraStats:
    """Counters for one camera; the window lists are trimmed at each report."""

    captured_at_report: int = 0
    processed: int = 0
    published: int = 0
    stale: int = 0  # dropped before inference: could not finish inside the budget
    late: int = 0  # published over budget, flagged "late"
    late_dropped: int = 0  # over budget and not published (budget.on_late: drop)
    errors: int = 0
    window_processed: int = 0
    # for the ladder: counts at its last look, latencies published since
    ladder_seen: tuple[int, int] = (0, 0)
    ladder_e2e: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    e2e_ms: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    # the windows are filled from the publish thread and read by the stats task
    lock: threading.Lock = field(default_factory=threading.Lock)
    stages: defaultdict[str, deque[float]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=512)))


@dataclass(slots=True)
class Camera:
    name: str
    config: CameraConfig
    handoff: Handoff
    capture: CaptureThread
    stats: CameraStats
    budget: Budget
    realtime: bool
    last_seq: int = -1  # last seq published
    stop_reason: str = ""  # set when the camera is stopped on purpose (reload)
    budget_warned: bool = False


class Pipeline:
    def __init__(self, config: Config, models: Models, *, frames: int | None = None,
                 duration: float | None = None, notifier: Notifier | None = None) -> None:
        """`models`: from `edged.inference.pool.load_models`."""
        self.config = config
        self.models = models
        self.frames = frames
        self.duration = duration
        self.pool = InferencePool(models.rungs, models.plan.workers, models.max_batch)
        self.ladder: Ladder | None = None
        if config.model.ladder is not None and len(models.rungs) > 1:
            self.ladder = Ladder(config.model.ladder,
                                 [r.cost_ms or 1.0 for r in models.rungs], time.monotonic())
        self.exit_code = 0
        self.cameras: dict[str, Camera] = {}
        self.stop_event = asyncio.Event()
        self.publisher: Publisher | None = None
        self._publish_pool: ThreadPoolExecutor | None = None
        self.notifier = notifier or Notifier({})
        self._stuck_reported = False
        self._latest_stats: dict[str, dict] = {}
        self._started = time.monotonic()
        self._tg: asyncio.TaskGroup | None = None
        self._sched: Scheduler | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._recreating: set[int] = set()
        self._encoder: MaskEncoder | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def runner(self) -> ModelRunner:
        """The model variant running now."""
        return self.pool.runner

    # ------------------------------------------------------------------ setup

    def _make_camera(self, name: str, cam: CameraConfig,
                     loop: asyncio.AbstractEventLoop) -> Camera | None:
        kind = cam.resolved_type()
        mode = cam.resolved_mode()
        try:
            source = source_for(cam)
        except SourceError as e:
            log.error("camera %s: %s; the other cameras carry on", name, e)
            return None
        handoff = Handoff(loop, lossless=mode == "every_frame")
        # files replayed frame by frame run as fast as they are processed unless an fps
        # is set; everything else is paced at its rate
        pace = not (mode == "every_frame" and not source.live and cam.fps is None)
        capture = CaptureThread(name, source, handoff, fps=cam.fps, pace=pace,
                                on_state=self._state_from_thread,
                                policy=RestartPolicy.from_camera(cam))
        log.info("camera %s: %s source %s, mode %s", name, kind, source.description, mode)
        return Camera(name, cam, handoff, capture, CameraStats(),
                      Budget(cam.budget.latency_ms, cam.budget.on_late),
                      realtime=mode == "realtime")

    def _state_from_thread(self, camera: str, state: str, detail: str) -> None:
        """A capture thread's state change -> a `<camera>/state` message on the bus."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._publish_state, camera, state, detail)

    def _publish_state(self, camera: str, state: str, detail: str) -> None:
        self._send_soon(encode_state(camera, state, detail))

    def _send_soon(self, frames: list[bytes]) -> None:
        """Queue a message on the publish thread (from the event loop), if it still runs."""
        if self.publisher is None or self._publish_pool is None:
            return
        with contextlib.suppress(RuntimeError):  # the publish thread has been shut down
            self._publish_pool.submit(self.publisher.send, frames)

    def _start_camera(self, cam: Camera) -> None:
        """Start capture and the camera's task (inside the running TaskGroup)."""
        assert self._tg is not None and self._sched is not None
        self.cameras[cam.name] = cam
        self._sched.add(cam.name, cam.config.weight)
        cam.capture.start()
        self._tasks[cam.name] = self._tg.create_task(self._camera_loop(cam),
                                                     name=f"camera-{cam.name}")

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        """Run until stopped, all streams end, or --frames/--duration is reached.

        Returns the process exit code: 0, or 1 if no camera could be started or every
        camera failed.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        cfg = self.config
        self.bind()
        publish_pool = ThreadPoolExecutor(1, thread_name_prefix="publish")
        self._publish_pool = publish_pool
        self._encoder = MaskEncoder(cfg.publish.mask_encoding, cfg.publish.zstd_level)
        initial = [c for n, cc in cfg.cameras.items() if cc.enabled
                   and (c := self._make_camera(n, cc, loop)) is not None]
        if not initial:
            log.error("no camera could be started")
            self.publisher.close()
            return 1
        # a worker may take a batch: that many frames may be granted and waiting
        self._sched = Scheduler(self.pool.workers * self.pool.max_batch, {})
        started = self._started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for cam in initial:
                    self._start_camera(cam)
                log.info("ready: %d camera(s), model %s on %s, %d worker(s) x %d thread(s), "
                         "batch up to %d (%s), publishing on %s",
                         len(self.cameras), self.runner.model_id,
                         ",".join(self.runner.providers), self.pool.workers,
                         self.runner.threads, self.pool.max_batch, self.models.batch_reason,
                         ", ".join(cfg.publish.endpoints))
                if self.ladder is not None:
                    log.info("degradation ladder: %s", " -> ".join(
                        f"{r.model_id} ({r.cost_ms:.1f} ms)" if r.cost_ms else r.model_id
                        for r in self.pool.rungs))
                # READY only now: the model is warm and the sockets are bound
                self.notifier.ready(f"{len(self.cameras)} camera(s) starting")
                helpers = [tg.create_task(self._stats_loop(), name="stats"),
                           tg.create_task(self._watchdog_loop(), name="watchdog")]
                if self.ladder is not None:
                    helpers.append(tg.create_task(self._ladder_loop(), name="ladder"))
                if cfg.log.metrics:
                    helpers.append(tg.create_task(
                        serve_metrics(cfg.log.metrics, self.latest_stats), name="metrics"))
                if self.duration is not None:
                    tg.create_task(self._stop_after(self.duration), name="duration")
                # a reload may add cameras while we wait: done when none is left running
                # and no reload is under way
                while True:
                    pending = [t for t in self._tasks.values() if not t.done()]
                    if self._reload_task is not None and not self._reload_task.done():
                        pending.append(self._reload_task)
                    if not pending:
                        break
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                self.stop_event.set()
                for h in helpers:
                    h.cancel()
        finally:
            self._tg = None
            for cam in self.cameras.values():
                cam.capture.stop()
                cam.handoff.close()
            for cam in self.cameras.values():
                cam.capture.join(timeout=2.0)
            self.pool.shutdown()
            publish_pool.shutdown(wait=True)
            self.publisher.close()
            self._log_stats(time.monotonic() - started, final=True)
            ps = self.pool.stats
            log.info("final inference: %d frames in %d runs (mean batch %.2f, largest %d), "
                     "%d worker(s) recreated, variant %s", ps.frames, ps.batches,
                     ps.frames / max(ps.batches, 1), ps.largest_batch, ps.recreated,
                     self.runner.model_id)
        if self.pool.failed is not None:
            return 1
        if all(c.capture.state == "failed" for c in self.cameras.values()):
            log.error("every camera failed")
            return 1
        return self.exit_code

    def bind(self) -> None:
        """Bind the publishing socket (run() does it; call earlier to let subscribers
        connect before the first frame)."""
        if self.publisher is None:
            cfg = self.config.publish
            self.publisher = Publisher(cfg.endpoints, sndhwm=cfg.sndhwm)

    # ------------------------------------------------------------------ reload

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file and apply what changed."""
        if self._tg is None or self.stop_event.is_set():
            return
        if self._reload_task is not None and not self._reload_task.done():
            log.warning("reload already under way; SIGHUP ignored")
            return
        self._reload_task = self._tg.create_task(self._reload(), name="reload")

    async def _stop_camera(self, name: str, reason: str) -> None:
        cam = self.cameras.pop(name)
        cam.stop_reason = reason
        cam.capture.stop()
        cam.handoff.close()
        task = self._tasks.pop(name, None)
        if task is not None:
            await asyncio.wait([task])
        await asyncio.get_running_loop().run_in_executor(None, cam.capture.join, 2.0)

    async def _reload(self) -> None:
        from edged.config import ConfigError, load_config
        from edged.inference.pool import load_rungs
        from edged.inference.runner import ModelError

        loop = asyncio.get_running_loop()
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        old = self.config
        log.info("SIGHUP: reloading %s", old.source_file or "the built-in default")
        try:
            try:
                new = await loop.run_in_executor(None, load_config, old.source_file)
            except (ConfigError, OSError) as e:
                log.error("reload rejected, the running configuration stays:\n%s", e)
                return
            kept = []
            if new.publish != old.publish:
                kept.append("publish")
            # the worker plan and the batch size shape the running pool
            fixed = ("workers", "threads", "batch")
            kept += [f"model.{k}" for k in fixed
                     if getattr(new.model, k) != getattr(old.model, k)]
            if kept:
                log.warning("reload: %s changed; restart edged to apply (kept as running)",
                            ", ".join(kept))
            new = new.model_copy(update={
                "publish": old.publish,
                "model": new.model.model_copy(update={k: getattr(old.model, k)
                                                      for k in fixed})})
            if new.model != old.model:
                threads = self.runner.threads
                try:
                    rungs = await loop.run_in_executor(None, load_rungs, new, threads)
                except ModelError as e:
                    log.error("reload rejected: %s; the running model and configuration stay", e)
                    return
                self.pool.use_rungs(rungs)
                self.ladder = None
                if new.model.ladder is not None and len(rungs) > 1:
                    self.ladder = Ladder(new.model.ladder, [r.cost_ms or 1.0 for r in rungs],
                                         time.monotonic())
                    if self._tg is not None:
                        self._tg.create_task(self._ladder_loop(), name="ladder")
                log.info("reload: model %s loaded", self.runner.model_id)
            want = {n: c for n, c in new.cameras.items() if c.enabled}
            removed = [n for n in self.cameras if n not in want]
            changed = [n for n in self.cameras if n in want and want[n] != old.cameras.get(n)]
            added = [n for n in want if n not in self.cameras]
            for n in removed:
                await self._stop_camera(n, "removed by reload")
            for n in changed:
                await self._stop_camera(n, "reconfigured")
            self.config = new
            for n in changed + added:
                cam = self._make_camera(n, want[n], loop)
                if cam is not None:
                    self._start_camera(cam)
            logging.getLogger().setLevel(new.log.level.upper())
            log.info("reload done: %d camera(s) unchanged, %d restarted, %d added, %d removed",
                     len(self.cameras) - len(changed) - len(added), len(changed), len(added),
                     len(removed))
        finally:
            self.notifier.ready(f"{len(self.cameras)} camera(s) after reload")

    async def _stop_after(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop_event.wait(), seconds)
        except TimeoutError:
            log.info("duration of %.1f s reached, stopping", seconds)
            self.stop()

    def stop(self) -> None:
        """Begin a graceful stop (safe to call more than once)."""
        if not self.stop_event.is_set():
            self.stop_event.set()
            self.notifier.stopping()
            for cam in self.cameras.values():
                cam.capture.stop()
                cam.handoff.close()
            # frames in flight are finished and published, but a wedged run must not hold
            # the stop hostage: after DRAIN_S it is given up and its frame counted an error
            if self._loop is not None:
                self._loop.call_later(DRAIN_S, self._give_up_in_flight)

    def _give_up_in_flight(self) -> None:
        n = self.pool.abandon_all("edged is stopping")
        if n:
            log.error("stopping: %d inference run(s) still busy after %.0f s, given up", n,
                      DRAIN_S)

    async def _camera_loop(self, cam: Camera) -> None:
        loop = asyncio.get_running_loop()
        sched, publish_pool = self._sched, self._publish_pool
        assert sched is not None and publish_pool is not None
        pending: asyncio.Future[None] | None = None
        reason = "end of stream"
        min_period = 1.0 / cam.config.max_fps if cam.config.max_fps else 0.0
        next_start = 0.0
        stale_run = 0
        # frames in flight for this camera: every_frame cameras may use every worker
        # (results stay in order); realtime ones run one frame, always the freshest
        depth = 1 if cam.realtime else self.pool.workers
        inflight: deque[tuple[asyncio.Future[Result], Frame]] = deque()
        submitted = 0
        while True:
            if self.stop_event.is_set() or cam.stop_reason:
                reason = cam.stop_reason or "shutdown"
                break
            # a camera that waits only briefly for its next frame is still busy (a live
            # camera delivers at its frame rate): it keeps its place in the fair queue;
            # one that was idle longer re-joins at the present and claims no old credit
            waited_from = time.monotonic()
            if not await cam.handoff.wait():
                reason = cam.stop_reason or ("shutdown" if self.stop_event.is_set() else (
                    f"camera failed: {cam.capture.error}" if cam.capture.state == "failed"
                    else cam.capture.detail or "end of stream"))
                break
            if min_period:  # max_fps cap: wait for the slot, then take the freshest frame
                delay = next_start - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
            # weighted fair share of the inference workers
            await sched.acquire(cam.name,
                                rejoin=time.monotonic() - waited_from > IDLE_GRACE_S)
            frame = cam.handoff.take()  # the freshest frame at the moment we can run it
            if frame is None:
                sched.release_unused(cam.name)
                continue
            age = (time.monotonic_ns() - frame.t_mono_ns) / 1e6
            if cam.realtime and not cam.budget.can_finish(age):
                # would end over budget: a fresher frame will come. After a run of such
                # drops one frame goes through anyway, so the estimate is refreshed and a
                # budget below the processing time is visible
                cam.stats.stale += 1
                stale_run += 1
                if stale_run < PROBE_AFTER_STALE:
                    sched.release_unused(cam.name)
                    continue
                self._warn_budget(cam)
            stale_run = 0
            next_start = time.monotonic() + min_period
            fut = self.pool.submit(frame)
            # the slot frees with the frame; a camera with its next frame already waiting
            # asks again in the same breath, so it keeps its fair share of the workers
            fut.add_done_callback(lambda _f: sched.release(
                then=cam.name if cam.handoff.ready() and not min_period
                and not self.stop_event.is_set() and not cam.stop_reason else None))
            inflight.append((fut, frame))
            submitted += 1
            # results go out in capture order; wait for the oldest when the camera has as
            # many frames in flight as it may (one in realtime mode: always the freshest)
            while inflight and (inflight[0][0].done() or len(inflight) >= depth):
                pending = await self._finish(cam, *inflight.popleft(), pending)
            if self.frames is not None and submitted >= self.frames:
                reason = f"{self.frames} frames done"
                break
        while inflight:  # drain: frames already taken are finished and published
            pending = await self._finish(cam, *inflight.popleft(), pending)
        sched.forget(cam.name)
        if pending is not None:
            await pending
        cam.capture.stop()
        cam.handoff.close()
        frames = encode_eos(cam.name, cam.last_seq, reason)
        await loop.run_in_executor(publish_pool, self.publisher.send, frames)  # type: ignore[union-attr]
        log.info("camera %s: end of stream published (%s)", cam.name, reason)

    async def _finish(self, cam: Camera, fut: asyncio.Future[Result], frame: Frame,
                      pending: asyncio.Future[None] | None) -> asyncio.Future[None] | None:
        """Wait for one frame's result, count it and hand it to the publish thread.

        Returns the publish future: encode + send of this result overlap the next
        frame's inference, and at most one result per camera waits for the socket.
        """
        try:
            result = await fut
        except Exception as e:  # one bad frame must not end the camera
            cam.stats.errors += 1
            if self.pool.failed is None:
                log.error("camera %s: inference failed on frame %d: %s", cam.name, frame.seq,
                          e)
            return pending
        cam.stats.processed += 1
        cam.stats.window_processed += 1
        with cam.stats.lock:
            for stage, ms in result.timings_ms.items():
                cam.stats.stages[stage].append(ms)
        if pending is not None:
            await pending
        assert self._publish_pool is not None and self._encoder is not None
        return asyncio.get_running_loop().run_in_executor(
            self._publish_pool, self._publish, cam, result, self._encoder)

    def _warn_budget(self, cam: Camera) -> None:
        if not cam.budget_warned:
            cam.budget_warned = True
            log.warning("camera %s: budget %.0f ms is below the time to process a frame "
                        "(about %.0f ms): most frames are dropped as stale, the rest published "
                        "late", cam.name, cam.budget.latency_ms, cam.budget.ahead.value or 0.0)

    def latest_stats(self) -> dict[str, dict]:
        """The last stats window; before the first one, figures since the start."""
        if self._latest_stats:
            return self._latest_stats
        elapsed = time.monotonic() - self._started
        return {c.name: self._snapshot(c, elapsed, final=True) for c in self.cameras.values()}

    def stuck(self) -> tuple[float, str, int] | None:
        """(seconds, camera, seq) of an inference running past model.stuck_after_s."""
        runs = self.pool.stuck(self.config.model.stuck_after_s)
        if not runs:
            return None
        seconds, _, frame = max(runs, key=lambda r: r[0])
        return seconds, frame.camera, frame.seq

    async def _watchdog_loop(self) -> None:
        """WATCHDOG=1 while the pipeline can make progress: this task running proves the
        event loop is alive, and no inference may be stuck past its deadline.

        A run stuck for RECREATE_AFTER x the deadline gets its worker replaced (a fresh
        thread and session); pings resume once nothing is stuck. When the pool's
        recreation budget is spent, edged stops with exit code 1.
        """
        period = min((self.notifier.watchdog_s or 2.0) / 3,
                     self.config.model.stuck_after_s / 4)
        while True:
            stuck = self.stuck()
            if stuck is None:
                self.notifier.watchdog()
                self._stuck_reported = False
            elif not self._stuck_reported:
                self._stuck_reported = True
                log.error("inference stuck for %.1f s on camera %s frame %d; watchdog pings "
                          "withheld", *stuck)
            limit = self.config.model.stuck_after_s * RECREATE_AFTER
            for seconds, index, frame in self.pool.stuck(limit):
                if index not in self._recreating:
                    self._recreating.add(index)
                    self._tg_spawn(self._recreate(index, seconds, frame), f"recreate-{index}")
            await asyncio.sleep(period)

    def _tg_spawn(self, coro: Any, name: str) -> None:
        if self._tg is not None:
            self._tg.create_task(coro, name=name)
        else:
            coro.close()

    async def _recreate(self, index: int, seconds: float, frame: Frame) -> None:
        """Replace a stuck worker: a fresh session first (so a wedged one is not reused),
        then a fresh thread; the stuck frame is failed and counted as an error."""
        loop = asyncio.get_running_loop()
        reason = (f"inference on camera {frame.camera} frame {frame.seq} stuck for "
                  f"{seconds:.1f} s")
        try:
            rung = self.pool.rung
            try:
                fresh = await loop.run_in_executor(None, reload_runner, self.pool.rungs[rung])
                self.pool.replace_runner(rung, fresh)
            except Exception as e:  # the old session is still there; the thread is replaced
                log.error("recreating worker %d: cannot reload the model: %s", index, e)
            if self.pool.recreate(index, reason):
                log.error("%s: worker %d recreated (%d so far)", reason, index,
                          self.pool.stats.recreated)
            else:
                log.error("giving up: %s; exiting with status 1 so that the service manager "
                          "restarts edged", self.pool.failed)
                self.exit_code = 1
                self.stop()
        finally:
            self._recreating.discard(index)

    # ------------------------------------------------------------------ ladder

    async def _ladder_loop(self) -> None:
        ladder = self.ladder
        while ladder is not None and ladder is self.ladder:
            await asyncio.sleep(LADDER_TICK_S)
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
                continue
            old, new = self.pool.rungs[switch.previous], self.pool.rungs[switch.rung]
            self.pool.rung = switch.rung
            for cam in self.cameras.values():
                cam.budget.ahead.value = None  # learn the new variant's cost afresh
            log.warning("ladder: %s -> %s (%s)", old.model_id, new.model_id, switch.reason)
            self._send_soon(encode_model_event(new.model_id, switch.rung, old.model_id,
                                               switch.reason))

    def _publish(self, cam: Camera, result: Result, encoder: MaskEncoder) -> None:
        t0 = time.perf_counter()
        now = time.monotonic_ns()
        # predicted with what encoding and sending will still add
        e2e = (now - result.t_capture_mono_ns) / 1e6 + (cam.budget.send.value or 0.0)
        # the stages after taking the frame; with its age this predicts a frame's e2e
        cam.budget.ahead.add(e2e - result.timings_ms.get("queue", 0.0))
        late = cam.budget.is_late(e2e)
        if late and cam.budget.on_late == "drop":
            cam.stats.late_dropped += 1
            return
        if late:
            result.flags = (*result.flags, "late")
        # not late yet: judged again when the message is stamped, after the mask is encoded
        frames = encode_result(result, encoder, send_mask=self.config.publish.send_masks,
                               budget_ms=cam.budget.latency_ms)
        if "late" in result.flags:
            if cam.budget.on_late == "drop":
                cam.stats.late_dropped += 1
                return
            cam.stats.late += 1
        if self.publisher is not None and self.publisher.send(frames):
            cam.stats.published += 1
            cam.last_seq = result.seq
        result.timings_ms["encode"] = (time.perf_counter() - t0) * 1e3
        cam.budget.send.add(result.timings_ms["encode"])
        done = (time.monotonic_ns() - result.t_capture_mono_ns) / 1e6
        cam.stats.ladder_e2e.append(done)
        with cam.stats.lock:
            cam.stats.stages["encode"].append(result.timings_ms["encode"])
            cam.stats.e2e_ms.append(done)

    # ------------------------------------------------------------------ stats

    async def _stats_loop(self) -> None:
        last = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.log.stats_interval_s)  # a reload may change it
            now = time.monotonic()
            interval = now - last
            try:
                snapshot = self._log_stats(interval)
            except Exception:  # statistics must never take the pipeline down
                log.exception("statistics failed; the pipeline carries on")
                last = now
                continue
            self._latest_stats = snapshot
            last = now
            self.notifier.status(", ".join(f"{n} {c['processed_fps']:.1f} fps ({c['state']})"
                                           for n, c in snapshot.items()))
            if self.publisher is not None and self._publish_pool is not None:
                frames = encode_stats(snapshot, interval)
                await loop.run_in_executor(self._publish_pool, self.publisher.send, frames)

    def _snapshot(self, cam: Camera, elapsed: float, final: bool) -> dict:
        s = cam.stats
        captured = cam.handoff.put_count
        if final:
            cap_fps = captured / max(elapsed, 1e-9)
            proc_fps = s.processed / max(elapsed, 1e-9)
        else:
            cap_fps = (captured - s.captured_at_report) / max(elapsed, 1e-9)
            proc_fps = s.window_processed / max(elapsed, 1e-9)
        with s.lock:  # the publish thread appends to these windows
            e2e_window = list(s.e2e_ms)
            stage_windows = {k: list(v) for k, v in s.stages.items() if v}
        e2e = np.percentile(e2e_window, [50, 90, 99]).tolist() if e2e_window \
            else [None, None, None]
        return {
            "state": cam.capture.state, "capture_fps": round(cap_fps, 2),
            "processed_fps": round(proc_fps, 2), "published": s.published, "late": s.late,
            "drops": {"overwritten": cam.handoff.overwritten, "stale": s.stale,
                      "late": s.late_dropped, "errors": s.errors},
            "e2e_ms": dict(zip(("p50", "p90", "p99"), e2e)),
            "stages_ms_p50": {k: float(np.median(v)) for k, v in stage_windows.items()},
            "budget_ms": cam.budget.latency_ms, "variant": self.runner.model_id,
            "budget_misses": s.stale + s.late + s.late_dropped,
            "capture": {"corrupt": cam.capture.corrupt, "reconnects": cam.capture.reconnects,
                        "stalls": cam.capture.stalls, "crashes": cam.capture.crashes,
                        "stuck_readers": cam.capture.stuck_readers()},
            "providers": self.runner.placement_summary,
        }

    def _log_stats(self, elapsed: float, final: bool = False) -> dict[str, dict]:
        """One line per camera (the last window, or the whole run when final)."""
        out = {}
        for cam in self.cameras.values():
            snap = self._snapshot(cam, elapsed, final)
            out[cam.name] = snap
            s = cam.stats
            e2e = [v if v is not None else float("nan") for v in snap["e2e_ms"].values()]
            d = snap["drops"]
            log.info("%s %s: capture %.1f fps, processed %.1f fps, e2e p50/p90/p99 "
                     "%.1f/%.1f/%.1f ms, inference p50 %.1f ms, dropped %d overwritten "
                     "%d stale %d late, %d published late, errors %d, state %s%s",
                     "final" if final else "stats", cam.name, snap["capture_fps"],
                     snap["processed_fps"], *e2e,
                     snap["stages_ms_p50"].get("inference", float("nan")), d["overwritten"],
                     d["stale"], d["late"], s.late, s.errors, cam.capture.state,
                     f", {s.processed} frames in {elapsed:.1f} s" if final else "")
            s.captured_at_report = cam.handoff.put_count
            s.window_processed = 0
        return out
