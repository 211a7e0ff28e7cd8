"""`edged echo`: print what the daemon publishes."""

from __future__ import annotations

import argparse
import json
import sys
import time

from edged.cli.common import DEFAULT_ENDPOINT, count_arg, format_message, positive_float
from edged.errors import UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("echo", help="print what the daemon publishes")
    e.add_argument("--connect", default=DEFAULT_ENDPOINT)
    e.add_argument("--camera", action="append", help="only this camera (repeatable)")
    e.add_argument("--count", type=count_arg, help="exit after N results")
    e.add_argument("--timeout", type=positive_float, help="give up after S seconds")
    e.add_argument("--json", action="store_true", help="one JSON object per line")
    e.add_argument("--server-key", metavar="FILE",
                   help="CURVE: the daemon's public key file (NAME.key)")
    e.add_argument("--key", metavar="FILE",
                   help="CURVE: this subscriber's secret key file (NAME.key_secret)")
    e.set_defaults(func=cmd_echo)


def cmd_echo(args: argparse.Namespace) -> int:
    from edged.names import camera_name_problem, parse_endpoint
    from edged.wire.client import Subscriber
    from edged.wire.codec import EndOfStream, Message
    from edged.wire.echo import message_json

    cameras = args.camera or None
    for cam in cameras or ():
        problem = camera_name_problem(cam)
        if problem:
            raise UserError(f"--camera {cam!r}: {problem}")
    try:  # ZeroMQ would wait for tcp://:0 or tcp://host:99999 forever, silently
        parse_endpoint(args.connect)  # the rule of publish.endpoints
    except ValueError as e:
        raise UserError(f"--connect {args.connect!r}: {e}") from None
    n = 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    curve = None
    if args.server_key or args.key:
        from edged.wire.curve import ClientKeys

        if not (args.server_key and args.key):
            raise UserError("CURVE needs both --server-key (the daemon's NAME.key) and "
                            "--key (this subscriber's NAME.key_secret)")
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
                if n == 0:
                    raise UserError(f"no more messages within {args.timeout} s")
                # a count not reached after some results is a notice, not a failure
                print(f"edged echo: no more messages within {args.timeout} s", file=sys.stderr)
                return 0
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
