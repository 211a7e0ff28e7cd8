"""Freed heap given back to the operating system (glibc's `malloc_trim`; elsewhere nothing).

glibc keeps memory a thread frees in that thread's malloc arena, resident, for reuse: a
burst that allocated hundreds of MB (a synthetic layout build on every camera at once,
a subscription flood filed into libzmq's trie) would otherwise stay in the daemon's RSS
for weeks after it is gone."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_trim: Callable[[int], int] | None | bool = None


def give_back() -> None:
    """Return every arena's free pages to the OS (one walk of the heap: milliseconds)."""
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, macOS)
            _trim = False
    if callable(_trim):
        _trim(0)
