"""`edged` command line: run, check, echo, bench, eval, inspect, quantize."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import time
import typing
from pathlib import Path
from typing import TYPE_CHECKING

from edged.errors import UserError
from edged.inference.providers import PROVIDER_NAMES, provider_chain

# numpy and the rest load inside the commands: importing this module must be quick, since
# `edged run` installs its signal handlers only once it is imported (EarlySignals)
if TYPE_CHECKING:
    from edged.config import Config
    from edged.inference.pool import WorkerPlan
    from edged.inference.runner import ModelRunner
    from edged.wire.codec import Message

log = logging.getLogger("edged")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def _load(path: str | None, int8_class: str | None = None) -> Config:
    """The config; ConfigError is reported by `main` (see `error_message`). Sets OpenCV's
    decoded-image pixel bound from the cameras' max_pixels before any frame is read.
    `int8_class`: the CPU's, when the caller has detected it already."""
    from edged.capture.sources import limit_image_decoding
    from edged.config import load_config

    cfg = load_config(path, int8_class=int8_class)
    limit_image_decoding(max(c.max_pixels for c in cfg.cameras.values()))
    return cfg


# --------------------------------------------------------------------------- errors
# Every command's errors end up here, through `main`: bad config, model, bind or
# environment gets one clear message and exit 1, never a traceback. Every such error
# derives from `edged.errors.UserError` (standard library only: reporting an error never
# imports onnxruntime or zmq).

def _leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, e.g. from an asyncio.TaskGroup."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def error_message(e: BaseException) -> str | None:
    """The message for an error a user can fix (config, model, address, file), or None
    for anything else (a bug)."""
    if isinstance(e, UserError):
        return f"{e.prefix}{e}"
    if isinstance(e, OSError):
        return str(e) if not e.filename else f"{e.strerror or e}: {e.filename}"
    return None


def report_error(command: str, e: BaseException, *, logged: bool = False) -> int:
    """Report `e` (what a command raised) without a traceback; the exit code (1).

    With `logged` (`run` once its logging is set up) one ERROR line per error goes to
    the log (the journal); every other case prints `edged COMMAND: message` to stderr.
    An unexpected error is named as one; EDGED_TRACEBACK=1 adds its traceback for a bug
    report.
    """
    lines: list[str] = []
    unexpected = False
    for leaf in _leaves(e):
        msg = error_message(leaf)
        if msg is None:
            unexpected = True
            msg = (f"internal error: {type(leaf).__name__}: {leaf} "
                   "(set EDGED_TRACEBACK=1 to see where)")
        if msg not in lines:
            lines.append(msg)
    for msg in lines:
        if logged:
            log.error("%s", msg)
        else:
            print(f"edged {command}: {msg}", file=sys.stderr)
    if unexpected and os.environ.get("EDGED_TRACEBACK"):
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- arguments
# argparse's `type=` for numbers: a nan, inf, negative or zero count or duration is a
# mistake, refused at parse time (argparse's one "error:" line and exit 2).

def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    # quantize's gates: above 1 is allowed, a gate nothing passes (tests use one)
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text!r}")
    return value


def _int_at_least(low: int, high: int | None = None) -> typing.Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {text!r}")
        return value
    return parse


_count = _int_at_least(1)
# repeated work (timed runs, scenes): a bound so a typo cannot run for days
_runs = _int_at_least(1, 100_000)
# frames held in memory at once (quantize: ~1 MB each at 640x480)
_held_frames = _int_at_least(1, 4096)
_nonneg = _int_at_least(0)
# synth-video: the same bound as a synthetic camera's width/height (config.MAX_SIDE)
_side = _int_at_least(16, 8192)


