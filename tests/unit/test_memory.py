"""The daemon caps glibc's malloc arenas (edged/daemon/memory.py): with one arena per
contending thread, memory freed in one (a stalled Foxglove client's queue) was not reused
by the others and RSS stepped up with every such client. Counted by glibc itself
(malloc_info lists one <heap> per arena) in a process whose eight threads contend."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

PROBE = """
import ctypes, ctypes.util, sys, threading
from edged.daemon.memory import limit_malloc_arenas
capped = limit_malloc_arenas(2) if sys.argv[1] == "cap" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
start = threading.Barrier(8)
def work():
    start.wait()  # all at once, so that they contend for the arenas
    blocks = [libc.malloc(1000) for _ in range(20000)]
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
fp = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
print(capped)
"""


def _arenas(tmp_path, mode: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = tmp_path / f"{mode}.xml"
    p = subprocess.run([sys.executable, "-c", PROBE, mode, str(out)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    return len(re.findall(r"<heap nr=", out.read_text())), p.stdout.strip()


def test_the_daemon_s_threads_share_two_malloc_arenas(tmp_path):
    if "glibc" not in " ".join(__import__("platform").libc_ver()):
        pytest.skip("not glibc: no arenas to cap")
    free, _ = _arenas(tmp_path, "free")
    capped, said = _arenas(tmp_path, "cap")
    assert free > 2, free  # without the cap the contending threads get arenas of their own
    assert said == "True" and capped <= 2, (said, capped)


def test_an_operator_s_malloc_arena_max_is_left_to_glibc(tmp_path):
    import os

    env = dict(os.environ, MALLOC_ARENA_MAX="4")
    n, said = _arenas(tmp_path, "cap", env)
    assert said == "False" and n <= 4, (said, n)
