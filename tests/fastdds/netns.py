"""A network namespace of its own (loopback only, multicast routed to it) for a DDS test,
and the Fast DDS subscriber running inside it. No packet leaves the machine: the namespace
has no interface but `lo`. Unix sockets (the daemon's ZeroMQ ipc endpoint) are not
namespaced, so a ZeroMQ subscriber outside still reads the daemon inside.

Needs root (unshare -n, nsenter). Used by tests/e2e/test_fastdds.py and tools/fastdds_bench.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SETUP = ("ip link set lo up && ip link set lo multicast on && "
         "ip route add 224.0.0.0/4 dev lo")


def netns_problem() -> str | None:
    """Why a network namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root for unshare -n and nsenter"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    p = subprocess.run(["unshare", "-n", "sh", "-c", SETUP], capture_output=True, text=True)
    if p.returncode != 0:
        return f"unshare -n with loopback multicast failed: {p.stderr.strip()}"
    return None


class Netns:
    """A namespace kept alive by a sleeping process; `cmd(argv)` runs argv inside it."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", SETUP + " && echo up && exec sleep 100000"],
            stdout=subprocess.PIPE, text=True)
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "up":
            self._holder.kill()
            raise RuntimeError("the network namespace did not come up")
        self.path = f"/proc/{self._holder.pid}/ns/net"

    def cmd(self, argv: list[str]) -> list[str]:
        # nsenter execs argv (no fork for a network namespace): signals reach it directly
        return ["nsenter", f"--net={self.path}", *argv]

    def close(self) -> None:
        self._holder.kill()
        self._holder.wait()


class JsonLines:
    """A process whose stdout is JSON lines, collected on a thread (a `counts` line is
    also kept apart); its stderr goes to a file, since a pipe nobody reads could fill and
    stall it."""

    def __init__(self, argv: list[str]) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True)
        self.lines: list[dict[str, Any]] = []
        self.counts: dict[str, int] | None = None
        self._cond = threading.Condition()
        self._th = threading.Thread(target=self._read, daemon=True)
        self._th.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            j = json.loads(raw)
            with self._cond:
                if "counts" in j:
                    self.counts = j["counts"]
                self.lines.append(j)
                self._cond.notify_all()

    def wait(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """Wait until `pred(lines)` holds (True) or `timeout` seconds pass (False)."""
        end = time.monotonic() + timeout
        with self._cond:
            while not pred(self.lines):
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return pred(self.lines)
                self._cond.wait(min(left, 0.5))
        return True

    def samples(self, topic: str, qos: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [j for j in self.lines if j.get("topic") == topic and
                    (qos is None or j.get("qos") == qos)]

    def count(self, topic: str) -> int:
        return len(self.samples(topic))

    def stop(self, timeout: float = 10.0, *, terminate: bool = True) -> str:
        """SIGTERM (or, without `terminate`, wait for the process to end by itself; killed
        after `timeout`); returns stderr."""
        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._th.join(5)
        self._err.seek(0)
        err = self._err.read().decode(errors="replace")
        self._err.close()
        return err


class FastddsSub(JsonLines):
    """tests/fastdds/subscriber.cpp in `ns`, its JSON lines collected on a thread."""

    def __init__(self, ns: Netns, binary: Path, specs: list[str], domain: int, *,
                 content: bool = False, bufsize: int = 0) -> None:
        argv = [str(binary), "--domain", str(domain), "--bufsize", str(bufsize), *specs]
        if content:
            argv.insert(1, "--content")
        super().__init__(ns.cmd(argv))
