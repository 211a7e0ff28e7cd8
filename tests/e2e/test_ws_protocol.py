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

from edged.outputs.base.draw import MASK_COLOURS

HERE = Path(__file__).parents[1] / "wsprotocol"


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


BROWSER_CLIENT = """
(() => {
  const fox = window.fox = {protocol: null, counts: {}, png: null, error: null};
  const ws = new WebSocket("ws://127.0.0.1:PORT", ["foxglove.websocket.v1"]);
  ws.binaryType = "arraybuffer";
  const subs = {};
  ws.onopen = () => { fox.protocol = ws.protocol; };
  ws.onerror = () => { fox.error = "WebSocket error"; };
  ws.onmessage = async (ev) => {
    if (typeof ev.data === "string") {
      const m = JSON.parse(ev.data);
      if (m.op !== "advertise") return;
      ws.send(JSON.stringify({op: "subscribe", subscriptions: m.channels.map((c, i) => {
        subs[i + 1] = c.topic;
        return {id: i + 1, channelId: c.id};
      })}));
      return;
    }
    const dv = new DataView(ev.data);
    if (dv.getUint8(0) !== 1) return;
    const topic = subs[dv.getUint32(1, true)];
    fox.counts[topic] = (fox.counts[topic] || 0) + 1;
    if (!topic.endsWith("/mask_color") || fox.png || fox.decoding) return;
    fox.decoding = true;
    // the PNG inside the CompressedImage: from its signature to the end of IEND, decoded
    // the way Foxglove's image panel decodes a CompressedImage in a browser
    const b = new Uint8Array(ev.data);
    const start = b.findIndex((x, i) => x === 0x89 && b[i + 1] === 0x50 && b[i + 2] === 0x4e);
    let end = -1;
    for (let i = start; i < b.length - 4; i++) {
      if (b[i] === 0x49 && b[i + 1] === 0x45 && b[i + 2] === 0x4e && b[i + 3] === 0x44) {
        end = i + 8; break;
      }
    }
    const bmp = await createImageBitmap(new Blob([b.slice(start, end)], {type: "image/png"}));
    const canvas = new OffscreenCanvas(bmp.width, bmp.height);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(bmp, 0, 0);
    const px = ctx.getImageData(0, 0, bmp.width, bmp.height).data;
    const colours = new Set();
    for (let i = 0; i < px.length; i += 4) colours.add(`${px[i]},${px[i + 1]},${px[i + 2]}`);
    fox.png = {width: bmp.width, height: bmp.height, colours: [...colours].sort()};
  };
  return true;
})()
"""


def test_a_browser_websocket_with_the_legacy_name_shows_the_colour_mask(tmp_path,
                                                                         start_daemon):
    """Chromium's own WebSocket offering `foxglove.websocket.v1` (Lichtblick in a browser
    does exactly this) gets every channel, and the browser's image decoder shows the
    colour mask in the view's colours."""
    from browser import Browser, find_chromium

    if find_chromium() is None:
        if os.environ.get("EDGED_REQUIRE_BROWSER"):
            pytest.fail("EDGED_REQUIRE_BROWSER is set but no Chromium is installed")
        pytest.skip("no Chromium here (.ci/run installs it and sets EDGED_REQUIRE_BROWSER)")
    port = free_port()
    d = start_daemon(_config(tmp_path, port))
    d.wait_for("ready")
    browser = Browser(tmp_path / "chromium")
    try:
        assert browser.evaluate(BROWSER_CLIENT.replace("PORT", str(port)))
        browser.wait_until("window.fox.png !== null || window.fox.error !== null", 90)
        browser.wait_until("Object.values(window.fox.counts).length >= 5 && "
                           "Object.values(window.fox.counts).every((n) => n >= 3)", 90)
        fox = browser.evaluate("window.fox")
    finally:
        browser.close()
    assert d.terminate()[0] == 0
    assert fox["error"] is None and fox["protocol"] == "foxglove.websocket.v1", fox
    assert set(fox["counts"]) == {f"/front/{c}" for c in CHANNELS} | {"/edged/stats"}
    view = {",".join(map(str, (r, g, b))) for b, g, r in MASK_COLOURS[1:3]} | {"0,0,0"}
    png = fox["png"]
    assert (png["width"], png["height"]) == (640, 480)
    assert set(png["colours"]) <= view and len(png["colours"]) >= 2, png["colours"]
    assert " ERROR " not in d.log()