def cmd_run(args: argparse.Namespace) -> int:
    from edged.daemon.signals import EarlySignals

    # from the first instant: a SIGHUP or SIGTERM during start-up is recorded, not fatal
    early = EarlySignals()
    from edged.daemon.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread: see edged/daemon/memory.py
    from edged.inference.cpu import detect as detect_cpu

    cpu = detect_cpu()  # once: the config's builtin variant and the daemon both use it
    cfg = _load(args.config, cpu.int8_class)
    if args.command == "record":
        cfg = _recording(cfg, args)
    setup_logging(args.log_level or cfg.log.level)
    args.errors_to_log = True  # from here on `main` reports errors as log lines
    import cv2

    from edged.daemon.lifecycle import Daemon
    from edged.daemon.notify import Notifier

    cv2.setNumThreads(1)  # OpenCV must not fight ONNX Runtime for the cores
    log.info("configuration %s", cfg.source_file or "built-in default")
    from edged.app import OUTPUTS

    daemon = Daemon(cfg, outputs=OUTPUTS, frames=args.frames, duration=args.duration,
                    notifier=Notifier(), early=early, cpu=cpu)
    echo = _EchoThread(cfg.publish.endpoints[0]) if args.echo else None
    try:
        if echo is not None:
            echo.start()
        code = asyncio.run(daemon.run())
    finally:
        if echo is not None:
            echo.stop()
    left = daemon.left_behind()
    if left:
        # Python joins every worker thread at exit, and one inside onnxruntime (a wedged
        # model, a load a stop did not wait for) never returns or aborts the interpreter
        # as it finalises. Everything is published and closed by now: leave without them.
        stuck = left.count("inference")
        if stuck:
            log.error("exiting with %d inference thread(s) still stuck in the model", stuck)
        others = [n for n in left if n != "inference"]
        if others:
            log.info("exiting without waiting for %s", ", ".join(others))
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


class _EchoThread:
    """`run --echo`: a real subscriber on the daemon's own endpoint, printing what arrives
    (at most two lines a second per camera), so one command shows the whole path working."""

    def __init__(self, endpoint: str) -> None:
        import threading

        self.endpoint = endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        from edged.wire.client import Subscriber
        from edged.wire.codec import Message

        last: dict[str, float] = {}
        with Subscriber(self.endpoint) as sub:
            while not self._stop.is_set():
                msg = sub.recv(timeout=0.2)
                if not isinstance(msg, Message):  # nothing, or an end-of-stream
                    continue
                now = time.monotonic()
                if now - last.get(msg.camera, 0.0) < 0.5:
                    continue
                last[msg.camera] = now
                print(format_message(msg), flush=True)


def mask_summary(msg: Message) -> str:
    if msg.mask is None:
        return "-"
    import numpy as np

    counts = np.bincount(msg.mask.ravel(), minlength=len(msg.mask_classes))
    total = max(int(counts.sum()), 1)
    return " ".join(f"{msg.mask_classes[i] if i < len(msg.mask_classes) else i} "
                    f"{100 * c / total:.0f}%" for i, c in enumerate(counts) if c)


def format_message(msg: Message) -> str:
    from edged.wire.echo import detection_text

    dets = detection_text(msg)
    flags = f" [{','.join(msg.flags)}]" if msg.flags else ""
    return (f"{msg.camera} #{msg.seq:<5d} e2e {msg.latency_ms:5.1f} ms  "
            f"inference {msg.timings_ms.get('inference', float('nan')):5.1f} ms  "
            f"dets: {dets}  mask: {mask_summary(msg)}  [{msg.model}]{flags}")


def _recording(cfg: Config, args: argparse.Namespace) -> Config:
    """`edged record`: the config with everything recorded (its record section's limits
    where it has one), into --dir."""
    from edged.config import RecordConfig

    base = cfg.record
    fields: dict[str, object] = {} if base is None else base.model_dump()
    fields.update(trigger="always", dir=Path(args.dir) if args.dir else
                  (base.dir if base is not None else Path("recordings")))
    if args.rosbag:
        fields.update(format="rosbag2", dir=Path(args.rosbag))
    if args.no_frames:
        fields["frames"] = False
    return cfg.model_copy(update={"record": RecordConfig.model_validate(fields)})


