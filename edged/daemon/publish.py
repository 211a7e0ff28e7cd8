"""The publish stage: the one place a finished result is judged against its camera's
latency budget, encoded for the wire, stamped, and fanned out to every sink.

It runs on one thread ("publish"). The verdict is taken once, here, before fan-out, so
every sink sees the same `late` flag and the same `t_publish_ns`; the flag is judged
when the message is stamped, after the mask is encoded, so a result without it is within
budget by its own timestamps (docs/protocol.md). It also knows each camera's last
published seq, so every sink gets the same end-of-stream (`StreamEnded`). The stage never
waits for a sink: each sink has its own bounded queue (`edged.outputs.base.sink`).

Thread ownership: the stage's thread is the only writer of each camera's budget
estimates (`Budget.ahead`, `Budget.send`) and of its publish-side counters (`late`,
`late_dropped`, the e2e and encode windows). The event loop asks for changes to them
through `call`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol

from edged.daemon.scheduler import Budget
from edged.outputs.base.sink import Outcome, SinkRunner
from edged.results import Frame, Result
from edged.telemetry import (
    DROP_EVENT_S,
    ControlEvent,
    DropCause,
    FrameDropped,
    SinkStats,
    StreamEnded,
)
from edged.wire.codec import MaskEncoder, encode_stamped

log = logging.getLogger("edged.daemon.publish")

EOS_WAIT_S = 2.0  # how long a camera's end-of-stream waits for each sink to handle it


class PublishCounters(Protocol):
    """The publish-side counters of one camera (see `edged.daemon.camera_loop.CameraStats`)."""

    late: int
    late_dropped: int

    def record_published(self, e2e_ms: float, encode_ms: float) -> None: ...


class DropEvents:
    """Whether a drop is worth a `FrameDropped` event: at most one per `DROP_EVENT_S` per
    camera and cause (the counts are in the stats; an event says that it happens)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, DropCause], float] = {}

    def due(self, camera: str, cause: DropCause) -> bool:
        now = time.monotonic()
        if now - self._last.get((camera, cause), -DROP_EVENT_S) < DROP_EVENT_S:
            return False
        self._last[camera, cause] = now
        return True


class Published:
    """A result handed to the publish thread; awaiting it waits until every sink has it
    queued. Usually that has happened by the time the camera's next result wants to
    follow it (publishing takes well under a frame time), and then the await returns at
    once: the publish thread never has to wake the event loop for it."""

    __slots__ = ("_fut",)

    def __init__(self, fut: Future[None]) -> None:
        self._fut = fut

    def __await__(self) -> Generator[Any, None, None]:
        if self._fut.done():
            return self._fut.result()
        return (yield from asyncio.wrap_future(self._fut).__await__())


class PublishStage:
    """Judge, encode, stamp and fan out finished results on one thread."""

    def __init__(self, sinks: Sequence[SinkRunner], encoder: MaskEncoder, *,
                 send_masks: bool, boot: str = "") -> None:
        self.sinks = tuple(sinks)
        self.send_masks = send_masks
        self.boot = boot  # this daemon process's id in every result header
        self._encoder = encoder  # not thread-safe: used on the stage's thread only
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="publish")
        self._closed = False
        # each camera's last published seq, for its end-of-stream (the stage's thread)
        self._last_seq: dict[str, int] = {}
        self._drops = DropEvents()

    def start(self) -> None:
        for s in self.sinks:
            s.start()

    # ------------------------------------------------------------------ from the loop

    def publish(self, budget: Budget, counters: PublishCounters, result: Result,
                frame: Frame | None) -> Published:
        """Hand a result to the stage; awaiting it returns once every sink has it queued."""
        return Published(self._pool.submit(self._publish, budget, counters, result, frame))

    def call(self, fn: Callable[[], None]) -> Future[None] | None:
        """Run `fn` on the stage's thread, after what is queued (None once closed)."""
        try:
            return self._pool.submit(fn)
        except RuntimeError:  # shut down
            return None

    def control(self, event: ControlEvent) -> None:
        """An event (stats, state, model change, drop) to every sink, in order."""
        self.call(lambda: self._control(event))

    async def end_of_stream(self, camera: str, reason: str,
                            timeout: float = EOS_WAIT_S) -> None:
        """Queue `camera`'s end-of-stream behind its results and wait until every sink
        has handled it, or `timeout`: a sink stuck in a delivery must not hold up a stop
        (it keeps the end-of-stream queued, and is closed with a bound of its own)."""
        fut = self.call(lambda: None)  # everything the stage holds reaches the sinks first
        if fut is not None:
            await asyncio.wrap_future(fut)
        # the camera has nothing more in the stage: its last seq is final
        eos = StreamEnded(camera, self._last_seq.get(camera, -1), reason, self.boot)
        waits = {asyncio.wrap_future(s.end_of_stream(eos)): s for s in self.sinks}
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=timeout)
        for w in late:
            log.error("camera %s: sink %s has not handled the end-of-stream within %.1f s",
                      camera, waits[w].sink.name, timeout)

    def sink_stats(self) -> list[SinkStats]:
        return [s.stats for s in self.sinks]

    def close(self, timeout: float = 2.0) -> None:
        """Finish what is queued, then close every sink (each within `timeout`)."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        for s in self.sinks:
            if not s.close(timeout):
                log.error("sink %s did not finish within %.1f s; left behind", s.sink.name,
                          timeout)

    # ------------------------------------------------------------------ stage thread

    def _control(self, event: ControlEvent) -> None:
        for s in self.sinks:
            s.control(event)

    def _publish(self, budget: Budget, counters: PublishCounters, result: Result,
                 frame: Frame | None) -> None:
        t0 = time.perf_counter()
        now = time.monotonic_ns()
        # predicted with what encoding and sending will still add
        e2e = (now - result.t_capture_mono_ns) / 1e6 + (budget.send.value or 0.0)
        # the stages after taking the frame; with its age this predicts a frame's e2e
        budget.ahead.add(e2e - result.timings_ms.get("queue", 0.0))
        late = budget.is_late(e2e)
        if late and budget.on_late == "drop":
            self._late_dropped(counters, result)
            return
        # not late yet: judged again when the message is stamped, after the mask is encoded
        capture_ns = result.t_capture_wall_ns
        msg = encode_stamped(result, self._encoder, send_mask=self.send_masks, late=late,
                             late_at=lambda now_ns: budget.is_late((now_ns - capture_ns) / 1e6),
                             boot=self.boot)
        if msg.late:
            if budget.on_late == "drop":
                self._late_dropped(counters, result)
                return
            counters.late += 1
        self._last_seq[result.camera] = result.seq
        # the result every sink sees carries the verdict; the camera loop's copy is left
        # as the model returned it
        outcome = Outcome(replace(result, flags=msg.flags), frame, msg.late, msg.t_publish_ns,
                          tuple(msg.frames))
        for s in self.sinks:
            s.offer(outcome)
        encode_ms = (time.perf_counter() - t0) * 1e3
        budget.send.add(encode_ms)
        counters.record_published((time.monotonic_ns() - result.t_capture_mono_ns) / 1e6,
                                  encode_ms)

    def _late_dropped(self, counters: PublishCounters, result: Result) -> None:
        counters.late_dropped += 1
        if self._drops.due(result.camera, DropCause.LATE):
            self._control(FrameDropped(result.camera, DropCause.LATE, result.seq))
