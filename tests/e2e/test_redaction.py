"""No secret in any output: secrets planted in camera sources (URL userinfo of several
schemes, secret query parameters, ${VAR} values) and searched for in everything a real
daemon run writes: its log, `edged check`, every ZeroMQ message (states, stats, results),
the Prometheus page, the view's status API, the MCAP recording, and config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import zmq
from conftest import free_port

from edged.redaction import Redactor, redact

SECRETS = ["S3cretPW1", "S3cretPW2", "S3cretPW3", "S3cretPW4", "tok-S3cretPW5"]


@pytest.mark.parametrize("text,shown", [
    ("rtmp://viewer:S3cretPW1@host/live", "rtmp://viewer:***@host/live"),
    ("srt://host:9000?passphrase=S3cretPW2&latency=200",
     "srt://host:9000?passphrase=***&latency=200"),
    ("http://cam/video.cgi?user=viewer&pwd=S3cretPW3", "http://cam/video.cgi?user=viewer&pwd=***"),
    ("https://ghp_token@host/x", "https://***@host/x"),
    ("x?api_key=a&keyframe=1&X-Amz-Signature=s&design=2",
     "x?api_key=***&keyframe=1&X-Amz-Signature=***&design=2"),
    ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"),
])
def test_redact_hides_userinfo_and_secret_parameters(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_substituted_values_are_hidden_wherever_they_are() -> None:
    r = Redactor(["tok-S3cretPW5", "on"])  # too short to hunt for: "on" stays
    assert r("GET /cam?t=tok-S3cretPW5 on") == "GET /cam?t=*** on"


def test_no_planted_secret_reaches_any_output(tmp_path: Path, start_daemon) -> None:
    pytest.importorskip("mcap")
    pytest.importorskip("aiohttp")
    ep = f"tcp://127.0.0.1:{free_port()}"
    metrics, view = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: the cameras fail and retry
    rec = tmp_path / "rec"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""\
model: {{path: builtin:yoeo-demo, threads: 1, warmup_runs: 1}}
cameras:
  synthetic: {{source: synthetic, fps: 10, width: 320, height: 240}}
  rtmp: {{source: "rtmp://viewer:S3cretPW1@{dead}/live", type: video}}
  srt: {{source: "srt://{dead}?passphrase=S3cretPW2&latency=200", type: url}}
  cgi: {{source: "http://{dead}/video.cgi?user=viewer&pwd=S3cretPW3", type: url}}
  env: {{source: "rtsp://${{CAM_USER}}:${{CAM_PASSWORD}}@{dead}/s?t=${{CAM_TOKEN}}", type: url}}
publish: {{endpoints: ["{ep}"]}}
log: {{stats_interval_s: 0.5, metrics: "{metrics}"}}
view: {{listen: "{view}"}}
record: {{dir: {rec}}}
""")
    env = dict(os.environ, CAM_USER="viewer", CAM_PASSWORD="S3cretPW4",
               CAM_TOKEN="tok-S3cretPW5")
    outputs: dict[str, str] = {}
    check = subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(cfg)],
                           capture_output=True, text=True, env=env, timeout=120)
    outputs["check"] = check.stdout + check.stderr
    os.environ.update({k: env[k] for k in ("CAM_USER", "CAM_PASSWORD", "CAM_TOKEN")})
    try:
        d = start_daemon(cfg)
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(ep)
        d.wait_for("ready", timeout=60)
        raw: list[bytes] = []
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            if sub.poll(100):
                raw.extend(sub.recv_multipart())
        outputs["zmq"] = b"".join(raw).decode("latin-1")
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
            outputs["metrics"] = r.read().decode()
        with urllib.request.urlopen(f"http://{view}/api/status", timeout=10) as r:
            outputs["view"] = r.read().decode()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(30)
        outputs["log"] = d.log()
        sub.close(0)
        ctx.term()
    finally:
        for k in ("CAM_USER", "CAM_PASSWORD", "CAM_TOKEN"):
            os.environ.pop(k, None)
    outputs["recording"] = b"".join(p.read_bytes() for p in rec.glob("*.mcap")).decode(
        "latin-1")
    assert "_stats" in outputs["zmq"] and "rtmp" in outputs["log"]  # the outputs are real
    # the sources were shown, redacted ("viewer" too: it is a ${VAR} value)
    assert "rtsp://***:***@" in outputs["log"] and "passphrase=***" in outputs["log"]
    json.loads(outputs["view"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace(
        f'publish: {{endpoints: ["{ep}"]}}',
        'publish: {endpoints: ["tcp://${CAM_PASSWORD}@x"], sndhwm: [${CAM_TOKEN}]}'))
    err = subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(bad)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert err.returncode == 1
    outputs["config error"] = err.stdout + err.stderr
    for where, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}:\n{text[:3000]}"
