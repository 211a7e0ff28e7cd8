"""Inference workers: how many, the model variants they run, batching, stuck runs.

`InferencePool` owns the worker threads (one single-thread executor each, so a wedged
worker can be replaced without touching the others). Cameras `submit` frames after the
scheduler granted them a slot; a free worker takes every frame that waits (up to
`max_batch`) as one session run, so batches form only when frames queue up anyway and
a lone frame never waits for company.

A run that exceeds its deadline is reported by `stuck()`; `recreate()` abandons that
worker's thread (a thread inside a C call cannot be killed), fails its frames, and
starts a fresh thread with a freshly loaded session. Recreations have a budget; when it
is spent the pool reports a failure and the daemon exits non-zero for systemd to restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edged.errors import UserError
from edged.inference.runner import ModelRunner
from edged.results import Frame, Result

log = logging.getLogger("edged.inference.pool")

RECREATE_BUDGET = 3  # worker recreations allowed within RECREATE_WINDOW_S
RECREATE_WINDOW_S = 600.0


class InferenceStuck(RuntimeError):
    """A frame whose run passed the deadline; its worker was replaced."""


class WorkersExhausted(UserError, RuntimeError):
    """Workers were recreated too often: a fault that restarting a thread does not fix."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    workers: int
    threads: int
    cores: int


def choose_batch(setting: int, per_frame_ms: dict[int, float], budget_ms: float,
                 cameras: int, dynamic: bool = True) -> tuple[int, str]:
    """The largest batch worth running, and why.

    `setting` is `model.batch` (0 = decide from the measurements, 1 = off, N = up to N);
    `per_frame_ms` maps the batch sizes the model could run to the measured time per
    frame (batch 1 only: the batch dimension is fixed, `dynamic` False, or a batch did not
    run). Automatically, a batch must cut
    the time per frame by 10% or more, and a whole batch must fit in half the latency
    budget (it is one frame's inference time).
    """
    if setting == 1:
        return 1, "model.batch is 1"
    if cameras < 2:
        return 1, "one camera"
    if not dynamic:
        return 1, "the model's batch dimension is fixed"
    if len(per_frame_ms) < 2:
        return 1, "a batch of 2 did not run (the 'batching off' line above says why)"
    if setting > 1:
        return setting, f"model.batch is {setting}"
    best, why = 1, "no batch size was 10% faster per frame"
    base = best_ms = per_frame_ms[1]
    for b, ms in sorted(per_frame_ms.items()):
        # a larger batch adds latency: it must beat the smaller one by a margin
        if (2 <= b <= cameras and ms <= 0.9 * base and ms < 0.97 * best_ms
                and ms * b <= budget_ms / 2):
            best, best_ms = b, ms
            why = f"batch {b}: {ms:.2f} ms per frame vs {base:.2f} ms alone"
    return best, why


@dataclass(slots=True)
class Models:
    """What `edged run` loads before it reports ready."""

    rungs: list[ModelRunner]
    plan: WorkerPlan
    max_batch: int
    batch_reason: str


@dataclass(slots=True)
class _Job:
    frames: list[Frame]
    futures: list[asyncio.Future[Result]]
    started: float  # time.monotonic()
    abandoned: bool = False
    finished: bool = False  # its thread came back (even if abandoned)


@dataclass(slots=True)
class _Worker:
    index: int
    executor: ThreadPoolExecutor
    job: _Job | None = None
    generation: int = 0


@dataclass(slots=True)
class PoolStats:
    batches: int = 0
    frames: int = 0
    recreated: int = 0
    largest_batch: int = 0


