"""The camera stage of the daemon: per-camera loops feeding the inference pool under the
latency budget, reload, the watchdog and the ladder, and the hand-off of finished results
to the publish stage (`edged.daemon.publish`), which fans them out to the sinks.

Every task lives in the `asyncio.TaskGroup` of `Pipeline.run` and is cancelled or ended
by it; blocking work runs in threads (capture: one per camera; inference:
`edged.inference.pool.InferencePool`; judge + encode: the publish stage's thread; each
sink: its own thread). Stopping is a single event: capture threads stop, in-flight frames
are finished and published, each camera gets an end-of-stream message, and the sinks are
closed. The process lifecycle around it (signals, model load, exit) is
`edged.daemon.lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import secrets
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from edged.capture.base import RestartPolicy, SourceError
from edged.capture.handoff import Handoff
from edged.capture.sources import source_for
from edged.capture.supervisor import CaptureThread
from edged.config import CameraConfig, Config
from edged.daemon.health import Health
from edged.daemon.metrics import serve as serve_metrics
from edged.daemon.notify import Notifier
from edged.daemon.publish import PublishStage
from edged.daemon.scheduler import Budget, Scheduler
from edged.daemon.threads import BlockingCalls
from edged.daemon.tracking import TrackingError, TrackingStage
from edged.inference.cpu import CpuInfo
from edged.inference.cpu import detect as detect_cpu
from edged.inference.ladder import Ladder
from edged.inference.pool import InferencePool, Models
from edged.inference.runner import ModelRunner
from edged.outputs.base.output import Output
from edged.outputs.base.sink import SinkRunner
from edged.outputs.zmq import ZmqSink
from edged.results import Frame, Result
from edged.telemetry import (
    CameraSnapshot,
    CameraState,
    CaptureCounters,
    DaemonSnapshot,
    Drops,
    InferenceCounters,
    LatencyPercentiles,
    ModelOutput,
)
from edged.wire.codec import MaskEncoder
from edged.wire.curve import ServerKeys, server_keys
from edged.wire.publisher import Publisher
from edged.wire.telemetry import encode_model_event, encode_state, encode_stats

log = logging.getLogger("edged.daemon.pipeline")
T = TypeVar("T")

PROBE_AFTER_STALE = 10  # consecutive stale drops before one frame is processed anyway
LADDER_TICK_S = 0.5
IDLE_GRACE_S = 0.1  # waiting longer than this for a frame counts as idle (fair queuing)
# frames in a row with nothing but NaN/Inf detections before the camera is model_error
NONFINITE_FRAMES = 3
NONFINITE_LOG_S = 60.0  # the most often NaN/Inf detections are logged, per camera
DRAIN_S = 3.0  # how long a stop waits for inference runs in flight
SINK_CLOSE_S = 1.0  # how long a stop waits for each sink to deliver what it holds


@dataclass(slots=True)
class CameraStats:
    """Counters for one camera; the window lists are trimmed at each report.

    Writers: the event loop writes `processed`, `stale`, `errors`, `window_processed`,
    `captured_at_report`, `ladder_seen` and the inference stage windows; the publish
    stage's thread writes `late`, `late_dropped`, `ladder_e2e`, `e2e_ms` and the encode
    window (`record_published`). Readers on the other side take `lock` for the windows.
    """

    captured_at_report: int = 0
    processed: int = 0
    stale: int = 0  # dropped before inference: could not finish inside the budget
    late: int = 0  # published over budget, flagged "late"
    late_dropped: int = 0  # over budget and not published (budget.on_late: drop)
    errors: int = 0
    nonfinite_rows: int = 0  # detections with NaN/Inf values, dropped
    nonfinite_frames: int = 0  # frames with nothing but those
    window_processed: int = 0
    # for the ladder: counts at its last look, latencies published since
    ladder_seen: tuple[int, int] = (0, 0)
    ladder_e2e: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    e2e_ms: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    lock: threading.Lock = field(default_factory=threading.Lock)
    stages: defaultdict[str, deque[float]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=512)))

    def record_published(self, e2e_ms: float, encode_ms: float) -> None:
        """A result handed to the sinks (publish stage's thread)."""
        self.ladder_e2e.append(e2e_ms)
        with self.lock:
            self.stages["encode"].append(encode_ms)
            self.e2e_ms.append(e2e_ms)


@dataclass(slots=True)
class Camera:
    name: str
    config: CameraConfig
    handoff: Handoff
    capture: CaptureThread
    stats: CameraStats
    budget: Budget
    realtime: bool
    stop_reason: str = ""  # set when the camera is stopped on purpose (reload)
    budget_warned: bool = False
    # the model's output is NaN/Inf on every frame lately (state model_error)
    model_error: bool = False
    nonfinite_run: int = 0  # frames in a row with nothing but NaN/Inf detections
    nonfinite_logged: float = -math.inf  # monotonic time of the last such log line
    nonfinite_at_log: int = 0  # nonfinite_rows when it was written
    # set when the camera must stop: wakes a max_fps wait at once
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class Pipeline:
    def __init__(self, config: Config, models: Models, *, outputs: Sequence[Output],
                 frames: int | None = None,
                 duration: float | None = None, notifier: Notifier | None = None,
                 stage: PublishStage | None = None,
                 blocking: BlockingCalls | None = None,
                 metrics_sock: socket.socket | None = None,
                 cpu: CpuInfo | None = None) -> None:
        """`models`: from `edged.daemon.models.load_models`. `outputs`: the outputs there
        are (`edged.app.OUTPUTS`); the configured ones get a sink. `stage`: a started publish
        stage (the lifecycle binds it before the model loads); without one, `bind` or
        `run` makes it. `cpu`: this machine's, for the `_stats` machine info (default:
        detected)."""
        self.config = config
        self.outputs = tuple(outputs)
        self.cpu = cpu or detect_cpu()
        self.models = models
        self.frames = frames
        self.duration = duration
        self.pool = InferencePool(models.rungs, models.plan.workers, models.max_batch)
        self.ladder: Ladder | None = self._make_ladder(config, models.rungs)
        self.tracking = TrackingStage(config, self.runner.manifest.classes, self.runner.model_id)
        self.exit_code = 0
        self.cameras: dict[str, Camera] = {}
        self.stop_event = asyncio.Event()
        self.stage = stage
        self.blocking = blocking or BlockingCalls()  # config and model loads, joins
        self._metrics_sock = metrics_sock  # bound before READY by the lifecycle
        self.notifier = notifier or Notifier({})
        self._latest_stats: DaemonSnapshot | None = None
        self._started = time.monotonic()
        self._tg: asyncio.TaskGroup | None = None
        self._sched: Scheduler | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # every task that is not a camera loop; all are cancelled when the cameras are done
        self._helpers: set[asyncio.Task[None]] = set()
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._reload_pending = False  # asked for before the pipeline was ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = asyncio.Event()
        self.health = Health(self.pool, self.notifier, self.blocking,
                             lambda: self.config.model.stuck_after_s, self._spawn,
                             self._give_up)

    @property
    def runner(self) -> ModelRunner:
        """The model variant running now."""
        return self.pool.runner

    @property
    def reloading(self) -> bool:
        return self._reload_task is not None and not self._reload_task.done()

    @property
    def zmq(self) -> ZmqSink:
        assert self.stage is not None
        sink = self.stage.sinks[0].sink
        assert isinstance(sink, ZmqSink)
        return sink

    @staticmethod
    def _make_ladder(config: Config, rungs: list[ModelRunner]) -> Ladder | None:
        if config.model.ladder is None or len(rungs) < 2:
            return None
        return Ladder(config.model.ladder, [r.cost_ms or 1.0 for r in rungs], time.monotonic())

    # ------------------------------------------------------------------ setup

    def _make_camera(self, name: str, cam: CameraConfig,
                     loop: asyncio.AbstractEventLoop) -> Camera | None:
        kind = cam.resolved_type()
        mode = cam.resolved_mode()
        try:
            source = source_for(cam, redactor=self.config.redactor())
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
        epoch = (self.tracking.reconnected(camera, time.monotonic_ns())
                 if state == CameraState.RECONNECTING else None)
        self._send_soon(encode_state(camera, state, detail, track_epoch=epoch))

    def _send_soon(self, frames: list[bytes]) -> None:
        """Queue a control message to every sink, behind what the stage holds."""
        if self.stage is not None:
            self.stage.control(frames)

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
        stage = self.stage
        assert stage is not None
        initial = [c for n, cc in cfg.cameras.items() if cc.enabled
                   and (c := self._make_camera(n, cc, loop)) is not None]
        if not initial:
            log.error("no camera could be started")
            stage.close(SINK_CLOSE_S)
            return 1
        # a worker may take a batch: that many frames may be granted and waiting
        self._sched = Scheduler(self.pool.workers * self.pool.max_batch, {})
        await self._wait_for_subscribers()
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
                self.ready.set()
                if self._reload_pending:
                    self._reload_pending = False
                    self.request_reload()
                self._spawn(self._stats_loop(), "stats")
                self._spawn(self.health.run(), "watchdog")
                self._spawn(self._ladder_loop(), "ladder")  # idle while there is no ladder
                if cfg.log.metrics:
                    self._spawn(serve_metrics(cfg.log.metrics, self.latest_stats,
                                             sock=self._metrics_sock), "metrics")
                if self.duration is not None:
                    self._spawn(self._stop_after(self.duration), "duration")
                # a reload may add cameras while we wait: done when none is left running
                # and no reload is under way
                while True:
                    pending = [t for t in self._tasks.values() if not t.done()]
                    if self._reload_task is not None and self.reloading:
                        pending.append(self._reload_task)
                    if not pending:
                        break
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                self.stop_event.set()
                for h in list(self._helpers):
                    h.cancel()
        finally:
            self._tg = None
            for cam in self.cameras.values():
                cam.capture.stop()
                cam.handoff.close()
            deadline = time.monotonic() + 2.0  # one 2 s allowance for all, not 2 s each
            for cam in self.cameras.values():
                cam.capture.join(timeout=max(0.0, deadline - time.monotonic()))
            self.pool.shutdown()
            stage.close(SINK_CLOSE_S)
            final = self._log_stats(time.monotonic() - started, final=True)
            log.info("%s", final.inference.log_line(self.runner.model_id))
        if self.pool.failed is not None:
            return 1
        if all(c.capture.state == CameraState.FAILED for c in self.cameras.values()):
            log.error("every camera failed")
            return 1
        return self.exit_code

    def bind(self) -> None:
        """Bind the publishing socket and start the publish stage (run() does it; call
        earlier to let subscribers connect before the first frame)."""
        if self.stage is None:
            self.stage = make_stage(self.config, self.outputs)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """A helper task owned by the running TaskGroup, cancelled when the cameras are
        done (None, and the coroutine closed, once the group has ended)."""
        if self._tg is None:
            coro.close()
            return None
        task = self._tg.create_task(coro, name=name)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
        return task

    # ------------------------------------------------------------------ reload

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file and apply what changed. A SIGHUP during a
        reload is queued: one more reload follows, so the last file written wins."""
        if self.stop_event.is_set():
            return
        if self._tg is None:  # not running yet: applied once ready
            self._reload_pending = True
            return
        if self.reloading:
            if not self._reload_again:
                log.info("SIGHUP during a reload: reloading again when it is done")
            self._reload_again = True
            return
        self._reload_task = self._spawn(self._reload_until_current(), "reload")

    async def _reload_until_current(self) -> None:
        while True:
            self._reload_again = False
            await self._reload()
            if not self._reload_again or self.stop_event.is_set():
                return

    async def _stop_camera(self, name: str, reason: str) -> None:
        cam = self.cameras.pop(name)
        cam.stop_reason = reason
        cam.stopping.set()
        cam.capture.stop()
        cam.handoff.close()
        task = self._tasks.pop(name, None)
        if task is not None:
            await asyncio.wait([task])
        await self.blocking.run(cam.capture.join, 2.0, name=f"join-{name}")

    async def _reload(self) -> None:
        from edged.config import ConfigError, load_config
        from edged.daemon.models import load_rungs

        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        old = self.config
        log.info("SIGHUP: reloading %s", old.source_file or "the built-in default")
        try:
            try:
                new = await self.blocking.run(
                    lambda: load_config(old.source_file, int8_class=self.cpu.int8_class),
                    name="reload-config")
            except (ConfigError, OSError) as e:
                log.error("reload rejected, the running configuration stays:\n%s", e)
                return
            await self._reload_publisher()
            # the publisher and the outputs are bound and opened once, at the start
            kept = [name for name in ("publish", *(o.name for o in self.outputs))
                    if getattr(new, name) != getattr(old, name)]
            # the worker plan and the batch size shape the running pool
            fixed = ("workers", "threads", "batch")
            kept += [f"model.{k}" for k in fixed
                     if getattr(new.model, k) != getattr(old.model, k)]
            if kept:
                log.warning("reload: %s changed; restart edged to apply (kept as running)",
                            ", ".join(kept))
            new = new.model_copy(update={
                "publish": old.publish, **{o.name: getattr(old, o.name) for o in self.outputs},
                "model": new.model.model_copy(update={k: getattr(old.model, k)
                                                      for k in fixed})})
            if new.model != old.model:
                threads = self.runner.threads
                # a model load and warm-up can take seconds: say so before it starts
                log.info("reload: loading model %s", new.model.path)
                try:
                    rungs = await self.blocking.run(load_rungs, new, threads, name="reload-model")
                except Exception as e:  # noqa: BLE001 - any failure to load or warm up
                    # the new model (a bad file, a manifest that does not fit the graph,
                    # a provider error) rejects the reload; nothing running has changed
                    log.error("reload rejected: %s; the running model and configuration "
                              "stay", e)
                    return
                self.pool.use_rungs(rungs)
                self.ladder = self._make_ladder(new, rungs)
                log.info("reload: model %s loaded", self.runner.model_id)
            want = {n: c for n, c in new.cameras.items() if c.enabled}
            removed = [n for n in self.cameras if n not in want]
            changed = [n for n in self.cameras if n in want and want[n] != old.cameras.get(n)]
            added = [n for n in want if n not in self.cameras]
            # a new model's detections start new epochs of ids on every camera
            restarted = list(want) if new.model != old.model else changed
            try:
                self.tracking.configure(new, self.runner.manifest.classes,
                                        self.runner.model_id, restarted)
            except TrackingError as e:
                log.error("reload rejected, the running configuration stays: %s", e)
                return
            for n in removed:
                await self._stop_camera(n, "removed by reload")
            for n in changed:
                await self._stop_camera(n, "reconfigured")
            self.config = new
            loop = asyncio.get_running_loop()
            for n in changed + added:
                if self.stop_event.is_set():
                    break  # stopping: no new camera starts
                cam = self._make_camera(n, want[n], loop)
                if cam is not None:
                    self._start_camera(cam)
            logging.getLogger().setLevel(new.log.level.upper())
            log.info("reload done: %d camera(s) unchanged, %d restarted, %d added, %d removed",
                     len(self.cameras) - len(changed) - len(added), len(changed), len(added),
                     len(removed))
        finally:
            self.notifier.ready(f"{len(self.cameras)} camera(s) after reload")

    async def _on_zmq_thread(self, fn: Callable[[Publisher], T],
                             timeout: float | None = None) -> T:
        """`fn(publisher)` run on the ZeroMQ sink's thread (the socket's owner), awaited."""
        assert self.stage is not None
        out: list[T] = []
        done = self.stage.sinks[0].call(lambda: out.append(fn(self.zmq.publisher)))
        await asyncio.wait_for(asyncio.wrap_future(done), timeout)
        return out[0]

    async def _wait_for_subscribers(self) -> None:
        """publish.wait_for_subscribers: hold the cameras until that many subscriptions
        have arrived."""
        n = self.config.publish.wait_for_subscribers
        if not n:
            return
        timeout = self.config.publish.wait_timeout_s
        log.info("waiting for %d subscription(s) before the cameras start "
                 "(publish.wait_for_subscribers, at most %.0f s)", n, timeout)
        have = await self._on_zmq_thread(lambda p: p.wait_for_subscriptions(n, timeout))
        if have >= n:
            log.info("%d subscription(s) in place: starting the cameras", have)
        else:
            log.warning("only %d of %d subscription(s) within %.0f s: starting the cameras "
                        "anyway", have, n, timeout)

    async def _reload_publisher(self) -> None:
        """Lift the publisher's refusals and re-read publish.curve.clients_dir: added keys
        are admitted at their next handshake; a removed one rebinds."""
        try:
            said = await self._on_zmq_thread(Publisher.reload, timeout=5.0)
        except Exception as e:  # noqa: BLE001 - a bind that fails again is logged, not fatal
            log.error("reload: publisher refusals and CURVE client keys not reloaded: %s", e)
            return
        for line in said:
            log.info("reload: %s", line)

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
                cam.stopping.set()
                cam.capture.stop()
                cam.handoff.close()
            # a reload under way ends where it is: cameras it stopped have had their
            # end-of-stream, and it starts no new ones
            if self._reload_task is not None and self.reloading:
                self._reload_task.cancel()
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
        sched, stage = self._sched, self.stage
        assert sched is not None and stage is not None
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
                    f"camera failed: {cam.capture.error}" if cam.capture.state == CameraState.FAILED
                    else cam.capture.detail or "end of stream"))
                break
            if min_period:  # max_fps cap: wait for the slot, then take the freshest frame
                delay = next_start - time.monotonic()
                if delay > 0:
                    # a stop or reload ends the wait at once, however low max_fps is
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(cam.stopping.wait(), delay)
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
        await stage.end_of_stream(cam.name, reason)
        log.info("camera %s: end of stream published (%s)", cam.name, reason)

    async def _finish(self, cam: Camera, fut: asyncio.Future[Result], frame: Frame,
                      pending: asyncio.Future[None] | None) -> asyncio.Future[None] | None:
        """Wait for one frame's result, count it and hand it to the publish thread.

        Returns the publish future: judging and encoding this result overlap the next
        frame's inference, and at most one result per camera waits for the publish stage.
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
        if result.nonfinite or cam.model_error:
            self._judge_output(cam, result)
        self.tracking.update(result)  # in capture order: results finish in that order
        with cam.stats.lock:
            for stage, ms in result.timings_ms.items():
                cam.stats.stages[stage].append(ms)
        if pending is not None:
            await pending
        assert self.stage is not None
        return self.stage.publish(cam.budget, cam.stats, result, frame)

    def _judge_output(self, cam: Camera, result: Result) -> None:
        """Count NaN/Inf detections, and move the camera in and out of `model_error`:
        a state change on the bus and in the stats, one log line per minute at most."""
        s = cam.stats
        s.nonfinite_rows += result.nonfinite
        if result.nonfinite_only:
            s.nonfinite_frames += 1
            cam.nonfinite_run += 1
        else:
            cam.nonfinite_run = 0
        now = time.monotonic()
        if not cam.model_error and cam.nonfinite_run >= NONFINITE_FRAMES:
            cam.model_error = True
            detail = (f"the model's output is NaN/Inf: every detection of the last "
                      f"{cam.nonfinite_run} frames dropped")
            self._publish_state(cam.name, CameraState.MODEL_ERROR, detail)
            log.error("camera %s: %s (model %s); nothing usable is published until it "
                      "gives finite values", cam.name, detail, result.model_id)
            cam.nonfinite_logged, cam.nonfinite_at_log = now, s.nonfinite_rows
        elif cam.model_error and cam.nonfinite_run == 0:
            cam.model_error = False
            self._publish_state(cam.name, CameraState.RUNNING,
                                "the model's output is finite again")
            log.info("camera %s: the model's output is finite again", cam.name)
        elif now - cam.nonfinite_logged >= NONFINITE_LOG_S:
            # counted always, said at most once a minute: a model that overflows on
            # some scenes must not flood the journal
            log.warning("camera %s: %d detection(s) with NaN/Inf values dropped since "
                        "the last report (model %s)", cam.name,
                        s.nonfinite_rows - cam.nonfinite_at_log, result.model_id)
            cam.nonfinite_logged, cam.nonfinite_at_log = now, s.nonfinite_rows

    def _warn_budget(self, cam: Camera) -> None:
        if not cam.budget_warned:
            cam.budget_warned = True
            log.warning("camera %s: budget %.0f ms is below the time to process a frame "
                        "(about %.0f ms): most frames are dropped as stale, the rest published "
                        "late", cam.name, cam.budget.latency_ms, cam.budget.ahead.value or 0.0)

    def latest_stats(self) -> DaemonSnapshot:
        """The last stats window (the whole run once stopped); before the first window,
        figures since the start."""
        if self._latest_stats is not None:
            return self._latest_stats
        now = time.monotonic()
        elapsed = now - self._started
        ps = self.pool.stats
        return DaemonSnapshot(
            uptime_s=elapsed, interval_s=elapsed, final=True,
            cameras={c.name: self._snapshot(c, elapsed, final=True)
                     for c in self.cameras.values()},
            inference=InferenceCounters(ps.frames, ps.batches, ps.largest_batch, ps.recreated))

    def _give_up(self) -> None:
        """The pool's recreation budget is spent: stop with exit code 1."""
        self.exit_code = 1
        self.stop()

    # ------------------------------------------------------------------ ladder

    async def _ladder_loop(self) -> None:
        while True:  # one task for the whole run: a reload may add or replace the ladder
            await asyncio.sleep(LADDER_TICK_S)
            ladder = self.ladder
            if ladder is None:
                continue
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
            # learn the new variant's cost afresh (the estimate belongs to the publish
            # stage's thread, so it is reset there)
            budgets_now = [cam.budget for cam in self.cameras.values()]
            if self.stage is not None:
                self.stage.call(functools.partial(_forget_costs, budgets_now))
            log.warning("ladder: %s -> %s (%s)", old.model_id, new.model_id, switch.reason)
            self._send_soon(encode_model_event(new.model_id, switch.rung, old.model_id,
                                               switch.reason))

    # ------------------------------------------------------------------ stats

    async def _stats_loop(self) -> None:
        last = time.monotonic()
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
            last = now
            self.notifier.status(snapshot.status_line())
            self._send_soon(encode_stats(snapshot.to_wire(), snapshot.interval_s,
                                         snapshot.sinks_to_wire(), self.cpu.to_json()))

    def _snapshot(self, cam: Camera, elapsed: float, final: bool) -> CameraSnapshot:
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
        e2e = LatencyPercentiles(*np.percentile(e2e_window, [50, 90, 99]).tolist()) \
            if e2e_window else LatencyPercentiles()
        cap = cam.capture
        state = (CameraState.MODEL_ERROR if cam.model_error and cap.state == CameraState.RUNNING
                 else cap.state)
        return CameraSnapshot(
            camera=cam.name, state=state, capture_fps=round(cap_fps, 2),
            processed_fps=round(proc_fps, 2), published=self.zmq.published.get(cam.name, 0),
            late=s.late,
            drops=Drops(overwritten=cam.handoff.overwritten, stale=s.stale,
                        late=s.late_dropped, errors=s.errors),
            e2e_ms=e2e,
            stages_ms_p50={k: float(np.median(v)) for k, v in stage_windows.items()},
            budget_ms=cam.budget.latency_ms, variant=self.runner.model_id,
            capture=CaptureCounters(corrupt=cap.corrupt, reconnects=cap.reconnects,
                                    stalls=cap.stalls, crashes=cap.crashes,
                                    stuck_readers=cap.stuck_readers()),
            providers=self.runner.placement_summary, processed=s.processed,
            model_output=ModelOutput(s.nonfinite_rows, s.nonfinite_frames),
            tracks_active=self.tracking.active(cam.name))

    def _log_stats(self, elapsed: float, final: bool = False) -> DaemonSnapshot:
        """One line per camera (the last window, or the whole run when final); the
        snapshot becomes `latest_stats()`."""
        cameras = {}
        for cam in self.cameras.values():
            cameras[cam.name] = self._snapshot(cam, elapsed, final)
            cam.stats.captured_at_report = cam.handoff.put_count
            cam.stats.window_processed = 0
        ps = self.pool.stats
        snap = self._latest_stats = DaemonSnapshot(
            uptime_s=time.monotonic() - self._started, interval_s=elapsed, final=final,
            cameras=cameras,
            inference=InferenceCounters(ps.frames, ps.batches, ps.largest_batch, ps.recreated),
            sinks=tuple(self.stage.sink_stats()) if self.stage is not None else ())
        for line in snap.log_lines():
            log.info("%s", line)
        return snap


