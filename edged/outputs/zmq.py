"""The ZeroMQ publisher as an output: the wire protocol's PUB socket (`edged.wire`)."""

from __future__ import annotations

import time

from edged.outputs.base.sink import Outcome, Sink
from edged.wire.codec import encode_eos
from edged.wire.publisher import Publisher


class ZmqSink(Sink):
    """The ZeroMQ publisher as a sink: the socket lives on this sink's thread only.

    It counts what it has handed to ZeroMQ per camera, and remembers each camera's last
    published sequence number for its end-of-stream message.
    """

    name = "zmq"

    def __init__(self, publisher: Publisher, boot: str = "") -> None:
        self.publisher = publisher
        self.boot = boot
        self.published: dict[str, int] = {}  # written by this sink's thread only
        self.last_seq: dict[str, int] = {}
        self.send_ms: dict[str, float] = {}  # the latest send time per camera

    def deliver(self, outcome: Outcome) -> None:
        t0 = time.perf_counter()
        cam = outcome.result.camera
        if self.publisher.send(list(outcome.wire)):
            self.published[cam] = self.published.get(cam, 0) + 1
            self.last_seq[cam] = outcome.result.seq
        self.send_ms[cam] = (time.perf_counter() - t0) * 1e3

    def control(self, frames: list[bytes]) -> None:
        self.publisher.send(frames)

    def end_of_stream(self, camera: str, reason: str) -> None:
        self.publisher.send(encode_eos(camera, self.last_seq.get(camera, -1), reason, self.boot))

    def close(self) -> None:
        self.publisher.close()
