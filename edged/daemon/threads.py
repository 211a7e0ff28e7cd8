"""Blocking calls from the event loop on threads that never hold up the process's exit.

`loop.run_in_executor(None, ...)` uses the default executor, whose threads
`asyncio.run` joins when it returns: a model that takes a minute to load (or a wedged
provider) would then hold a stop hostage. `BlockingCalls.run` runs the call on a fresh
daemon thread instead; a caller that is cancelled stops waiting at once and the result
is dropped. `busy` names the calls still running, so that the process can leave without
them (`edged.cli`): an interpreter that finalises under a thread still inside
onnxruntime aborts.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class BlockingCalls:
    """The daemon threads one owner started for its blocking calls."""

    def __init__(self) -> None:
        self._live: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def busy(self) -> list[str]:
        """Names of the calls still running."""
        with self._lock:
            return sorted(t.name for t in self._live if t.is_alive())

    async def run(self, fn: Callable[..., T], *args: Any, name: str) -> T:
        """`fn(*args)` on a daemon thread named `name`; its result or exception."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():  # the waiter was cancelled
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def work() -> None:
            try:
                value: Any = fn(*args)
                ok = True
            except BaseException as e:  # handed to the waiter, whatever it is
                value, ok = e, False
            finally:
                with self._lock:
                    self._live.discard(threading.current_thread())
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, ok, value)

        thread = threading.Thread(target=work, name=name, daemon=True)
        with self._lock:
            self._live.add(thread)
        thread.start()
        return await fut