def _forget_costs(budgets: list[Budget]) -> None:
    for b in budgets:
        b.ahead.value = None


def curve_keys(config: Config) -> ServerKeys | None:
    """The daemon's CURVE keys when `publish.curve` is set (CurveError names a bad file)."""
    c = config.publish.curve
    return None if c is None else server_keys(c.secret_key_file, c.clients_dir)


def make_publisher(config: Config, *, cameras: int = 0, linger_ms: int = 500) -> Publisher:
    """The publish socket as `publish` configures it (bound; PublishError, CurveError),
    for `edged run` and for `edged check`'s bind test alike."""
    pc = config.publish
    return Publisher(pc.endpoints, sndhwm=pc.sndhwm, cameras=cameras, linger_ms=linger_ms,
                     curve=curve_keys(config), ipc_mode=pc.ipc_mode_bits,
                     ipc_group=pc.ipc_group)


def make_stage(config: Config, outputs: Sequence[Output]) -> PublishStage:
    """Bind the ZeroMQ publisher and start the publish stage with it as its first sink,
    then each configured one of `outputs` in turn (its extra checked, its address bound,
    its directory checked); raises `edged.wire.publisher.PublishError` when an endpoint
    cannot be bound, and each output's own error."""
    pc = config.publish
    names = [n for n, c in config.cameras.items() if c.enabled]
    publisher = make_publisher(config, cameras=len(names))
    # a new id per process start: subscribers tell a restart from lost frames by it
    boot = secrets.token_hex(8)
    sinks = [SinkRunner(ZmqSink(publisher, boot))]
    try:
        for output in outputs:
            if output.configured(config):
                output.require(config)
                sinks.append(SinkRunner(output.build(config, names),
                                        queue_size=output.queue_size))
    except BaseException:
        for r in sinks:
            r.sink.close()  # not started yet: closes the sockets and files they opened
        raise
    stage = PublishStage(sinks, MaskEncoder(pc.mask_encoding, pc.zstd_level),
                         send_masks=pc.send_masks, boot=boot)
    stage.start()
    return stage
