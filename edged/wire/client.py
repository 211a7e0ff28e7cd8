"""Subscriber library: receive edged results in Python.

    from edged.wire.client import Subscriber

    with Subscriber("ipc:///run/edged/results.sock", cameras=["front"]) as sub:
        for msg in sub:  # ends after end-of-stream from every listed camera
            print(msg.camera, msg.seq, msg.labels(), msg.latency_ms)

The protocol itself is described in docs/protocol.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

import zmq
from zmq.utils.monitor import recv_monitor_message

from edged.wire.codec import (
    TOPIC_EOS,
    TOPIC_MODEL,
    TOPIC_RESULT,
    TOPIC_STATE,
    TOPIC_STATS,
    EndOfStream,
    Message,
    ProtocolError,
    check_camera,
    decode,
)
from edged.wire.curve import ClientKeys
from edged.wire.telemetry import (
    CameraState,
    ModelEvent,
    Stats,
    decode_model_event,
    decode_state,
    decode_stats,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 64 << 20
# how long a dropped connection may go without libzmq's reconnect attempt before the
# socket is rebuilt (libzmq schedules the retry at once; it only waits to run it)
_RETRY_WAIT_S = 0.5


# daemon-wide topics delivered with stats=True, and their decoders
_DAEMON_TOPICS: dict[bytes, Callable[[list[zmq.Frame]], Stats | ModelEvent]] = {
    TOPIC_STATS.encode(): decode_stats, TOPIC_MODEL.encode(): decode_model_event}


class Subscriber:
    """A SUB socket connected to one or more edged publishers.

    Not thread-safe: use it from one thread. Counters: `received` (results and
    end-of-stream messages decoded), `malformed` (skipped, undecodable), `ignored`
    (other topics, e.g. the reserved `<camera>/state` and `_stats`), `gaps` and
    `gaps_by_camera` (seq numbers never received; see docs/protocol.md, "Gaps"),
    `handshakes` (connections to a publisher established, counted as `recv` runs: the
    subscription goes out right behind each, so a client can tell it is in place
    before anything has been published).
    """

    def __init__(self, endpoint: str | Sequence[str], cameras: Sequence[str] | None = None, *,
                 rcvhwm: int = 100, context: zmq.Context | None = None,
                 stats: bool = False, states: bool = False,
                 curve: ClientKeys | None = None,
                 max_frame_bytes: int | None = DEFAULT_MAX_FRAME_BYTES) -> None:
        """`stats=True` also delivers the daemon's periodic `Stats` messages (typed per
        camera in `Stats.snapshots`) and the degradation ladder's `ModelEvent`s,
        `states=True` the cameras' `CameraState` changes. `curve`: the keys for a
        daemon with `publish.curve` (`ClientKeys.from_files(server.key, me.key_secret)`);
        without them such a daemon admits no connection and nothing arrives.
        `max_frame_bytes`: the largest message part accepted (default 64 MiB, above a
        raw 8K mask); a publisher that sends a larger one is disconnected and connected
        to afresh (`reconnects`), so it cannot run the process out of memory."""
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not endpoints:
            raise ValueError("no endpoint to connect to")
        if cameras is not None:
            if isinstance(cameras, str):
                cameras = [cameras]
            if not cameras:
                raise ValueError("cameras is empty: pass None to receive every camera")
            for cam in cameras:
                check_camera(cam)
        self.cameras: frozenset[str] | None = None if cameras is None else frozenset(cameras)
        self.stats = stats
        self.states = states
        self.received = 0
        self.malformed = 0
        self.ignored = 0
        self.gaps = 0
        self.gaps_by_camera: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self._boot: dict[str, str] = {}  # per camera: the publisher process it came from
        self.restarts = 0  # boot ids that changed: daemon restarts seen, not gaps
        self._ended: set[str] = set()
        self.reconnects = 0  # sockets rebuilt after a connection libzmq gave up on
        self.handshakes = 0
        if max_frame_bytes is not None and max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be >= 1, or None for no limit")
        self.max_frame_bytes = max_frame_bytes
        self._endpoints = endpoints
        self._rcvhwm = rcvhwm
        self._curve = curve
        # the trailing slash keeps "cam1" from matching "cam10/..."
        self._prefixes = [b""] if cameras is None else [f"{c}/".encode() for c in cameras]
        if stats and cameras is not None:
            self._prefixes += [TOPIC_STATS.encode(), TOPIC_MODEL.encode()]
        self._ctx = context if context is not None else zmq.Context.instance()
        self._lost_since: float | None = None  # a connection dropped, no retry seen yet
        self._unretried = 0
        self._backlog: deque[tuple[list[zmq.Frame], int]] = deque()
        self._sock, self._monitor = self._open()
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._closed = False

    def _open(self) -> tuple[zmq.Socket, zmq.Socket]:
        sock: zmq.Socket = self._ctx.socket(zmq.SUB)
        monitor: zmq.Socket | None = None
        try:
            sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            if self.max_frame_bytes is not None:
                # libzmq allocates a frame at the size its header declares: a hostile or
                # broken publisher could claim gigabytes. Over the limit, the connection
                # is dropped (and rebuilt, see _watch_connections)
                sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes)
            if self._curve is not None:
                self._curve.apply(sock)
            for prefix in self._prefixes:
                sock.setsockopt(zmq.SUBSCRIBE, prefix)
            # before connecting, so that no event is missed
            monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
                                              | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            for ep in self._endpoints:
                sock.connect(ep)
        except BaseException:
            if monitor is not None:
                monitor.close(linger=0)
            sock.close(linger=0)
            raise
        return sock, monitor

    def _watch_connections(self) -> None:
        """Rebuild the socket when libzmq has given up on a connection.

        libzmq reconnects after a connection error (each drop is followed by a
        CONNECT_RETRIED event) but never after a protocol error, such as a frame over
        MAXMSGSIZE: that connection stays dead, and so would the feed. A drop with no
        retry within _RETRY_WAIT_S is such a case; a fresh socket connects again."""
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._unretried += 1
                if self._lost_since is None:
                    self._lost_since = time.monotonic()
            elif event["event"] == zmq.EVENT_CONNECT_RETRIED and self._unretried:
                self._unretried -= 1
                if not self._unretried:
                    self._lost_since = None
        if self._lost_since is None or time.monotonic() - self._lost_since < _RETRY_WAIT_S:
            return
        (log.warning if not self.reconnects else log.debug)(
            "a connection was dropped and not retried (a frame over max_frame_bytes=%s, "
            "a refused CURVE key, or another protocol error): reconnecting",
            self.max_frame_bytes)
        while True:  # what arrived before the drop is still delivered
            try:
                self._backlog.append((self._sock.recv_multipart(zmq.NOBLOCK, copy=False),
                                      time.time_ns()))
            except zmq.Again:
                break
        self._drop_socket()
        self._sock, self._monitor = self._open()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._lost_since = None
        self._unretried = 0
        self.reconnects += 1

    def _drop_socket(self) -> None:
        self._poller.unregister(self._sock)
        self._poller.unregister(self._monitor)
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def recv(self, timeout: float | None = None
             ) -> Message | EndOfStream | Stats | CameraState | ModelEvent | None:
        """The next result or end-of-stream; None if none came within `timeout` seconds.

        `timeout=None` waits forever. Malformed messages are counted and skipped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._backlog:  # what the socket held before a rebuild, first
                msg = self._handle(*self._backlog.popleft())
                if msg is not None:
                    return msg
            if deadline is None:
                wait_ms = None
            else:
                wait_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            if self._lost_since is not None:  # wake up to check on the lost connection
                left = math.ceil((self._lost_since + _RETRY_WAIT_S - time.monotonic()) * 1000)
                wait_ms = max(0, left if wait_ms is None else min(wait_ms, left))
            ready = dict(self._poller.poll(wait_ms))
            if self._monitor in ready or self._lost_since is not None:
                self._watch_connections()
            if self._sock not in ready:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue  # spurious wake-up, or only a connection event
            try:
                # copy=False: a raw mask is then a view of the received frame, no copy
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            t_received = time.time_ns()
            msg = self._handle(frames, t_received)
            if msg is not None:
                return msg

    def _handle(self, frames: list[zmq.Frame], t_received: int
                ) -> Message | EndOfStream | Stats | CameraState | ModelEvent | None:
        first = frames[0].bytes
        kind = first.rpartition(b"/")[2]
        decoder: Callable[[list[zmq.Frame]], Stats | CameraState | ModelEvent] | None = None
        if self.stats and first in _DAEMON_TOPICS:
            decoder = _DAEMON_TOPICS[first]
        elif self.states and kind == TOPIC_STATE.encode():
            decoder = decode_state
        if decoder is not None:
            try:
                return decoder(frames)
            except ProtocolError as e:
                self.malformed += 1
                log.debug("skipping malformed %r message: %s", first[:80], e)
                return None
        if kind not in (TOPIC_RESULT.encode(), TOPIC_EOS.encode()):
            self.ignored += 1  # reserved topics: not ours to decode (yet)
            return None
        try:
            msg = decode(frames, t_received_ns=t_received)
        except ProtocolError as e:
            self.malformed += 1
            log.debug("skipping malformed message on %r: %s", frames[0].bytes[:80], e)
            return None
        self.received += 1
        cam = msg.camera
        if msg.boot:
            before = self._boot.get(cam)
            if before is not None and before != msg.boot:
                self.restarts += 1
                self._last_seq.pop(cam, None)  # a new daemon: its seq starts afresh
            self._boot[cam] = msg.boot
        if isinstance(msg, EndOfStream):
            self._count_gap(cam, msg.last_seq + 1)  # results lost just before the end
            self._last_seq.pop(cam, None)  # a restarted stream starts afresh
            self._ended.add(cam)
        else:
            self._count_gap(cam, msg.seq)
            self._last_seq[cam] = msg.seq
            self._ended.discard(cam)
        return msg

    def _count_gap(self, camera: str, seq: int) -> None:
        last = self._last_seq.get(camera)
        # seq going backwards means the stream restarted: not a gap
        if last is not None and seq > last + 1:
            missing = seq - last - 1
            self.gaps += missing
            self.gaps_by_camera[camera] = self.gaps_by_camera.get(camera, 0) + missing

    @property
    def ended(self) -> frozenset[str]:
        """Cameras whose end-of-stream has been received (and not restarted since)."""
        return frozenset(self._ended)

    @property
    def finished(self) -> bool:
        """True once every listed camera has sent end-of-stream (never without `cameras`)."""
        return self.cameras is not None and self.cameras <= self._ended

    def __iter__(self) -> Iterator[Message | EndOfStream | Stats | CameraState | ModelEvent]:
        """Blocks for each message; stops once `finished` (the last EOS is yielded)."""
        while not self.finished:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._drop_socket()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
