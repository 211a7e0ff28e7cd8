"""The ZeroMQ publisher as an output: the wire protocol's PUB socket (`edged.wire`)."""

from __future__ import annotations

import time

from edged.outputs.base.sink import Outcome, Sink
from edged.telemetry import ControlEvent, StreamEnded
from edged.wire.publisher import Publisher
from edged.wire.telemetry import encode_event


class ZmqSink(Sink):
    """The ZeroMQ publisher as a sink: the socket lives on this sink's thread only.

    Results arrive encoded (the publish stage stamps them once, for every sink); the
    daemon's events are encoded here. It counts what it has handed to ZeroMQ per camera.
    """

    name = "zmq"

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.published: dict[str, int] = {}  # written by this sink's thread only
        self.send_ms: dict[str, float] = {}  # the latest send time per camera

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
