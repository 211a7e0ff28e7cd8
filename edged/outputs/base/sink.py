"""Outputs as sinks: each sink gets every finished result on its own thread, behind a
bounded queue, so a slow or failing sink is counted and never delays the camera loops,
the publish stage or the other sinks.

A sink implements `Sink.deliver(outcome)`; `SinkRunner` owns the sink's thread and its
queue. The queue keeps the newest `queue_size` outcomes: when it is full the oldest one
is dropped and counted (for a robot a fresh result is worth more than an old one).
Events (`edged.telemetry`: stats, state, model change, drop, end-of-stream) are never
dropped: they are few, and a subscriber must see every end-of-stream. A sink gets them
typed and reads the fields it needs; only the ZeroMQ output turns them into bytes.

Every output (`edged.outputs.<name>`) is a sink. One that publishes to subscribers (the
ZeroMQ output) is also `Publishing`: the daemon asks it, through its runner's `call`,
for what only it knows.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from edged.outputs.base.png import SharedMask
from edged.results import Frame, Result
from edged.telemetry import ControlEvent, SinkStats, StreamEnded

log = logging.getLogger("edged.daemon.sinks")

DEFAULT_QUEUE = 8  # outcomes a sink may have waiting before the oldest is dropped
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished result after the publish stage's one budget decision.

    `late` and `t_publish_ns` are the verdict every sink sees; `wire` is the ZeroMQ
    message (encoded once, stamped at `t_publish_ns`); `frame` is the camera frame the
    result was computed from (for sinks that show or record the image); `mask` is the
    result's class mask at camera resolution and its PNG, computed once for all sinks.
    """

    result: Result
    frame: Frame | None
    late: bool
    t_publish_ns: int
    wire: tuple[bytes, ...]
    mask: SharedMask = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", SharedMask(self.result))


class Sink(ABC):
    """One output. `deliver` and `control` run on the sink's own thread only."""

    name: str = "sink"

    def open(self) -> None:  # noqa: B027 - optional hook
        """Called on the sink's thread before the first delivery."""

    @abstractmethod
    def deliver(self, outcome: Outcome) -> None:
        """Hand one finished result to the output. May block; may raise (counted)."""

    def control(self, event: ControlEvent) -> None:  # noqa: B027 - optional hook
        """An event of the daemon (stats, state, model change, drop)."""

    def end_of_stream(self, eos: StreamEnded) -> None:  # noqa: B027
        """`eos.camera` publishes nothing more."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called on the sink's thread after the last item."""


