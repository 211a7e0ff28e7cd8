"""The model, its ladder variants and the worker plan, assembled from the config.

Daemon assembly rather than inference: it reads `Config` (a floor above the stages), so
it lives here and hands `edged.inference.pool` plain values (`Models`, `WorkerPlan`).
"""

from __future__ import annotations

from dataclasses import replace

from edged.config import Config
from edged.daemon.tracking import check_config as check_tracking
from edged.inference.pool import Models, WorkerPlan, choose_batch
from edged.inference.runner import (
    ModelError,
    ModelOptions,
    ModelRunner,
    auto_threads,
    plan_workers,
)


def plan(config: Config, cores: int | None = None) -> WorkerPlan:
    """Workers and threads from `model.workers`/`model.threads` (0 = automatic)."""
    cores = cores or auto_threads()  # the cores this process may use
    cams = [c for c in config.cameras.values() if c.enabled]
    single_rt = len(cams) == 1 and cams[0].resolved_mode() == "realtime"
    w, t = plan_workers(config.model.workers, config.model.threads, cores=cores,
                        cameras=len(cams), single_realtime=single_rt)
    return WorkerPlan(w, t, cores)


# a camera whose config gives no size: the synthetic source's default (the real size of
# a video or a USB camera is known only once it is open)
DEFAULT_FRAME_SIZE = (640, 480)


def warmup_sizes(config: Config) -> list[tuple[int, int]]:
    """(width, height) of the enabled cameras as configured, each size once, first camera
    first; DEFAULT_FRAME_SIZE for a camera that does not say."""
    sizes: list[tuple[int, int]] = []
    for cam in config.cameras.values():
        size = (cam.width or DEFAULT_FRAME_SIZE[0], cam.height or DEFAULT_FRAME_SIZE[1])
        if cam.enabled and size not in sizes:
            sizes.append(size)
    return sizes or [DEFAULT_FRAME_SIZE]


def load_rungs(config: Config, threads: int, warmup: bool = True, *,
               warmup_runs: int | None = None, measure: bool = True) -> list[ModelRunner]:
    """The model and its ladder variants (cheapest last), loaded, warmed up (with
    `warmup`) and, with `measure`, timed.

    The warm-up runs frames of the configured camera sizes (`warmup_sizes`): at least
    one for each size, `warmup_runs` (default model.warmup_runs) for the first. It is
    the test that the model runs at all, so `edged check` (one run, no timing) fails
    where `edged run` would. Raises ModelError naming the variant that failed, and
    TrackingError for a `tracking.classes` name that a variant does not detect.
    """
    base = replace(config.model.runner_options(), threads=threads)
    options = [base]
    if config.model.ladder is not None:
        options += [replace(base, path=v.path) for v in config.model.ladder.variants]
    sizes = warmup_sizes(config)
    runs = max(1, config.model.warmup_runs if warmup_runs is None else warmup_runs)
    rungs = []
    for i, opts in enumerate(options):
        try:
            runner = _runner(config, opts, i)
            if warmup:
                runner.warmup(runs, sizes[0])
                for size in sizes[1:]:
                    runner.warmup(1, size)
        except ModelError as e:
            raise ModelError(f"model.ladder.variants[{i - 1}]: {e}" if i else str(e)) from None
        ladder = config.model.ladder
        if i and ladder is not None and (name := ladder.variants[i - 1].name):
            runner.model_id = name
        if warmup and measure:
            # measured here, side by side, so the ladder knows what each rung costs
            runner.cost_ms = runner.batch_speedup((), runs=5).get(1)
        check_tracking(config, runner.manifest.classes, runner.model_id)
        rungs.append(runner)
    return rungs


def _runner(config: Config, opts: ModelOptions, rung: int) -> ModelRunner:
    """Rung 0 on a Triton server when `model.triton` says so, the rest local."""
    triton = config.model.triton
    if rung or triton is None:
        return ModelRunner(opts)
    from edged.inference.triton.runner import TritonRunner
    cams = [c for c in config.cameras.values() if c.enabled]
    budget = min((c.budget.latency_ms for c in cams), default=config.budget.latency_ms)
    return TritonRunner(opts, triton, triton.timeout_s(budget))


def load_models(config: Config, cores: int | None = None) -> Models:
    """Plan the workers, load the model and its variants, decide on batching."""
    wp = plan(config, cores)
    rungs = load_rungs(config, wp.threads)
    cams = [c for c in config.cameras.values() if c.enabled]
    first = rungs[0]
    if config.model.batch == 1 or not first.dynamic_batch or len(cams) < 2:
        per_frame = {1: first.cost_ms or 0.0}
    else:
        sizes = tuple(b for b in (2, 4, 8) if b <= max(len(cams), config.model.batch))
        per_frame = first.batch_speedup(sizes)
    budget = min(c.budget.latency_ms for c in cams) if cams else float("inf")
    max_batch, why = choose_batch(config.model.batch, per_frame, budget, len(cams),
                                  first.dynamic_batch)
    return Models(rungs, wp, max_batch, why)
