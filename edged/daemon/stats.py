"""The stats collector: every `log.stats_interval_s` one `DaemonSnapshot` from the
cameras' counters, the pool and the sinks, logged, given to the service manager and sent
to every sink as a `StatsReport`; the last one is `latest()` (the metrics endpoint, the
bench)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edged.daemon.camera_loop import Camera
from edged.daemon.notify import Notifier
from edged.inference.pool import InferencePool
from edged.inference.triton.runner import TritonRunner
from edged.telemetry import (
    CameraSnapshot,
    CameraState,
    CaptureCounters,
    ControlEvent,
    DaemonSnapshot,
    Drops,
    InferenceCounters,
    LatencyPercentiles,
    ModelOutput,
    SinkStats,
    StatsReport,
)

log = logging.getLogger("edged.daemon.pipeline")


class StatsCollector:
    """Reads what the cameras, the pool and the sinks count; owns the stats window.

    `cameras`: the running cameras (the pipeline's dict, changed by a reload).
    `published`: results handed to ZeroMQ so far for a camera. `sinks`: each sink's
    counts now. `interval_s`: the window, asked each time (a reload may change it)."""

    def __init__(self, cameras: Mapping[str, Camera], pool: InferencePool,
                 published: Callable[[str], int], sinks: Callable[[], tuple[SinkStats, ...]],
                 interval_s: Callable[[], float], notifier: Notifier,
                 emit: Callable[[ControlEvent], None],
                 machine: Mapping[str, Any] | None = None) -> None:
        self.cameras = cameras
        self.pool = pool
        self.published = published
        self.sinks = sinks
        self.interval_s = interval_s
        self.notifier = notifier
        self.emit = emit
        self.machine = machine
        self.started = time.monotonic()
        self._latest: DaemonSnapshot | None = None

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s())
            now = time.monotonic()
            interval = now - last
            last = now
            try:
                snapshot = self.take(interval)
            except Exception:  # statistics must never take the pipeline down
                log.exception("statistics failed; the pipeline carries on")
                continue
            self.notifier.status(snapshot.status_line())
            self.emit(StatsReport(snapshot, self.machine))

    def latest(self) -> DaemonSnapshot:
        """The last stats window (the whole run once stopped); before the first window,
        figures since the start."""
        if self._latest is not None:
            return self._latest
        elapsed = time.monotonic() - self.started
        return DaemonSnapshot(
            uptime_s=elapsed, interval_s=elapsed, final=True,
            cameras={c.name: self._snapshot(c, elapsed, final=True)
                     for c in self.cameras.values()},
            inference=self._inference())

    def take(self, elapsed: float, final: bool = False) -> DaemonSnapshot:
        """One line per camera (the last window, or the whole run when final); the
        snapshot becomes `latest()`."""
        cameras = {}
        for cam in self.cameras.values():
            cameras[cam.name] = self._snapshot(cam, elapsed, final)
            cam.stats.captured_at_report = cam.handoff.put_count
            cam.stats.window_processed = 0
        snap = self._latest = DaemonSnapshot(
            uptime_s=time.monotonic() - self.started, interval_s=elapsed, final=final,
            cameras=cameras, inference=self._inference(), sinks=self.sinks())
        for line in snap.log_lines():
            log.info("%s", line)
        return snap

    def _inference(self) -> InferenceCounters:
        ps = self.pool.stats
        remote = next((r.remote for r in self.pool.rungs
                       if isinstance(r, TritonRunner) and r.remote is not None), None)
        if remote is None:
            return InferenceCounters(ps.frames, ps.batches, ps.largest_batch, ps.recreated)
        return InferenceCounters(ps.frames, ps.batches, ps.largest_batch, ps.recreated,
                                 remote.up, remote.remote_frames, remote.fallback_frames)

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
        runner = self.pool.runner
        return CameraSnapshot(
            camera=cam.name, state=state, capture_fps=round(cap_fps, 2),
            processed_fps=round(proc_fps, 2), published=self.published(cam.name),
            late=s.late,
            drops=Drops(overwritten=cam.handoff.overwritten, stale=s.stale,
                        late=s.late_dropped, errors=s.errors),
            e2e_ms=e2e,
            stages_ms_p50={k: float(np.median(v)) for k, v in stage_windows.items()},
            budget_ms=cam.budget.latency_ms, variant=runner.model_id,
            capture=CaptureCounters(corrupt=cap.corrupt, reconnects=cap.reconnects,
                                    stalls=cap.stalls, crashes=cap.crashes,
                                    stuck_readers=cap.stuck_readers()),
            providers=runner.placement_summary, processed=s.processed,
            model_output=ModelOutput(s.nonfinite_rows, s.nonfinite_frames),
            tracks_active=s.tracks_active)
