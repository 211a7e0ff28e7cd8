"""`edged check`: exit 1 exactly when `edged run` would fail to start."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edged.cli.common import read_config, setup_logging

if TYPE_CHECKING:
    from edged.config import Config
    from edged.inference.pool import WorkerPlan
    from edged.inference.runner import ModelRunner


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("check", help="validate the config and the model, exit 0 or 1")
    c.add_argument("-c", "--config")
    c.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 1 exactly when `edged run` would fail to start: the config, the model and
    every ladder variant (loaded, one warm-up inference at each configured camera size),
    and every address run binds (publish endpoints, log.metrics, view.listen), bound and
    released."""
    from edged.inference.cpu import detect as detect_cpu
    from edged.inference.cpu import int8_mismatch

    cpu = detect_cpu()
    cfg = read_config(args.config, cpu.int8_class)
    setup_logging("warning")
    from edged.daemon.models import load_rungs, plan, warmup_sizes
    from edged.inference.triton.runner import TritonRunner

    redact = cfg.redactor()
    print(f"config: {cfg.source_file or 'built-in default'}: OK")
    print(f"cpu: {cpu.describe()}")
    for name, cam in cfg.cameras.items():
        state = "" if cam.enabled else " (disabled)"
        print(f"camera {name}: {cam.resolved_type()} {redact(cam.source)!r}, "
              f"mode {cam.resolved_mode()}{state}")
    # the model's error does not stop the addresses' check: `main` reports each
    failed: list[Exception] = []
    wp = plan(cfg)
    sizes = ", ".join(f"{w}x{h}" for w, h in warmup_sizes(cfg))
    try:  # the model and every ladder variant, with the threads edged would give them
        rungs = load_rungs(cfg, wp.threads, warmup_runs=1, measure=False)
    except Exception as e:
        failed.append(e)
    else:
        _print_model(cfg, rungs, wp, sizes)
        for r in rungs:
            warning = int8_mismatch(r.manifest.quantization, cpu, r.model_id)
            if warning:
                print(f"  warning: {warning}")
        try:  # the inference server, when the model runs on one
            for line in (r.check() for r in rungs if isinstance(r, TritonRunner)):
                print(line)
        except Exception as e:
            failed.append(e)
    try:
        _try_binds(cfg)
    except Exception as e:
        failed.append(e)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise ExceptionGroup("edged check", failed)
    return 0


def _print_model(cfg: Config, rungs: list[ModelRunner], wp: WorkerPlan, sizes: str) -> None:
    d = rungs[0].describe()
    print(f"model: {d['path']}: OK\n  format {d['format']} ({d['why']})\n  input {d['input']}"
          f"\n  classes {', '.join(d['classes'])}; segmentation {', '.join(d['seg_classes'])}"
          f"\n  {d['threads']} thread(s); warm-up inference at {sizes}: OK")
    if d["disabled_optimizers"]:
        print(f"  onnxruntime optimizers off (the manifest's session settings): "
              f"{', '.join(d['disabled_optimizers'])}")
    print(format_provider_report(d["providers"]))
    print(f"  plan: {wp.workers} inference worker(s) x {wp.threads} thread(s) on {wp.cores} "
          f"core(s) (model.workers {cfg.model.workers or 'auto'}, model.threads "
          f"{cfg.model.threads or 'auto'})")
    for i, r in enumerate(rungs[1:], 1):
        print(f"  ladder rung {i}: {r.model_id} ({r.options.path}, input "
              f"{r.describe()['input']}): OK")


def _try_binds(cfg: Config) -> None:
    """Bind what `edged run` binds, in its order and all at once (so that two of them
    clashing shows too), and release it: each output's check (the ZeroMQ output's
    publish endpoints first), then log.metrics; PublishError or ListenError when one
    cannot be bound."""
    from edged.app import OUTPUTS
    from edged.daemon.metrics import bind as bind_metrics
    from edged.outputs.base.output import Held

    held: list[Held] = []
    try:
        for output in OUTPUTS:
            section = output.section(cfg)
            if section is not None:
                output.require(cfg, section)
                print(output.check(cfg, section, held))
        if cfg.log.metrics:
            held.append(bind_metrics(cfg.log.metrics))
            print(f"metrics: {cfg.log.metrics}: bound OK")
            if cfg.log.metrics_exposed():
                print(f"metrics: warning: {cfg.log.metrics} is reachable from other "
                      "machines without authentication")
    finally:
        for h in held:
            h.close()


def format_provider_report(p: dict) -> str:
    """`edged check`'s provider lines: what was asked, what exists, what runs where."""
    def opts(o: dict) -> str:
        return f" {{{', '.join(f'{k}={v}' for k, v in o.items())}}}" if o else ""

    lines = ["  providers:",
             f"    requested  {', '.join(p['requested'])}",
             f"    available  {', '.join(p['available'])} (this onnxruntime build)"]
    if p["missing"]:
        lines.append(f"    missing    {', '.join(p['missing'])} (skipped, next one used)")
    lines.append("    chosen     " + " > ".join(c["name"] + opts(c["options"])
                                             for c in p["chosen"]))
    lines.append(f"    session    {', '.join(p['session'])}")
    lines.append(f"    nodes      {p['summary']}")
    if p.get("io_binding"):
        lines.append(f"    io         IOBinding, outputs on {p['io_binding']}")
    return "\n".join(lines)
