"""The running daemon's owner: `Pipeline` holds the `asyncio.TaskGroup` every task lives
in, starts and stops the cameras, and hands the work to small owners: the camera loops
(`edged.daemon.camera_loop`), the reload (`edged.daemon.reload`), the stats collector
(`edged.daemon.stats`) and the ladder loop (`edged.daemon.ladder_loop`). Finished results
go to the publish stage (`edged.daemon.publish`), which fans them out to the sinks; the
daemon's events (`edged.telemetry`: state, stats, model change, drop) go to every sink
through `emit`.

Blocking work runs in threads (capture: one per camera; inference:
`edged.inference.pool.InferencePool`; judge + encode: the publish stage's thread; each
sink: its own thread). Stopping is a single event: capture threads stop, in-flight frames
are finished and published, each camera gets an end-of-stream message, and the sinks are
closed. The process lifecycle around it (signals, model load, exit) is
`edged.daemon.lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from edged.config import Config
from edged.daemon.camera_loop import Camera, CameraLoops, make_camera
from edged.daemon.health import Health
from edged.daemon.ladder_loop import LadderLoop, make_ladder
from edged.daemon.metrics import serve as serve_metrics
from edged.daemon.notify import Notifier
from edged.daemon.publish import PublishStage
from edged.daemon.reload import Reloader
from edged.daemon.scheduler import Scheduler
from edged.daemon.stats import StatsCollector
from edged.daemon.threads import BlockingCalls
from edged.daemon.tracking import TrackingStage
from edged.inference.cpu import CpuInfo
from edged.inference.cpu import detect as detect_cpu
from edged.inference.pool import InferencePool, Models
from edged.inference.runner import ModelRunner
from edged.outputs.base.output import Output
from edged.outputs.base.sink import Publishing, SinkRunner
from edged.telemetry import CameraState, ControlEvent, DaemonSnapshot, SinkStats, StateChanged
from edged.wire.codec import MaskEncoder

log = logging.getLogger("edged.daemon.pipeline")

DRAIN_S = 3.0  # how long a stop waits for inference runs in flight
SINK_CLOSE_S = 1.0  # how long a stop waits for each sink to deliver what it holds


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
        self.tracking = TrackingStage(config, self.runner.manifest.classes, self.runner.model_id)
        self.exit_code = 0
        self.cameras: dict[str, Camera] = {}
        self.stop_event = asyncio.Event()
        self.stage = stage
        self.blocking = blocking or BlockingCalls()  # config and model loads, joins
        self._metrics_sock = metrics_sock  # bound before READY by the lifecycle
        self.notifier = notifier or Notifier({})
        self._tg: asyncio.TaskGroup | None = None
        self._loops: CameraLoops | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # every task that is not a camera loop; all are cancelled when the cameras are done
        self._helpers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = asyncio.Event()
        self.ladder = LadderLoop(make_ladder(config, models.rungs), self.pool, self.cameras,
                                 lambda: self.stage, self.emit)
        self.stats = StatsCollector(self.cameras, self.pool, self._published,
                                    self._sink_stats, lambda: self.config.log.stats_interval_s,
                                    self.notifier, self.emit, self.cpu.to_json())
        self.reloader = Reloader(self)
        self.health = Health(self.pool, self.notifier, self.blocking,
                             lambda: self.config.model.stuck_after_s, self.spawn,
                             self._give_up)

    @property
    def runner(self) -> ModelRunner:
        """The model variant running now."""
        return self.pool.runner

    @property
    def running(self) -> bool:
        """The TaskGroup is up: cameras may be started and tasks spawned."""
        return self._tg is not None

    @property
    def publishing(self) -> list[tuple[SinkRunner, Publishing]]:
        """The sinks that publish to subscribers (the ZeroMQ output), with their runners."""
        if self.stage is None:
            return []
        return [(r, r.sink) for r in self.stage.sinks if isinstance(r.sink, Publishing)]

    def latest_stats(self) -> DaemonSnapshot:
        """The last stats window (the whole run once stopped)."""
        return self.stats.latest()

    def emit(self, event: ControlEvent) -> None:
        """An event to every sink, behind what the stage holds (on the loop's thread)."""
        if self.stage is not None:
            self.stage.control(event)

    def _published(self, camera: str) -> int:
        """The first publishing output's count (ZeroMQ's, in `edged.app.OUTPUTS`)."""
        publishing = self.publishing
        return publishing[0][1].published.get(camera, 0) if publishing else 0

    def _sink_stats(self) -> tuple[SinkStats, ...]:
        return tuple(self.stage.sink_stats()) if self.stage is not None else ()

    def _state_from_thread(self, camera: str, state: CameraState, detail: str) -> None:
        """A capture thread's state change -> an event to every sink."""
        if self._loop is not None:
            event = StateChanged(camera, state, detail)
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(
                    lambda: self.emit(self.tracking.announce(event)))

    # ------------------------------------------------------------------ cameras

    def add_camera(self, name: str) -> None:
        """Make camera `name` of the config and start it (inside the running TaskGroup);
        one whose source cannot be made is logged and left out."""
        assert self._loop is not None
        cam = make_camera(name, self.config.cameras[name], self.config, self._loop,
                          self._state_from_thread)
        if cam is not None:
            self._start_camera(cam)

    def _start_camera(self, cam: Camera) -> None:
        assert self._tg is not None and self._loops is not None
        self.cameras[cam.name] = cam
        self._loops.sched.add(cam.name, cam.config.weight)
        cam.capture.start()
        self._tasks[cam.name] = self._tg.create_task(self._loops.run(cam),
                                                     name=f"camera-{cam.name}")

    async def stop_camera(self, name: str, reason: str) -> None:
        """Stop camera `name` (a reload): its loop ends with its end-of-stream."""
        cam = self.cameras.pop(name)
        cam.stop_reason = reason
        cam.stopping.set()
        cam.capture.stop()
        cam.handoff.close()
        task = self._tasks.pop(name, None)
        if task is not None:
            await asyncio.wait([task])
        await self.blocking.run(cam.capture.join, 2.0, name=f"join-{name}")

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
                   and (c := make_camera(n, cc, cfg, loop, self._state_from_thread))
                   is not None]
        if not initial:
            log.error("no camera could be started")
            stage.close(SINK_CLOSE_S)
            return 1
        # a worker may take a batch: that many frames may be granted and waiting
        self._loops = CameraLoops(self.pool,
                                  Scheduler(self.pool.workers * self.pool.max_batch, {}),
                                  stage, self.stop_event, self.emit, self.tracking,
                                  self.frames)
        await self._wait_for_subscribers()
        started = self.stats.started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for cam in initial:
                    self._start_camera(cam)
                self._log_ready()
                # READY only now: the model is warm and the sockets are bound
                self.notifier.ready(f"{len(self.cameras)} camera(s) starting")
                self.ready.set()
                if self.reloader.pending:
                    self.reloader.pending = False
                    self.request_reload()
                self.spawn(self.stats.run(), "stats")
                self.spawn(self.health.run(), "watchdog")
                self.spawn(self.ladder.run(), "ladder")  # idle while there is no ladder
                if cfg.log.metrics:
                    self.spawn(serve_metrics(cfg.log.metrics, self.latest_stats,
                                             sock=self._metrics_sock), "metrics")
                if self.duration is not None:
                    self.spawn(self._stop_after(self.duration), "duration")
                # a reload may add cameras while we wait: done when none is left running
                # and no reload is under way
                while True:
                    pending = [t for t in self._tasks.values() if not t.done()]
                    if self.reloader.task is not None and self.reloader.busy:
                        pending.append(self.reloader.task)
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
            final = self.stats.take(time.monotonic() - started, final=True)
            log.info("%s", final.inference.log_line(self.runner.model_id))
        if self.pool.failed is not None:
            return 1
        if all(c.capture.state == CameraState.FAILED for c in self.cameras.values()):
            log.error("every camera failed")
            return 1
        return self.exit_code

    def _log_ready(self) -> None:
        log.info("ready: %d camera(s), model %s on %s, %d worker(s) x %d thread(s), "
                 "batch up to %d (%s), publishing on %s",
                 len(self.cameras), self.runner.model_id,
                 ",".join(self.runner.providers), self.pool.workers,
                 self.runner.threads, self.pool.max_batch, self.models.batch_reason,
                 ", ".join(self.config.publish.endpoints))
        if self.ladder.ladder is not None:
            log.info("degradation ladder: %s", " -> ".join(
                f"{r.model_id} ({r.cost_ms:.1f} ms)" if r.cost_ms else r.model_id
                for r in self.pool.rungs))

    def bind(self) -> None:
        """Build the outputs' sinks (binding their sockets) and start the publish stage
        (run() does it; call earlier to let subscribers connect before the first frame)."""
        if self.stage is None:
            self.stage = make_stage(self.config, self.outputs)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """A helper task owned by the running TaskGroup, cancelled when the cameras are
        done (None, and the coroutine closed, once the group has ended)."""
        if self._tg is None:
            coro.close()
            return None
        task = self._tg.create_task(coro, name=name)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
        return task

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file and apply what changed (`edged.daemon.reload`)."""
        self.reloader.request()

    # ------------------------------------------------------------------ publishing

    async def _wait_for_subscribers(self) -> None:
        """Hold the cameras until each publishing output has the subscriptions its config
        asks for (each bounds its own wait; on its thread, the socket's owner)."""
        waits = [r.call(p.wait_for_subscribers) for r, p in self.publishing]
        for done in waits:
            await asyncio.wrap_future(done)

    async def reload_outputs(self) -> None:
        """SIGHUP: each publishing output re-reads what it may while running (ZeroMQ:
        its refusals lifted, publish.curve.clients_dir re-read; a removed key rebinds)."""
        for r, p in self.publishing:
            try:
                said = await asyncio.wait_for(asyncio.wrap_future(r.call(p.reload)), 5.0)
            except Exception as e:  # noqa: BLE001 - a bind that fails again is logged, not fatal
                log.error("reload: output %s not reloaded (refusals, keys): %s", r.sink.name, e)
                continue
            for line in said:
                log.info("reload: %s", line)

    # ------------------------------------------------------------------ stop

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
            self.reloader.cancel()
            # frames in flight are finished and published, but a wedged run must not hold
            # the stop hostage: after DRAIN_S it is given up and its frame counted an error
            if self._loop is not None:
                self._loop.call_later(DRAIN_S, self._give_up_in_flight)

    def _give_up(self) -> None:
        """The pool's recreation budget is spent: stop with exit code 1."""
        self.exit_code = 1
        self.stop()

    def _give_up_in_flight(self) -> None:
        n = self.pool.abandon_all("edged is stopping")
        if n:
            log.error("stopping: %d inference run(s) still busy after %.0f s, given up", n,
                      DRAIN_S)


def make_stage(config: Config, outputs: Sequence[Output]) -> PublishStage:
    """Start the publish stage with a sink for each configured one of `outputs`, in
    their order (its extra checked, its address bound, its directory checked); raises
    each output's own error (the ZeroMQ output's: PublishError, CurveError)."""
    pc = config.publish
    names = [n for n, c in config.cameras.items() if c.enabled]
    # a new id per process start: subscribers tell a restart from lost frames by it
    boot = secrets.token_hex(8)
    sinks: list[SinkRunner] = []
    try:
        for output in outputs:
            section = output.section(config)
            if section is not None:
                output.require(config, section)
                sinks.append(SinkRunner(output.build(config, section, names),
                                        queue_size=output.queue_size))
    except BaseException:
        for r in sinks:
            r.sink.close()  # not started yet: closes the sockets and files they opened
        raise
    stage = PublishStage(sinks, MaskEncoder(pc.mask_encoding, pc.zstd_level),
                         send_masks=pc.send_masks, boot=boot)
    stage.start()
    return stage
