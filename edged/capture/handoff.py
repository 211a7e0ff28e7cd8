"""Frames from a capture thread to the pipeline, bounded.

For live sources a latest-frame slot (a new frame replaces an unprocessed one, which is
counted); for files in replay mode a lossless queue of one frame: the reader waits for
room before it decodes the next frame (`wait_room`), so a frame is decoded only when the
model is about to want it, never several frames ahead (each frame ahead is a frame time
of latency and buys no throughput: decoding is far shorter than inference). Nothing here
grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable

from edged.results import Frame


class Handoff:
    """Frames from one capture thread to one asyncio consumer, bounded.

    `lossless=False`: capacity 1, the newest frame wins (`overwritten` counts the
    frames that were replaced before anyone took them). `lossless=True`: `put` waits
    for space, so a file is read no faster than it is processed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, lossless: bool, capacity: int = 1
                 ) -> None:
        self._loop = loop
        self.lossless = lossless
        self.capacity = capacity if lossless else 1
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._ready = asyncio.Event()
        self._waiting = False  # the consumer is parked in `wait` (wake it on a put)
        self.closed = False
        self.overwritten = 0
        self.put_count = 0

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, frame: Frame, timeout: float | None = None) -> bool | None:
        """Called by the capture thread: True queued, None timed out waiting for space
        (lossless only; try again), False closed (the source should stop)."""
        with self._cond:
            if self.lossless:
                end = None if timeout is None else time.monotonic() + timeout
                while len(self._items) >= self.capacity and not self.closed:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._cond.wait(left if left is not None else 0.5)
            elif self._items:
                self._items.popleft()
                self.overwritten += 1
            if self.closed:
                return False
            self._items.append(frame)
            self.put_count += 1
            # a consumer that is busy will find the frame when it next looks: waking
            # the event loop from this thread is needed only when it is parked
            wake, self._waiting = self._waiting, False
        if wake:
            self._wake()
        return True

    def wait_room(self, give_up: Callable[[], bool], poll_s: float = 0.2) -> bool:
        """Called by the capture thread before it reads a frame: True once a frame put
        now is queued at once (at once, for a live slot); False when closed, or when
        `give_up()` (asked every `poll_s` while waiting) says so."""
        with self._cond:
            while self.lossless and len(self._items) >= self.capacity and not self.closed:
                if give_up():
                    return False
                self._cond.wait(poll_s)
            return not self.closed and not give_up()

    def close(self) -> None:
        """End of stream: the consumer gets the frames still queued, then None."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._wake()

    def ready(self) -> bool:
        """A frame is waiting right now."""
        with self._cond:
            return bool(self._items)

    def take(self) -> Frame | None:
        """A frame if one is waiting (the newest one in a live slot), without waiting."""
        with self._cond:
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    async def wait(self) -> bool:
        """Wait until a frame is available; False once closed and drained."""
        while True:
            with self._cond:
                if self._items:
                    return True
                if self.closed:
                    return False
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()

    async def get(self) -> Frame | None:
        while await self.wait():
            frame = self.take()
            if frame is not None:
                return frame
        return None
