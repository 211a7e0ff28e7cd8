"""The ZeroMQ publisher as an output (`publish:` in the config): the wire protocol's PUB
socket (`edged.wire`). It is `Publishing`: its counts are the stats' published counts,
the cameras wait for its subscribers, and a SIGHUP reloads its CURVE keys."""

from __future__ import annotations

import logging
import time

from edged.config import Config, PublishConfig
from edged.outputs.base.output import Held, Output
from edged.outputs.base.sink import DEFAULT_QUEUE, Outcome, Sink
from edged.telemetry import ControlEvent, StreamEnded
from edged.wire.curve import ServerKeys, server_keys
from edged.wire.publisher import Publisher, release_ipc
from edged.wire.telemetry import encode_event

log = logging.getLogger("edged.outputs.zmq")


class ZmqSink(Sink):
    """The ZeroMQ publisher as a sink: the socket lives on this sink's thread only.

    Results arrive encoded (the publish stage stamps them once, for every sink); the
    daemon's events are encoded here. It counts what it has handed to ZeroMQ per camera.
    `wait_for`: subscriptions the cameras wait for, at most `wait_timeout_s`.
    """

    name = "zmq"

    def __init__(self, publisher: Publisher, *, wait_for: int = 0,
                 wait_timeout_s: float = 30.0) -> None:
        self.publisher = publisher
        self.published: dict[str, int] = {}  # written by this sink's thread only
        self.send_ms: dict[str, float] = {}  # the latest send time per camera
        self.wait_for = wait_for
        self.wait_timeout_s = wait_timeout_s

    def deliver(self, outcome: Outcome) -> None:
        t0 = time.perf_counter()
        cam = outcome.result.camera
        if self.publisher.send(list(outcome.wire)):
            self.published[cam] = self.published.get(cam, 0) + 1
        self.send_ms[cam] = (time.perf_counter() - t0) * 1e3

    def control(self, event: ControlEvent) -> None:
        frames = encode_event(event)
        if frames is not None:
            self.publisher.send(frames)

    def end_of_stream(self, eos: StreamEnded) -> None:
        self.publisher.send(encode_event(eos))

    def close(self) -> None:
        self.publisher.close()

    def wait_for_subscribers(self) -> None:
        """publish.wait_for_subscribers: hold the cameras until that many subscriptions
        have arrived."""
        n, timeout = self.wait_for, self.wait_timeout_s
        if not n:
            return
        log.info("waiting for %d subscription(s) before the cameras start "
                 "(publish.wait_for_subscribers, at most %.0f s)", n, timeout)
        have = self.publisher.wait_for_subscriptions(n, timeout)
        if have >= n:
            log.info("%d subscription(s) in place: starting the cameras", have)
        else:
            log.warning("only %d of %d subscription(s) within %.0f s: starting the cameras "
                        "anyway", have, n, timeout)

    def reload(self) -> list[str]:
        """Lift the publisher's refusals and re-read publish.curve.clients_dir: added keys
        are admitted at their next handshake; a removed one rebinds."""
        return self.publisher.reload()


def curve_keys(config: Config) -> ServerKeys | None:
    """The daemon's CURVE keys when `publish.curve` is set (CurveError names a bad file)."""
    c = config.publish.curve
    return None if c is None else server_keys(c.secret_key_file, c.clients_dir)


def make_publisher(config: Config, *, cameras: int = 0, linger_ms: int = 500) -> Publisher:
    """The publish socket as `publish` configures it (bound; PublishError, CurveError),
    for `edged run` and for `edged check`'s bind test alike."""
    pc = config.publish
    return Publisher(pc.endpoints, sndhwm=pc.sndhwm, cameras=cameras, linger_ms=linger_ms,
                     curve=curve_keys(config), ipc_mode=pc.ipc_mode_bits,
                     ipc_group=pc.ipc_group)


def _check(config: Config, pc: PublishConfig, held: list[Held]) -> str:
    try:
        pub = make_publisher(config, linger_ms=0)
    except BaseException:
        for ep in pc.endpoints:  # what a bind that failed half-way left (none is live)
            release_ipc(ep)
        raise
    # held open until every output is tried; closing it releases its ipc files too
    held.append(pub)
    lines = [f"publish: {ep}: bound OK" for ep in pc.endpoints]
    lines += [f"publish: warning: {ep} is reachable from other machines without CURVE "
              f"(publish.insecure: true)" for ep in pc.unencrypted_exposed()]
    if pub.curve is not None:
        lines.append(f"publish: CURVE on: {len(pub.curve.admitted)} client key(s) admitted "
                     f"from {pub.curve.keys.clients_dir}")
    return "\n".join(lines)


def _build(config: Config, pc: PublishConfig, cameras: list[str]) -> Sink:
    return ZmqSink(make_publisher(config, cameras=len(cameras)),
                   wait_for=pc.wait_for_subscribers, wait_timeout_s=pc.wait_timeout_s)


# pyzmq is a core dependency: nothing to require; its section is the core's `publish`
# (the publish stage reads it too), always there
OUTPUT = Output("publish", PublishConfig, queue_size=DEFAULT_QUEUE, require=lambda _, __: None,
                check=_check, build=_build)
