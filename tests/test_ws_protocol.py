"""Foxglove live with the client robot teams' viewers are built on: `@foxglove/ws-protocol`
from npm (Lichtblick, older Foxglove Studio), with its default subprotocol
`foxglove.websocket.v1`, in Node (tests/wsprotocol/client.js), against the real daemon.
It must connect, list every channel, and decode every message with the schema the server
advertised (protobuf via protobufjs as Lichtblick does, JSON, PNG via pngjs).

Needs `node` and `npm ci` in tests/wsprotocol (CI does both, see .ci/run); skips with the
reason otherwise, and fails instead when EDGED_REQUIRE_WSPROTOCOL=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import free_port
from test_foxglove import CHANNELS, _config

from edged.view.overlay import MASK_COLOURS

HERE = Path(__file__).parent / "wsprotocol"


def _node() -> str:
    node = shutil.which("node")
    why = None
    if node is None:
        why = "node is not installed (apt-get install nodejs npm)"
    elif not (HERE / "node_modules" / "@foxglove" / "ws-protocol").is_dir():
        why = f"@foxglove/ws-protocol is not installed: cd {HERE} && npm ci"
    if why is not None:
        if os.environ.get("EDGED_REQUIRE_WSPROTOCOL") == "1":
            pytest.fail(f"EDGED_REQUIRE_WSPROTOCOL=1 but {why}")
        pytest.skip(why)
    assert node is not None
    return node


def _run_client(node: str, url: str, seconds: float, per_channel: int) -> dict:
    p = subprocess.run([node, str(HERE / "client.js"), url, str(seconds), str(per_channel)],
                       capture_output=True, text=True, timeout=seconds + 60)
    assert p.stdout.strip(), (p.returncode, p.stderr)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0, (p.returncode, summary.get("errors"), p.stderr)
    return summary


def test_the_npm_ws_protocol_client_decodes_every_channel(tmp_path, start_daemon):
    node = _node()
    port = free_port()
    d = start_daemon(_config(tmp_path, port))
    d.wait_for("ready")
    # generous: a loaded machine; the client stops once every channel had 5 messages
    s = _run_client(node, f"ws://127.0.0.1:{port}", 120, 5)
    assert d.terminate()[0] == 0
    log = d.log()
    assert s["subprotocol"] == "foxglove.websocket.v1" and s["serverName"] == "edged"
    assert s["errors"] == []
    # every channel listed, each with a schema the client decodes it with
    topics = {f"/front/{c}" for c in CHANNELS} | {"/edged/stats"}
    assert set(s["channels"]) == topics, s["channels"]
    for t, ch in s["channels"].items():
        assert ch["decodable"], (t, ch)
        assert s["topics"][t]["messages"] >= 5 and s["topics"][t]["errors"] == 0, t
    samples = {t: v["samples"] for t, v in s["topics"].items()}
    for t in ("/front/image", "/front/mask", "/front/mask_color", "/front/annotations"):
        assert all(x["stampEqualsLogTime"] for x in samples[t]), t  # capture time
    (mask, *_) = samples["/front/mask"]
    assert (mask["width"], mask["height"], mask["encoding"], mask["bytes"]) == \
        (640, 480, "mono8", 640 * 480)
    assert set(mask["values"]) <= {0, 1, 2}
    # what a person sees: a PNG in the view's colours (the demo model: lines and field
    # coloured, background black), not ids that a viewer shows as near-black
    view = {",".join(map(str, (r, g, b))) for b, g, r in MASK_COLOURS[1:3]} | {"0,0,0"}
    for png in samples["/front/mask_color"]:
        assert (png["format"], png["width"], png["height"]) == ("png", 640, 480)
        assert set(png["colours"]) <= view and len(png["colours"]) >= 2, png["colours"]
    assert any(x["texts"] for x in samples["/front/annotations"])
    assert samples["/edged/stats"][-1]["cameras"]["front"]["state"] == "running"
    assert "foxglove: client 127.0.0.1:" in log and "(foxglove.websocket.v1)" in log
    assert " ERROR " not in log, log