class InferencePool:
    def __init__(self, rungs: list[ModelRunner], workers: int, max_batch: int = 1) -> None:
        if not rungs:
            raise ValueError("need a model")
        self.rungs = rungs
        self.rung = 0
        self.max_batch = max(1, max_batch)
        self._waiting: deque[tuple[Frame, asyncio.Future[Result]]] = deque()
        self._workers = [self._new_worker(i) for i in range(workers)]
        self._recreations: deque[float] = deque()
        self._abandoned: list[_Job] = []
        self.stats = PoolStats()
        self.failed: str | None = None  # set when the recreation budget is spent

    @staticmethod
    def _new_worker(index: int, generation: int = 0) -> _Worker:
        ex = ThreadPoolExecutor(1, thread_name_prefix=f"infer{index}.{generation}")
        return _Worker(index, ex, generation=generation)

    @property
    def runner(self) -> ModelRunner:
        return self.rungs[self.rung]

    def use_rungs(self, rungs: list[ModelRunner]) -> None:
        """A reloaded model (and ladder): from rung 0; no batches for a fixed batch size."""
        self.rungs = rungs
        self.rung = 0
        if not rungs[0].dynamic_batch:
            self.max_batch = 1

    @property
    def workers(self) -> int:
        return len(self._workers)

    # ------------------------------------------------------------------ running

    def submit(self, frame: Frame) -> asyncio.Future[Result]:
        """Queue a frame (from the event loop); the future gets its result or error."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if self.failed is not None:
            fut.set_exception(WorkersExhausted(self.failed))
            return fut
        self._waiting.append((frame, fut))
        self._dispatch()
        return fut

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            if not self._waiting:
                return
            if worker.job is not None:
                continue
            batch: list[tuple[Frame, asyncio.Future[Result]]] = []
            while self._waiting and len(batch) < self.max_batch:
                item = self._waiting.popleft()
                if not item[1].done():  # the camera may have gone away
                    batch.append(item)
            if not batch:
                continue
            job = _Job([f for f, _ in batch], [f for _, f in batch], time.monotonic())
            worker.job = job
            runner = self.runner
            done = loop.run_in_executor(worker.executor, self._run, runner, job.frames)
            done.add_done_callback(functools.partial(self._finished, worker, job))

    @staticmethod
    def _run(runner: ModelRunner, frames: list[Frame]) -> list[Result]:
        t = time.monotonic_ns()
        results = runner.infer_batch(frames)
        for frame, result in zip(frames, results):
            # the frame's age when its run began: capture, hand-over and scheduling
            result.timings_ms["queue"] = (t - frame.t_mono_ns) / 1e6
        return results

    def _finished(self, worker: _Worker, job: _Job, done: asyncio.Future[list[Result]]) -> None:
        job.finished = True
        if job.abandoned:  # a stuck run came back after its worker was replaced
            if not done.cancelled() and done.exception() is None:
                log.info("an abandoned inference run finished after all; result discarded")
            return
        worker.job = None
        self.stats.batches += 1
        self.stats.frames += len(job.frames)
        self.stats.largest_batch = max(self.stats.largest_batch, len(job.frames))
        exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
        for i, fut in enumerate(job.futures):
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(done.result()[i])
        self._dispatch()

    # ------------------------------------------------------------------ faults

    def stuck(self, deadline_s: float) -> list[tuple[float, int, Frame]]:
        """(seconds running, worker index, first frame) of runs past `deadline_s`."""
        now = time.monotonic()
        out = []
        for w in self._workers:
            job = w.job
            if job is not None and now - job.started > deadline_s:
                out.append((now - job.started, w.index, job.frames[0]))
        return out

    def recreate(self, index: int, reason: str) -> bool:
        """Replace worker `index` (from the event loop). False when the budget is spent."""
        now = time.monotonic()
        while self._recreations and now - self._recreations[0] > RECREATE_WINDOW_S:
            self._recreations.popleft()
        worker = self._workers[index]
        job = worker.job
        if job is not None:
            self._abandon(job, reason)
        worker.executor.shutdown(wait=False)  # its thread finishes (or not) on its own
        if len(self._recreations) >= RECREATE_BUDGET:
            self.failed = (f"inference workers were recreated {RECREATE_BUDGET} times within "
                           f"{RECREATE_WINDOW_S / 60:.0f} min and one is stuck again ({reason})")
            worker.job = job  # stays busy: nothing more runs on it
            while self._waiting:
                _, fut = self._waiting.popleft()
                if not fut.done():
                    fut.set_exception(WorkersExhausted(self.failed))
            return False
        self._recreations.append(now)
        self.stats.recreated += 1
        self._workers[index] = self._new_worker(index, worker.generation + 1)
        self._dispatch()
        return True

    def abandon_all(self, reason: str) -> int:
        """Fail every run in progress (shutting down): their threads are not waited for."""
        busy = [w.job for w in self._workers if w.job is not None and not w.job.abandoned]
        for job in busy:
            self._abandon(job, reason)
        return len(busy)

    def _abandon(self, job: _Job, reason: str) -> None:
        """Give up on a run: its frames fail now; its thread is left to come back or not."""
        job.abandoned = True
        self._abandoned.append(job)
        for fut in job.futures:
            if not fut.done():
                fut.set_exception(InferenceStuck(reason))

    def stuck_threads(self) -> int:
        """Abandoned runs whose threads are still inside the model (they cannot be joined)."""
        self._abandoned = [j for j in self._abandoned if not j.finished]
        return len(self._abandoned)

    def replace_runner(self, rung: int, runner: ModelRunner) -> None:
        self.rungs[rung] = runner

    def shutdown(self) -> None:
        """Wait for runs in progress (not the abandoned or stuck ones) and stop the threads."""
        for w in self._workers:
            stuck = w.job is not None and (w.job.abandoned or self.failed is not None)
            w.executor.shutdown(wait=not stuck)
        for r in self.rungs:
            r.close()


def reload_runner(runner: ModelRunner) -> ModelRunner:
    """A fresh session for the same model and options (a replaced worker's)."""
    fresh = runner.reloaded()
    fresh.model_id = runner.model_id
    fresh.warmup()
    return fresh

