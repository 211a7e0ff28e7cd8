"""The daemon's one lifecycle: starting -> ready -> (reloading -> ready)* -> stopping ->
stopped.

- Signals are handled from the first instant: `EarlySignals` records SIGTERM, SIGINT and
  SIGHUP from the moment `edged run` starts, before anything is imported or loaded;
  `Daemon.run` takes them over on the event loop and acts on what came early.
- The publisher is bound before the model loads, so a stop at any point sends each
  camera its end-of-stream. The model loads on a daemon thread: a stop during warm-up
  does not wait for it.
- A SIGHUP before ready is applied once ready; a SIGHUP during a reload is queued, so
  the last file written is the one running (`Pipeline.request_reload`).
- A stop is bounded: in-flight inference is given up after `pipeline.DRAIN_S`, sinks
  after `pipeline.SINK_CLOSE_S`, and should anything still hold the process after
  `STOP_DEADLINE_S`, it exits with status 1 and a line saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edged.config import Config
from edged.daemon.metrics import bind as bind_metrics
from edged.daemon.notify import Notifier
from edged.daemon.pipeline import SINK_CLOSE_S, Pipeline, make_stage
from edged.daemon.publish import PublishStage
from edged.daemon.signals import HANDLED, EarlySignals
from edged.daemon.threads import BlockingCalls
from edged.inference.cpu import CpuInfo, int8_mismatch
from edged.inference.cpu import detect as detect_cpu

if TYPE_CHECKING:
    from edged.outputs.base.output import Output

log = logging.getLogger("edged.daemon.lifecycle")

STOP_DEADLINE_S = 10.0


class Daemon:
    """`edged run`: owns the publish stage, the model load and the pipeline."""

    def __init__(self, config: Config, *, outputs: Sequence[Output],
                 frames: int | None = None,
                 duration: float | None = None, notifier: Notifier | None = None,
                 early: EarlySignals | None = None, cpu: CpuInfo | None = None) -> None:
        self.config = config
        self.outputs = tuple(outputs)  # the outputs there are (edged.app.OUTPUTS)
        self.cpu = cpu  # detected by the caller (edged run), else at start
        self.frames = frames
        self.duration = duration
        self.notifier = notifier or Notifier({})
        self.early = early
        self.pipeline: Pipeline | None = None
        self.blocking = BlockingCalls()
        self._stopping = asyncio.Event()
        self._reload_pending = False
        self._deadline: threading.Timer | None = None

    # ------------------------------------------------------------------ signals

    def _install(self, loop: asyncio.AbstractEventLoop) -> None:
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, self.stop, s)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.early is not None:
            # the loop's handlers have replaced the early ones: act on what came before
            for s in list(self.early.received):
                if s == signal.SIGHUP:
                    self.reload()
                else:
                    self.stop(s)

    def _uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for s in HANDLED:
            loop.remove_signal_handler(s)

    def stop(self, sig: signal.Signals | None = None) -> None:
        if self._stopping.is_set():
            return
        if sig is not None:
            log.info("%s received, stopping", signal.Signals(sig).name)
        self._stopping.set()
        self._deadline = threading.Timer(STOP_DEADLINE_S, self._overdue)
        self._deadline.daemon = True
        self._deadline.start()
        if self.pipeline is not None:
            self.pipeline.stop()
        else:
            self.notifier.stopping()

    def reload(self) -> None:
        if self._stopping.is_set():
            return
        if self.pipeline is None:
            if not self._reload_pending:
                log.info("SIGHUP while starting: the configuration is re-read once ready")
            self._reload_pending = True
            return
        self.pipeline.request_reload()

    def left_behind(self) -> list[str]:
        """Threads still inside blocking calls (a model load, a wedged inference, an
        abandoned camera reader) that the process must not wait for at exit."""
        busy = self.blocking.busy()
        if self.pipeline is not None:
            busy += ["inference"] * self.pipeline.pool.stuck_threads()
            # an abandoned camera reader still inside FFmpeg: finalising the interpreter
            # under it aborted the process ("FATAL: exception not rethrown", exit -6)
            busy += ["camera reader"] * sum(c.capture.stuck_readers()
                                             for c in self.pipeline.cameras.values())
        return busy

    def _overdue(self) -> None:
        log.error("stop did not finish within %.0f s; exiting with status 1", STOP_DEADLINE_S)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(1)

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._install(loop)
        try:
            return await self._run()
        finally:
            self._uninstall(loop)
            if self._deadline is not None:
                self._deadline.cancel()

    async def _run(self) -> int:
        from edged.daemon.models import load_models

        # A bind or model error propagates to `edged.cli.main`, the one place errors
        # become messages (the same text `edged check` prints); what was opened for the
        # start is closed first.
        cfg = self.config
        cpu = self.cpu or detect_cpu()
        log.info("cpu: %s", cpu.describe())
        for ep in cfg.publish.unencrypted_exposed():
            log.warning("publish: %s is reachable from other machines without CURVE "
                        "(publish.insecure: true): anyone who reaches it reads every "
                        "camera's results", ep)
        if cfg.log.metrics_exposed():
            log.warning("log.metrics: %s serves /metrics without authentication to anyone "
                        "who reaches it (counters and camera names, no results)",
                        cfg.log.metrics)
        stage = make_stage(cfg, self.outputs)
        metrics_sock: socket.socket | None = None
        try:
            # listening before READY too: a metrics port in use ends the start here
            if cfg.log.metrics:
                metrics_sock = bind_metrics(cfg.log.metrics)
            t = time.perf_counter()
            load = asyncio.ensure_future(self.blocking.run(load_models, cfg,
                                                           name="load-model"))
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({load, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not load.done():
                load.cancel()  # the loading thread is a daemon: the process need not wait
                models = None
            else:
                models = load.result()
        except BaseException:
            if metrics_sock is not None:
                metrics_sock.close()
            stage.close(SINK_CLOSE_S)
            raise
        if models is None:
            if metrics_sock is not None:
                metrics_sock.close()
            return await self._stop_before_ready(stage)
        runner = models.rungs[0]
        for r in models.rungs:  # an int8 model validated on another CPU class
            warning = int8_mismatch(r.manifest.quantization, cpu, r.model_id)
            if warning:
                log.warning("%s", warning)
        log.info("model %s (%s) loaded on %s, %d worker(s) x %d thread(s) (%d cores), "
                 "%.1f ms per frame; loaded and warmed up in %.0f ms", runner.model_id,
                 runner.manifest.format, ",".join(runner.providers), models.plan.workers,
                 runner.threads, models.plan.cores, runner.cost_ms or float("nan"),
                 (time.perf_counter() - t) * 1e3)
        pipeline = Pipeline(cfg, models, outputs=self.outputs, frames=self.frames,
                            duration=self.duration,
                            notifier=self.notifier, stage=stage, blocking=self.blocking,
                            metrics_sock=metrics_sock, cpu=cpu)
        self.pipeline = pipeline
        if self._reload_pending:
            pipeline.request_reload()  # applied as soon as the pipeline is ready
        if self._stopping.is_set():
            pipeline.stop()
        return await pipeline.run()

    async def _stop_before_ready(self, stage: PublishStage) -> int:
        """Stopped while the model loaded: every camera that would have run gets its
        end-of-stream, then the sinks close."""
        names = [n for n, c in self.config.cameras.items() if c.enabled]
        # all at once, as the camera loops would: each waits for the sinks on its own
        await asyncio.gather(*(stage.end_of_stream(n, "shutdown") for n in names))
        stage.close(SINK_CLOSE_S)
        log.info("stopped before ready: end of stream published for %d camera(s)",
                 len(names))
        return 0
