"""`edged run` and `edged record`: the daemon (record: with everything recorded)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edged.cli.common import (
    count_arg,
    format_message,
    log,
    positive_float,
    read_config,
    setup_logging,
)

if TYPE_CHECKING:
    from edged.config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("-c", "--config", help="YAML config (default: the packaged default.yaml)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--frames", type=count_arg, help="stop each camera after N processed frames")
    g.add_argument("--duration", type=positive_float, help="stop after S seconds")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.add_argument("--echo", action="store_true",
                   help="also subscribe to the first endpoint and print what arrives")
    r.set_defaults(func=cmd_run)

    rec = sub.add_parser("record", help="run the daemon and record everything to MCAP")
    rec.add_argument("-c", "--config")
    rg = rec.add_mutually_exclusive_group(required=True)
    rg.add_argument("--duration", type=positive_float, help="stop after S seconds")
    rg.add_argument("--frames", type=count_arg, help="stop each camera after N processed frames")
    rec.add_argument("--dir", help="where the files go (default: record.dir of the config, "
                     "else ./recordings)")
    rec.add_argument("--rosbag", metavar="DIR",
                     help="write a rosbag2 bag (MCAP storage) into the new directory DIR, "
                          "for `ros2 bag play`")
    rec.add_argument("--no-frames", action="store_true",
                     help="results only, without the camera images")
    rec.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    rec.set_defaults(func=cmd_run, echo=False)


def cmd_run(args: argparse.Namespace) -> int:
    from edged.daemon.signals import EarlySignals

    # from the first instant: a SIGHUP or SIGTERM during start-up is recorded, not fatal
    early = EarlySignals()
    from edged.daemon.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread: see edged/daemon/memory.py
    from edged.inference.cpu import detect as detect_cpu

    cpu = detect_cpu()  # once: the config's builtin variant and the daemon both use it
    cfg = read_config(args.config, cpu.int8_class)
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
    echo = EchoThread(cfg.publish.endpoints[0]) if args.echo else None
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


class EchoThread:
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


def _recording(cfg: Config, args: argparse.Namespace) -> Config:
    """`edged record`: the config with everything recorded (its record section's limits
    where it has one), into --dir."""
    from edged.outputs.record.settings import RecordConfig

    base = cfg.section(RecordConfig)
    fields: dict[str, object] = {} if base is None else base.model_dump()
    fields.update(trigger="always", dir=Path(args.dir) if args.dir else
                  (base.dir if base is not None else Path("recordings")))
    if args.rosbag:
        fields.update(format="rosbag2", dir=Path(args.rosbag))
    if args.no_frames:
        fields["frames"] = False
    return cfg.model_copy(update={"record": RecordConfig.model_validate(fields)})
