"""One camera's loop on the event loop: take the freshest frame when the scheduler grants a
worker, drop it as stale when it cannot finish inside the budget, hand it to the inference
pool, and pass results, in capture order, to the publish stage; then the camera's
end-of-stream. `Camera` and `CameraStats` hold a camera's state and counters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edged.capture.base import RestartPolicy, SourceError
from edged.capture.handoff import Handoff
from edged.capture.sources import source_for
from edged.capture.supervisor import CaptureThread
from edged.config import CameraConfig, Config
from edged.daemon.publish import DropEvents, Published, PublishStage
from edged.daemon.scheduler import Budget, Scheduler
from edged.daemon.tracking import TrackingStage
from edged.inference.pool import InferencePool
from edged.results import Frame, Result
from edged.telemetry import CameraState, ControlEvent, DropCause, FrameDropped, StateChanged

log = logging.getLogger("edged.daemon.pipeline")

PROBE_AFTER_STALE = 10  # consecutive stale drops before one frame is processed anyway
IDLE_GRACE_S = 0.1  # waiting longer than this for a frame counts as idle (fair queuing)
# frames in a row with nothing but NaN/Inf detections before the camera is model_error
NONFINITE_FRAMES = 3
NONFINITE_LOG_S = 60.0  # the most often NaN/Inf detections are logged, per camera


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
    tracks_active: int | None = None  # confirmed tracks in the last frame; None: not tracked
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


def make_camera(name: str, cam: CameraConfig, config: Config, loop: asyncio.AbstractEventLoop,
                on_state: Callable[[str, CameraState, str], None]) -> Camera | None:
    """A camera with its source opened lazily by its capture thread (not started); None,
    logged, when its source cannot be made."""
    kind = cam.resolved_type()
    mode = cam.resolved_mode()
    try:
        source = source_for(cam, redactor=config.redactor())
    except SourceError as e:
        log.error("camera %s: %s; the other cameras carry on", name, e)
        return None
    handoff = Handoff(loop, lossless=mode == "every_frame")
    # files replayed frame by frame run as fast as they are processed unless an fps
    # is set; everything else is paced at its rate
    pace = not (mode == "every_frame" and not source.live and cam.fps is None)
    capture = CaptureThread(name, source, handoff, fps=cam.fps, pace=pace, on_state=on_state,
                            policy=RestartPolicy.from_camera(cam))
    log.info("camera %s: %s source %s, mode %s", name, kind, source.description, mode)
    return Camera(name, cam, handoff, capture, CameraStats(),
                  Budget(cam.budget.latency_ms, cam.budget.on_late),
                  realtime=mode == "realtime")


class CameraLoops:
    """Runs each camera's loop (`run`), sharing the pool, the scheduler and the stage.

    `emit`: an event to every sink (state changes, drops). `tracking`: the cameras'
    trackers, run on each result in capture order. `frames`: stop each camera after that
    many frames (None: until its stream ends)."""

    def __init__(self, pool: InferencePool, sched: Scheduler, stage: PublishStage,
                 stop_event: asyncio.Event, emit: Callable[[ControlEvent], None],
                 tracking: TrackingStage, frames: int | None = None) -> None:
        self.pool = pool
        self.tracking = tracking
        self.sched = sched
        self.stage = stage
        self.stop_event = stop_event
        self.emit = emit
        self.frames = frames
        self._drops = DropEvents()

    def _dropped(self, cam: Camera, cause: DropCause, seq: int) -> None:
        if self._drops.due(cam.name, cause):
            self.emit(FrameDropped(cam.name, cause, seq))

    async def run(self, cam: Camera) -> None:
        sched, stage = self.sched, self.stage
        pending: Published | None = None
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
                self._dropped(cam, DropCause.STALE, frame.seq)
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
                      pending: Published | None) -> Published | None:
        """Wait for one frame's result, count it and hand it to the publish thread.

        Returns the publish future: judging and encoding this result overlap the next
        frame's inference, and at most one result per camera waits for the publish stage.
        """
        try:
            result = await fut
        except Exception as e:  # one bad frame must not end the camera
            cam.stats.errors += 1
            self._dropped(cam, DropCause.ERROR, frame.seq)
            if self.pool.failed is None:
                log.error("camera %s: inference failed on frame %d: %s", cam.name, frame.seq,
                          e)
            return pending
        cam.stats.processed += 1
        cam.stats.window_processed += 1
        if result.nonfinite or cam.model_error:
            self._judge_output(cam, result)
        self.tracking.update(result)  # in capture order: results finish in that order
        cam.stats.tracks_active = None if result.tracks is None else result.tracks.active
        with cam.stats.lock:
            for stage, ms in result.timings_ms.items():
                cam.stats.stages[stage].append(ms)
        if pending is not None:
            await pending
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
            self.emit(StateChanged(cam.name, CameraState.MODEL_ERROR, detail))
            log.error("camera %s: %s (model %s); nothing usable is published until it "
                      "gives finite values", cam.name, detail, result.model_id)
            cam.nonfinite_logged, cam.nonfinite_at_log = now, s.nonfinite_rows
        elif cam.model_error and cam.nonfinite_run == 0:
            cam.model_error = False
            self.emit(StateChanged(cam.name, CameraState.RUNNING,
                                   "the model's output is finite again"))
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
