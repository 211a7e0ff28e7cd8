"""The C allocator's arenas, bounded for a daemon that runs for weeks.

glibc gives threads that contend for malloc arenas of their own, up to 8 per core. A
WebSocket client that stalls and leaves frees its queue in one arena while other threads
(ONNX Runtime's, the sinks', foxglove-sdk's) allocate in others, so the freed memory is
not reused: RSS stepped up ~2.5 MB per stalled Foxglove client (docs/benchmarks.md,
"Foxglove clients"). With two arenas it stayed flat after the first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("edged.daemon")

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas at `arenas`, unless the operator set MALLOC_ARENA_MAX (glibc
    reads it itself). Call before the daemon starts its threads: a thread keeps the arena
    it has. False where the C library is not glibc (musl has no arenas to cap)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(M_ARENA_MAX, arenas))
    log.debug("malloc arenas capped at %d: %s", arenas, ok)
    return ok