def cmd_replay(args: argparse.Namespace) -> int:
    setup_logging(args.log_level or "info")
    from edged.outputs.record import require_record

    require_record()
    from edged.outputs.record.replay import replay

    replay(Path(args.file), args.endpoint, speed=args.speed)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 1 exactly when `edged run` would fail to start: the config, the model and
    every ladder variant (loaded, one warm-up inference at each configured camera size),
    and every address run binds (publish endpoints, log.metrics, view.listen), bound and
    released."""
    from edged.inference.cpu import detect as detect_cpu
    from edged.inference.cpu import int8_mismatch

    cpu = detect_cpu()
    cfg = _load(args.config, cpu.int8_class)
    setup_logging("warning")
    from edged.daemon.models import load_rungs, plan, warmup_sizes

    redact = cfg.redactor()
    print(f"config: {cfg.source_file or 'built-in default'}: OK")
    print(f"cpu: {cpu.describe()}")
    for name, cam in cfg.cameras.items():
        state = "" if cam.enabled else " (disabled)"
        print(f"camera {name}: {cam.resolved_type()} {redact(cam.source)!r}, "
              f"mode {cam.resolved_mode()}{state}")
    failed = 0
    wp = plan(cfg)
    sizes = ", ".join(f"{w}x{h}" for w, h in warmup_sizes(cfg))
    try:  # the model and every ladder variant, with the threads edged would give them
        rungs = load_rungs(cfg, wp.threads, warmup_runs=1, measure=False)
    except Exception as e:  # reported like run's; the addresses are still checked
        failed = report_error("check", e)
    else:
        _print_model(cfg, rungs, wp, sizes)
        for r in rungs:
            warning = int8_mismatch(r.manifest.quantization, cpu, r.model_id)
            if warning:
                print(f"  warning: {warning}")
    try:
        _try_binds(cfg)
    except Exception as e:
        failed = report_error("check", e)
    return failed


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
    """Bind what `edged run` binds, all at once (so that two of them clashing shows
    too), and release it: PublishError or ListenError when one cannot be bound."""
    from edged.app import OUTPUTS
    from edged.daemon.metrics import bind as bind_metrics
    from edged.daemon.pipeline import make_publisher
    from edged.wire.publisher import release_ipc

    held: list[socket.socket] = []
    try:
        # the publisher's own context: closing it waits until every socket is closed
        with make_publisher(cfg, linger_ms=0) as pub:
            for ep in cfg.publish.endpoints:
                print(f"publish: {ep}: bound OK")
            for ep in cfg.publish.unencrypted_exposed():
                print(f"publish: warning: {ep} is reachable from other machines without "
                      f"CURVE (publish.insecure: true)")
            if pub.curve is not None:
                print(f"publish: CURVE on: {len(pub.curve.admitted)} client key(s) admitted "
                      f"from {pub.curve.keys.clients_dir}")
            if cfg.log.metrics:
                held.append(bind_metrics(cfg.log.metrics))
                print(f"metrics: {cfg.log.metrics}: bound OK")
                if cfg.log.metrics_exposed():
                    print(f"metrics: warning: {cfg.log.metrics} is reachable from other "
                          "machines without authentication")
            for output in OUTPUTS:
                if output.configured(cfg):
                    output.require(cfg)
                    print(output.check(cfg, held))
    finally:
        for sock in held:
            sock.close()
        for ep in cfg.publish.endpoints:
            release_ipc(ep)


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


def cmd_keygen(args: argparse.Namespace) -> int:
    from edged.wire.curve import CurveError, keygen

    try:
        public, secret = keygen(args.name, Path(args.dir))
    except CurveError as e:
        return report_error("keygen", e)
    print(f"wrote {public} (public: give it to the other side) and {secret} (secret, mode "
          f"600: keep it here)")
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from edged.names import ENDPOINT_SCHEMES, camera_name_problem, parse_host_port
    from edged.wire.client import Subscriber
    from edged.wire.codec import EndOfStream, Message
    from edged.wire.echo import message_json

    cameras = args.camera or None
    for cam in cameras or ():
        problem = camera_name_problem(cam)
        if problem:
            raise UserError(f"--camera {cam!r}: {problem}")
    scheme, sep, rest = args.connect.partition("://")
    if not sep or scheme not in ENDPOINT_SCHEMES or not rest:
        raise UserError(f"--connect {args.connect!r}: a ZeroMQ endpoint is tcp://HOST:PORT, "
                        "ipc://PATH or inproc://NAME")
    if scheme == "tcp":
        try:  # ZeroMQ would wait for tcp://:0 or tcp://host:99999 forever, silently
            parse_host_port(rest)
        except ValueError as e:
            raise UserError(f"--connect {args.connect!r}: {e}") from None
    n = 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    curve = None
    if args.server_key or args.key:
        from edged.wire.curve import ClientKeys

        if not (args.server_key and args.key):
            raise SystemExit("edged echo: CURVE needs both --server-key (the daemon's "
                             "NAME.key) and --key (this subscriber's NAME.key_secret)")
        curve = ClientKeys.from_files(args.server_key, args.key)
    import zmq

    try:
        sub = Subscriber(args.connect, cameras, curve=curve)
    except zmq.ZMQError as e:  # e.g. tcp://nohost:5555, a host that does not resolve
        raise UserError(f"--connect {args.connect!r}: {e}") from None
    with sub:
        while args.count is None or n < args.count:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                print(f"edged echo: no more messages within {args.timeout} s", file=sys.stderr)
                return 1 if n == 0 else 0
            msg = sub.recv(timeout=min(left, 0.5) if left is not None else 0.5)
            if msg is None:
                continue
            if isinstance(msg, EndOfStream):
                line = {"camera": msg.camera, "eos": True, "last_seq": msg.last_seq,
                        "reason": msg.reason}
                print(json.dumps(line) if args.json else
                      f"{msg.camera} end of stream after seq {msg.last_seq} ({msg.reason})",
                      flush=True)
                if cameras and set(cameras) <= sub.ended:
                    break
                continue
            if not isinstance(msg, Message):  # this subscriber asks for results only
                continue
            n += 1
            if not args.json:
                print(format_message(msg), flush=True)
            else:
                print(json.dumps(message_json(msg)), flush=True)
        if sub.gaps:
            print(f"edged echo: {sub.gaps} frame(s) missing in sequence numbers", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    setup_logging("warning")
    import cv2

    from edged.daemon.models import load_models
    from edged.tools.bench import bench, format_report

    cv2.setNumThreads(1)
    if args.also and not args.providers:
        print("edged bench: --also compares models across providers: it needs --providers",
              file=sys.stderr)
        return 2
    if args.providers:
        from edged.tools.bench import format_providers, provider_comparison

        rows = provider_comparison(cfg, args.runs, tuple(Path(m) for m in args.also))
        from edged.inference.cpu import detect as detect_cpu

        print(json.dumps({"machine": {"cpu_info": detect_cpu().to_json()}, "providers": rows},
                         indent=2) if args.json
              else format_providers(rows, args.runs))
        return 0
    models = load_models(cfg)
    if args.sinks:
        from edged.outputs.foxglove import require_foxglove
        from edged.outputs.record import require_record
        from edged.outputs.view import require_aiohttp

        require_aiohttp()
        require_foxglove()
        require_record()
    report = bench(cfg, models, args.frames, with_sinks=args.sinks)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_synth_video(args: argparse.Namespace) -> int:
    from edged.tools.bench import write_synthetic_video

    out = Path(args.out)
    if out.suffix.lower() != ".avi":
        # OpenCV picks the container by extension; MJPG goes into AVI, and for a name
        # without one it raises its own assertion instead of saying so
        raise UserError(f"{out}: the output must be an .avi file (MJPG in AVI)")
    try:  # our own open says why (no such directory, permission), OpenCV's does not
        with open(out, "ab"):
            pass
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    write_synthetic_video(Path(args.out), args.frames, args.seed, args.width, args.height)
    print(f"wrote {args.frames} frames to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    setup_logging("warning")
    import onnxruntime as ort

    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.tools.evaluate import evaluate

    runner = ModelRunner(ModelOptions(path=Path(args.model), threads=args.threads,
                                      conf_threshold=args.conf,
                                      providers=provider_chain(args.provider, args.threads)))
    # an accuracy figure for a provider must come from that provider, not a fallback
    want = PROVIDER_NAMES[args.provider]
    if runner.active_provider != want:
        print(f"edged eval: --provider {args.provider}: onnxruntime did not take "
              f"{want} (session: {', '.join(runner.providers) or 'none'}; this build offers "
              f"{', '.join(ort.get_available_providers())})", file=sys.stderr)
        return 1
    runner.warmup(2)

    def progress(i: int, n: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{i}/{n} scenes", end="" if i < n else "\n", file=sys.stderr, flush=True)

    res = evaluate(runner, args.scenes, args.seed, progress=progress)
    res["model"] = str(args.model)
    res["provider"] = runner.active_provider
    res["placement"] = runner.placement_summary
    res["conf_threshold"] = runner.manifest.conf_threshold
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{args.model}: {res['scenes']} scenes from seed {res['seed']}")
        print(f"  segmentation mIoU {res['miou']:.4f}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in res["iou"].items()))
        print(f"  detection mAP@0.5 {res['map50']:.4f}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in res["ap50"].items()))
        print(f"  inference p50 {res['inference_ms_p50']:.2f} ms ({runner.threads} thread(s))")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    setup_logging("warning")
    from edged.tools.inspection import (
        inspect_model,
        render_report,
        write_manifest,
    )

    info = inspect_model(Path(args.model), args.format, runs=args.runs)
    if args.write_manifest:
        # from the graph even when the existing manifest is what failed; then show
        # what edged makes of the model with the new file
        wrote = write_manifest(info, args.format, force=args.force)
        info = inspect_model(Path(args.model), args.format, runs=args.runs)
        info["wrote"] = str(wrote)
    print(json.dumps(info, indent=2) if args.json else render_report(info))
    return 0 if info["error"] is None else 1


def cmd_quantize(args: argparse.Namespace) -> int:
    setup_logging("warning")
    try:
        import onnx  # noqa: F401  (onnxruntime.quantization needs it; the daemon does not)
    except ImportError:
        print("edged quantize: the onnx package is missing: pip install 'edged[quantize]'",
              file=sys.stderr)
        return 2
    import cv2

    from edged.tools.quantize import (
        Gate,
        Progress,
        frames_for,
        iter_lines,
        run_search,
    )

    cv2.setNumThreads(1)
    config = None
    if args.config:
        config = _load(args.config)
    model = Path(args.model)
    if not model.is_file():
        raise UserError(f"model file not found: {model}")
    progress = Progress()
    frames = frames_for(args.frames, config, args.count, args.holdout)
    report = run_search(
        model, Path(args.out), frames, search=args.search, keep_float=args.keep_float or (),
        default_keep=not args.no_keep_float,
        gate=Gate(args.min_agreement, args.max_miou_drop, args.min_det_agreement),
        runs=args.runs, for_class=args.for_class,
        use_truth=not args.no_truth, progress=progress,
        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.table())
    for line in iter_lines(report):
        print(line)
    if report.chosen is None:
        print("edged quantize: no candidate meets the accuracy gate (pixel agreement >= "
              f"{100 * args.min_agreement:g}%, mIoU drop <= {100 * args.max_miou_drop:g} "
              "point(s)); try --search full, more --count, or --keep-float for the layers "
              "that disagree", file=sys.stderr)
        return 3
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edged", description="Streaming edge-inference daemon.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("-c", "--config", help="YAML config (default: the packaged default.yaml)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--frames", type=_count, help="stop each camera after N processed frames")
    g.add_argument("--duration", type=_positive_float, help="stop after S seconds")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.add_argument("--echo", action="store_true",
                   help="also subscribe to the first endpoint and print what arrives")
    r.set_defaults(func=cmd_run)

    rec = sub.add_parser("record", help="run the daemon and record everything to MCAP")
    rec.add_argument("-c", "--config")
    rg = rec.add_mutually_exclusive_group(required=True)
    rg.add_argument("--duration", type=_positive_float, help="stop after S seconds")
    rg.add_argument("--frames", type=_count, help="stop each camera after N processed frames")
    rec.add_argument("--dir", help="where the files go (default: record.dir of the config, "
                     "else ./recordings)")
    rec.add_argument("--rosbag", metavar="DIR",
                     help="write a rosbag2 bag (MCAP storage) into the new directory DIR, "
                          "for `ros2 bag play`")
    rec.add_argument("--no-frames", action="store_true",
                     help="results only, without the camera images")
    rec.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    rec.set_defaults(func=cmd_run, echo=False)

    rp = sub.add_parser("replay", help="publish a recording on ZeroMQ with its timing")
    rp.add_argument("file", help="an .mcap file written by edged")
    rp.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="where to publish (bound)")
    rp.add_argument("--speed", type=_positive_float, default=1.0, help="2 = twice as fast")
    rp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    rp.set_defaults(func=cmd_replay)

    c = sub.add_parser("check", help="validate the config and the model, exit 0 or 1")
    c.add_argument("-c", "--config")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("echo", help="print what the daemon publishes")
    e.add_argument("--connect", default=DEFAULT_ENDPOINT)
    e.add_argument("--camera", action="append", help="only this camera (repeatable)")
    e.add_argument("--count", type=_count, help="exit after N results")
    e.add_argument("--timeout", type=_positive_float, help="give up after S seconds")
    e.add_argument("--json", action="store_true", help="one JSON object per line")
    e.add_argument("--server-key", metavar="FILE",
                   help="CURVE: the daemon's public key file (NAME.key)")
    e.add_argument("--key", metavar="FILE",
                   help="CURVE: this subscriber's secret key file (NAME.key_secret)")
    e.set_defaults(func=cmd_echo)

    k = sub.add_parser("keygen", help="write a CURVE key pair (NAME.key, NAME.key_secret)")
    k.add_argument("name")
    k.add_argument("--dir", default=".", help="where to write them (created 0700)")
    k.set_defaults(func=cmd_keygen)

    b = sub.add_parser("bench", help="the pipeline vs a raw ONNX Runtime loop and a serial loop")
    b.add_argument("-c", "--config")
    b.add_argument("--frames", type=_count, default=300,
                   help="frames per loop; with several cameras, at least N results per "
                        "camera while all of them run (so shares always have a window)")
    b.add_argument("--sinks", action="store_true",
                   help="also run the pipeline with each output on (live view, Foxglove, "
                        "recorder), without and with a consumer, and report each")
    b.add_argument("--providers", action="store_true",
                   help="instead: the model on every execution provider this onnxruntime "
                        "offers (CPU, OpenVINO, CUDA, TensorRT), taking turns run by run; "
                        "p50 ms, ratio to the CPU EP, node placement")
    b.add_argument("--runs", type=_runs, default=100, help="runs per provider (--providers)")
    b.add_argument("--also", nargs="+", default=[], metavar="MODEL",
                   help="with --providers: these model files too, every session taking "
                        "turns, each row also compared with the config's model on the CPU EP")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    sv = sub.add_parser("synth-video", help="write a video of synthetic scenes (for replay)")
    sv.add_argument("out")
    sv.add_argument("--frames", type=_count, default=300)
    sv.add_argument("--seed", type=_nonneg, default=0)
    sv.add_argument("--width", type=_side, default=640)
    sv.add_argument("--height", type=_side, default=480)
    sv.set_defaults(func=cmd_synth_video)

    v = sub.add_parser("eval", help="accuracy on fresh synthetic scenes")
    v.add_argument("--model", required=True)
    v.add_argument("--scenes", type=_runs, default=500)
    v.add_argument("--seed", type=_nonneg, default=1_000_000,
                   help="first sequence seed (training uses seeds below 1000000)")
    v.add_argument("--conf", type=_fraction, default=0.05,
                   help="score threshold for AP (low, so the whole PR curve is measured)")
    v.add_argument("--threads", type=_int_at_least(1, 256), default=1)
    v.add_argument("--provider", choices=sorted(PROVIDER_NAMES), default="cpu",
                   help="execution provider to score (it must take the model: no fallback)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_eval)

    n = sub.add_parser("inspect", help="show a model's tensors, recognised format, manifest "
                                       "and latency")
    n.add_argument("model", help="ONNX file")
    n.add_argument("--format", default="auto",
                   help="take the model as this format instead of recognising it")
    n.add_argument("--write-manifest", action="store_true",
                   help="write the manifest derived from the graph to <model>.json")
    n.add_argument("--force", action="store_true", help="let --write-manifest overwrite")
    n.add_argument("--runs", type=_runs, default=10, help="timed runs for the latency estimate")
    n.add_argument("--json", action="store_true", help="one JSON object instead of text")
    n.set_defaults(func=cmd_inspect)

    q = sub.add_parser(
        "quantize", help="static int8 (QDQ) with an accuracy gate against the fp32 model",
        description="Quantize MODEL to int8: calibrate on frames through the model's own "
                    "pre-processing, try the type/calibration candidates of --search, check "
                    "each on held-out frames against the fp32 model, refine the fastest "
                    "passing one (mask conv int8, input conv float, NhwcTransformer off: "
                    "each step kept if it passes and is >= 2% faster than its parent in "
                    "the same runs), and write it with its manifest (OUT.json). Frames: -c (the "
                    "configured cameras), --frames (image folder or video), or by default "
                    "synthetic RoboCup scenes, which also give ground truth. Exit 0: written; "
                    "1: error; 2: the onnx package is missing; 3: no candidate passed.")
    q.add_argument("model", help="fp32 ONNX file (its manifest beside it, if any, is used)")
    q.add_argument("-o", "--out", required=True, help="int8 ONNX file to write")
    src = q.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", help="calibrate on the cameras of this config")
    src.add_argument("--frames", metavar="DIR|VIDEO", help="a folder of images or a video")
    q.add_argument("--count", type=_held_frames, default=128,
                   help="calibration frames (default 128)")
    q.add_argument("--holdout", type=_held_frames, default=32,
                   help="held-out frames for the accuracy gate (default 32)")
    q.add_argument("--search", choices=["quick", "full"], default="quick",
                   help="quick: U8S8 and S8S8 with MinMax, U8S8 with Percentile; full: both "
                        "type pairs x MinMax, Percentile, Entropy")
    q.add_argument("--keep-float", nargs="+", metavar="NODE",
                   help="also keep these nodes in float (names as in the prepared graph)")
    q.add_argument("--no-keep-float", action="store_true",
                   help="do not keep the final convolutions and output tails in float")
    q.add_argument("--min-agreement", type=_nonneg_float, default=0.98,
                   help="gate: mask pixel agreement with fp32 (default 0.98)")
    q.add_argument("--max-miou-drop", type=_nonneg_float, default=0.01,
                   help="gate: mIoU drop vs fp32, as a fraction (default 0.01 = 1 point); "
                        "against ground truth when the frames have it, else 1 - mIoU(int8 "
                        "vs fp32)")
    q.add_argument("--min-det-agreement", type=_nonneg_float, default=0.9,
                   help="gate: share of boxes matched between int8 and fp32 (IoU >= 0.5, "
                        "same class; default 0.9); skipped when neither finds boxes")
    q.add_argument("--no-truth", action="store_true",
                   help="ignore synthetic ground truth (e.g. for a model with random weights)")
    q.add_argument("--for-class", metavar="CLASS",
                   help="make the model for a CPU of this int8 class (e.g. x86-avx2 from a "
                        "VNNI machine): only candidates both CPUs compute the same integers "
                        "of are tried (7-bit or unsigned weights), and the manifest records "
                        "valid_for; speed is still measured here")
    q.add_argument("--runs", type=_runs, default=20,
                   help="timed single-thread runs per candidate, alternating with fp32")
    q.set_defaults(func=cmd_quantize)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the one place errors become messages (report_error)
        return report_error(args.command, e, logged=getattr(args, "errors_to_log", False))


if __name__ == "__main__":
    sys.exit(main())