@runtime_checkable
class Publishing(Protocol):
    """A sink that publishes results to subscribers; the daemon asks it three things.

    `published`: results handed on per camera (the stats' `published`; read from any
    thread). `wait_for_subscribers` (on the sink's thread, before the cameras start):
    block until the subscriptions its config asks for have arrived or its wait is over.
    `reload` (on the sink's thread, at SIGHUP): re-read what it may re-read while running
    (keys, refusals); one line per thing done; raises when that fails.
    """

    @property
    def published(self) -> Mapping[str, int]: ...

    def wait_for_subscribers(self) -> None: ...

    def reload(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class _Control:
    event: ControlEvent


@dataclass(frozen=True, slots=True)
class _EndOfStream:
    eos: StreamEnded
    done: Future[None]


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Callable[[], Any]
    done: Future[Any]


_Item = Outcome | _Control | _EndOfStream | _Call


class SinkRunner:
    """Owns one sink's thread and bounded queue."""

    def __init__(self, sink: Sink, queue_size: int = DEFAULT_QUEUE) -> None:
        if queue_size < 1:
            raise ValueError("a sink queue holds at least one outcome")
        self.sink = sink
        self.queue_size = queue_size
        # one queue in arrival order, so an end-of-stream follows its camera's last
        # result; only outcomes are ever dropped
        self._items: deque[_Item] = deque()
        self._outcomes = 0  # outcomes in _items
        self._cv = threading.Condition()
        self._closing = False
        self._delivered = 0
        self._dropped = 0
        self._failed = 0
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def stats(self) -> SinkStats:
        with self._cv:
            return SinkStats(self.sink.name, self._delivered, self._dropped, self._failed,
                             self._outcomes)

    def offer(self, outcome: Outcome) -> bool:
        """Queue an outcome without waiting; False when an older one had to make room."""
        with self._cv:
            if self._closing:
                return False
            dropped = self._outcomes >= self.queue_size
            if dropped:
                for i, item in enumerate(self._items):
                    if isinstance(item, Outcome):
                        del self._items[i]
                        break
                self._dropped += 1
            else:
                self._outcomes += 1
            self._items.append(outcome)
            self._cv.notify()
        return not dropped

    def control(self, event: ControlEvent) -> None:
        """Queue an event (never dropped)."""
        self._push(_Control(event))

    def end_of_stream(self, eos: StreamEnded) -> Future[None]:
        """Queue an end-of-stream after everything already queued; the future is done
        once the sink has handled it."""
        done: Future[None] = Future()
        if not self._push(_EndOfStream(eos, done)):
            done.set_result(None)
        return done

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the sink's thread, in queue order (e.g. something only the thread
        owning the sink's socket may do). The future holds what it returned or raised
        (not counted as the sink failing); SinkClosed when the sink runs no more."""
        done: Future[T] = Future()
        if not self._push(_Call(fn, done)):
            done.set_exception(SinkClosed(f"sink {self.sink.name} is closed"))
        return done

    def _push(self, item: _Item) -> bool:
        with self._cv:
            if self._closing:
                return False
            self._items.append(item)
            self._cv.notify()
        return True

    def close(self, timeout: float = 2.0) -> bool:
        """Deliver what is queued, close the sink and end its thread. False if the sink
        did not finish within `timeout` (its thread is a daemon and is left behind)."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next(self) -> _Item | None:
        with self._cv:
            while not self._items:
                if self._closing:
                    return None
                self._cv.wait()
            item = self._items.popleft()
            if isinstance(item, Outcome):
                self._outcomes -= 1
            return item

    def _run(self) -> None:
        sink = self.sink
        try:
            sink.open()
        except Exception as e:
            log.error("sink %s cannot open: %s; it receives nothing", sink.name, e)
            self._drain_failed()
            return
        while (item := self._next()) is not None:
            try:
                if isinstance(item, Outcome):
                    sink.deliver(item)
                    with self._cv:
                        self._delivered += 1
                elif isinstance(item, _Control):
                    sink.control(item.event)
                elif isinstance(item, _EndOfStream):
                    sink.end_of_stream(item.eos)
                else:
                    _answer(item)
            except Exception as e:  # a failing sink is counted and never stops the others
                with self._cv:
                    self._failed += 1
                    n = self._failed
                if n == 1 or n % 1000 == 0:
                    log.error("sink %s: %s failed (%d so far): %s", sink.name,
                              type(item).__name__.strip("_"), n, e)
            finally:
                _settle(item)
        try:
            sink.close()
        except Exception as e:
            log.error("sink %s: close failed: %s", sink.name, e)

    def _drain_failed(self) -> None:
        while (item := self._next()) is not None:
            _settle(item)


class SinkClosed(RuntimeError):
    """A call to a sink that is closed, or that could not open."""


def _answer(call: _Call) -> None:
    """Run a call; what it returns or raises is the caller's."""
    try:
        call.done.set_result(call.fn())
    except Exception as e:  # noqa: BLE001 - handed to whoever waits on the future
        call.done.set_exception(e)


def _settle(item: _Item) -> None:
    """Whoever waits for this item is told it has been handled (a call that never ran:
    that the sink is closed)."""
    if isinstance(item, _EndOfStream) and not item.done.done():
        item.done.set_result(None)
    elif isinstance(item, _Call) and not item.done.done():
        item.done.set_exception(SinkClosed("the sink is closed"))
