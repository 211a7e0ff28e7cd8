"""Blocking calls from the event loop on threads that never hold up the process's exit.

`loop.run_in_executor(None, ...)` uses the default executor, whose threads
`asyncio.run` joins when it returns: a model that takes a minute to load (or a wedged
provider) would then hold a stop hostage. `in_thread` runs the call on a fresh daemon
thread instead; a caller that is cancelled stops waiting at once and the result is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, name: str) -> T:
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
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await fut
