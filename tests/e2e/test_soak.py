"""A short run of tests/soak.py: the real daemon, /proc samples, an MJPEG camera that goes
away and comes back once. The 10-minute run and its figures are in docs/operations.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def test_short_soak_passes(tmp_path):
    p = subprocess.run([sys.executable, str(HERE / "soak.py"), "--seconds", "20", "--warmup",
                        "8", "--interval", "1", "--cameras", "2", "--mjpeg-up", "6",
                        "--mjpeg-down", "2", "--json", "--keep", str(tmp_path)],
                       capture_output=True, text=True, timeout=180)
    report = json.loads(p.stdout.splitlines()[-1])
    samples = [(s["t"], s["settled"], s["threads"], s["fds"]) for s in report["samples"]]
    assert report["verdict"] == "pass", (report["checks"], samples,
                                          report["mjpeg_restarted_at_s"],
                                          report["state_changes"], p.stderr,
                                          (tmp_path / "daemon.log").read_text())
    assert p.returncode == 0
    assert report["mjpeg_restarts"] >= 1
    assert all(n > 20 for n in report["messages"].values()), report["messages"]
    # the MJPEG camera went away and came back: reconnecting, then running, on the bus
    ipcam = [s for _, cam, s, _ in report["state_changes"] if cam == "ipcam"]
    assert "reconnecting" in ipcam and ipcam[-1] == "running", report["state_changes"]
    assert report["sigterm"]["exit_code"] == 0
