"""Foxglove live: a real Foxglove WebSocket client (tests/foxglove_client.py) subscribes
to the daemon's channels, decodes every message with the schemas the server advertised,
and checks them against the ZeroMQ output of the same frames and the synthetic scene's
ground truth."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from configfile import daemon_config, synthetic
from conftest import ZmqCollector, free_port
from daemonlog import processed_intervals
from daemonrun import run_cli, wait_until
from foxglove_client import LEGACY, Received, StalledClient, _message_class, collect, count
from resultgen import make_result

from edged import synth
from edged.outputs.base import foxglove_schema as messages
from edged.outputs.base.draw import Overlay, box_colour, mask_colour
from edged.results import Frame

SEED = 38  # its ball is in view in the first seconds
FIELD = 2
CHANNELS = ("image", "mask", "mask_color", "annotations")


def _config(tmp_path: Path, port: int, **foxglove: Any) -> Path:
    return daemon_config(tmp_path, {"front": synthetic(SEED)}, name="fox.yaml",
                         foxglove={"listen": f"127.0.0.1:{port}", **foxglove})


def _encoded(log: str) -> dict[str, int]:
    m = re.search(r"foxglove: encoded for subscribers: (.*)", log)
    assert m, log
    return {k: int(n) for k, n in (p.rsplit(" ", 1) for p in m.group(1).split(", "))}


def _enough(topics: set[str]) -> Callable[[list[Received]], bool]:
    """Until every topic has spoken and there is enough for the checks below, with room
    for the first results, from before the ZeroMQ subscription took, to go unmatched:
    10 masks, 5 ball outlines, 5 trails."""
    def enough(got: list[Received]) -> bool:
        annotations = [r.message for r in got if r.topic == "/front/annotations"]
        return ({r.topic for r in got} >= topics
                and sum(r.topic == "/front/mask" for r in got) >= 10
                and sum(t.text.startswith("ball") for a in annotations for t in a.texts) >= 5
                and sum(pa.type == 3 for a in annotations for pa in a.points) >= 5)
    return enough


@pytest.mark.parametrize("protocols", ["legacy", "both"])
def test_foxglove_channels_carry_the_results_of_the_zeromq_stream(tmp_path, start_daemon,
                                                                  protocols):
    """`legacy`: the subprotocol @foxglove/ws-protocol, Lichtblick and older Foxglove
    offer (foxglove.websocket.v1 only); `both`: the SDK's name first, as Foxglove does."""
    port = free_port()
    cfg = _config(tmp_path, port)
    col = ZmqCollector(f"ipc://{tmp_path}/pub.sock")
    d = start_daemon(cfg)
    d.wait_for("ready")
    topics = {f"/front/{c}" for c in CHANNELS} | {"/edged/stats"}
    chosen: list[str] = []
    channels, got = asyncio.run(collect(
        f"ws://127.0.0.1:{port}", topics, 120.0, until=_enough(topics), chosen=chosen,
        **({"protocols": LEGACY} if protocols == "legacy" else {})))
    assert d.terminate()[0] == 0
    col.stop(eos=1)
    zmq_msgs = col.by_capture
    # the server answered with a name the client offered
    assert chosen == (["foxglove.websocket.v1"] if protocols == "legacy" else
                      ["foxglove.sdk.v1"])
    # every channel advertised with its Foxglove schema
    schemas = {t: c["schemaName"] for t, c in channels.items()}
    assert schemas["/front/image"] == schemas["/front/mask_color"] \
        == "foxglove.CompressedImage"
    assert schemas["/front/mask"] == "foxglove.RawImage"
    assert schemas["/front/annotations"] == "foxglove.ImageAnnotations"
    # the stats: one named schema whose cameras have properties a viewer can offer
    stats_ch = channels["/edged/stats"]
    assert (stats_ch["encoding"], stats_ch["schemaName"], stats_ch["schemaEncoding"]) \
        == ("json", "edged.Stats", "jsonschema")
    cams = json.loads(stats_ch["schema"])["properties"]["cameras"]
    assert {"processed_fps", "e2e_ms", "drops"} <= set(
        cams["properties"]["front"]["properties"])
    assert cams["additionalProperties"] == cams["properties"]["front"]
    # no channel without a schema (a viewer reports those as errors)
    assert all(c.get("schemaName") and c.get("schemaEncoding") for c in channels.values()), \
        channels
    by_topic: dict[str, list] = {t: [r for r in got if r.topic == t] for t in topics}
    for t in topics:
        assert by_topic[t], (t, [r.topic for r in got])
    # each result: the same capture time on both outputs, as log time and in the message
    checked = 0
    for r in by_topic["/front/mask"]:
        ts = r.message.timestamp
        t_ns = ts.seconds * 1_000_000_000 + ts.nanos
        assert r.log_time_ns == t_ns
        zm = zmq_msgs.get(t_ns)
        if zm is None:
            continue  # before the ZeroMQ subscription took
        mask = np.frombuffer(r.message.data, np.uint8).reshape(r.message.height,
                                                               r.message.width)
        assert (r.message.width, r.message.height, r.message.encoding, r.message.step) \
            == (640, 480, "mono8", 640)
        assert r.message.frame_id == "front"
        # class ids at camera resolution: exactly the ZeroMQ mask scaled by its rule
        assert np.array_equal(mask, zm.mask_camera())
        # and the scene: the field where the ground truth says field
        gt = synth.render(SEED, zm.seq, 640, 480)
        inter = ((mask == FIELD) & (gt.segmentation == FIELD)).sum()
        union = ((mask == FIELD) | (gt.segmentation == FIELD)).sum()
        assert inter / union > 0.9, (zm.seq, inter / union)
        checked += 1
    assert checked >= 5, (checked, len(by_topic["/front/mask"]), len(zmq_msgs))
    ball_checked = trailed = 0
    for r in by_topic["/front/annotations"]:
        ts = r.message.timestamp
        zm = zmq_msgs.get(ts.seconds * 1_000_000_000 + ts.nanos)
        if zm is None:
            continue
        # one outline and one label per detection, at the ZeroMQ boxes (float32 exact),
        # the label with the track id; before them, a trail per track with a past, ending
        # at its box's centre
        assert zm.track_ids is not None
        outlines = [pa for pa in r.message.points if pa.type == 2]  # LINE_LOOP
        trails = [pa for pa in r.message.points if pa.type == 3]  # LINE_STRIP
        assert len(outlines) + len(trails) == len(r.message.points)
        assert len(outlines) == len(r.message.texts) == len(zm.boxes)
        for pa, box, text, cid, score, tid in zip(outlines, zm.boxes, r.message.texts,
                                                  zm.class_ids, zm.scores, zm.track_ids):
            xs = np.array([p.x for p in pa.points], np.float32)
            ys = np.array([p.y for p in pa.points], np.float32)
            assert np.array_equal([xs.min(), ys.min(), xs.max(), ys.max()], box)
            name = zm.class_names[cid]
            assert text.text == (f"{name} #{tid} {score:.2f}" if tid else f"{name} {score:.2f}")
        centres = {((float(b[0]) + float(b[2])) / 2, (float(b[1]) + float(b[3])) / 2)
                   for b, tid in zip(zm.boxes, zm.track_ids) if tid}
        assert len(trails) <= len(centres)
        for pa in trails:
            end = pa.points[-1]
            assert any(abs(end.x - x) < 0.01 and abs(end.y - y) < 0.01 for x, y in centres)
        trailed += len(trails)
        gt = synth.render(SEED, zm.seq, 640, 480)
        gt_balls = [b for b, c in zip(gt.boxes, gt.classes) if c == 0]
        ours = [b for b, c in zip(zm.boxes, zm.class_ids) if zm.class_names[c] == "ball"]
        if gt_balls and ours:
            g, o = gt_balls[0], ours[0]
            iw = max(0.0, min(g[2], o[2]) - max(g[0], o[0]))
            ih = max(0.0, min(g[3], o[3]) - max(g[1], o[1]))
            inter = iw * ih
            iou = inter / ((g[2] - g[0]) * (g[3] - g[1]) + (o[2] - o[0]) * (o[3] - o[1])
                           - inter)
            assert iou > 0.5, (zm.seq, g, o)
            ball_checked += 1
    assert ball_checked >= 3, ball_checked
    assert trailed >= 3, trailed
    for r in by_topic["/front/image"][:5]:
        ts = r.message.timestamp
        zm = zmq_msgs.get(ts.seconds * 1_000_000_000 + ts.nanos)
        assert r.message.format == "jpeg"
        img = cv2.imdecode(np.frombuffer(r.message.data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (480, 640, 3)
        if zm is not None:  # the camera's frame itself
            gt = synth.render(SEED, zm.seq, 640, 480).image
            assert cv2.PSNR(img, gt) > 28, zm.seq
    # the colour mask: a PNG, each pixel the view's colour of the class id beside it
    masks = {r.log_time_ns: r.message for r in by_topic["/front/mask"]}
    coloured = 0
    for r in by_topic["/front/mask_color"]:
        ids = masks.get(r.log_time_ns)
        if ids is None:
            continue
        assert (r.message.format, r.message.frame_id) == ("png", "front")
        bgr = cv2.imdecode(np.frombuffer(r.message.data, np.uint8), cv2.IMREAD_COLOR)
        ids = np.frombuffer(ids.data, np.uint8).reshape(480, 640)
        want = np.zeros((480, 640, 3), np.uint8)
        for c, name in enumerate(zm_any(zmq_msgs).mask_classes):
            if name != "background":
                want[ids == c] = mask_colour(c)
        assert np.array_equal(bgr, want)
        coloured += 1
    assert coloured >= 5, coloured
    stats = by_topic["/edged/stats"][-1].message
    assert stats["cameras"]["front"]["state"] == "running"
    print(f"foxglove: {checked} masks and {ball_checked} ball boxes checked against the "
          f"ground truth")


def _decoded(msg: Any) -> Any:
    """An SDK message as protobuf decodes it from its own schema (what a viewer sees)."""
    schema = type(msg).get_schema()
    return _message_class(schema.name, base64.b64encode(bytes(schema.data)).decode()) \
        .FromString(msg.encode())


def zm_any(msgs: dict) -> Any:
    return next(iter(msgs.values()))


def test_labels_are_placed_where_the_view_draws_them():
    """Foxglove's TextAnnotation.position is the label's bottom-left corner; the band the
    view fills behind a label must start there and be font_size tall, for a box in the
    open (label above it) and one touching the image's top (label below it)."""
    overlay = Overlay()
    checked = 0
    for seq in range(12):
        r = make_result(seq=seq, n_det=1)
        if seq % 2:  # touching the top: no room above, so the view puts it below
            b = r.detections.boxes
            b[:, 3] -= b[:, 1] - 1
            b[:, 1] = 1
        frame = Frame("cam1", seq, np.full((480, 640, 3), 90, np.uint8), 0, 0)
        drawn = overlay.draw(frame, r)
        ann = _decoded(messages.image_annotations(r))
        (text,), (outline,) = ann.texts, ann.points
        x, bottom = int(text.position.x), int(text.position.y)
        top = bottom - int(text.font_size)
        colour = box_colour(int(r.detections.class_ids[0]))
        # the band's corners (inside, beside the text) are the box colour, rows top..bottom-1
        assert tuple(drawn[bottom - 1, x + 1]) == colour, (seq, x, bottom)
        assert tuple(drawn[top, x + 1]) == colour, (seq, x, top)
        assert tuple(drawn[bottom, x + 1]) != colour or tuple(drawn[top - 1, x + 1]) != colour
        y1, y2 = float(r.detections.boxes[0, 1]), float(r.detections.boxes[0, 3])
        # above the box's top edge, or (at the image's top) below its bottom edge
        assert (top < y1 < bottom + 8) if seq % 2 == 0 else (top >= y2), (seq, top, y1, y2)
        assert outline.thickness == 2.0  # as the view's outline at 640x480
        checked += 1
    assert checked == 12


def test_a_channel_is_encoded_only_while_subscribed(tmp_path, start_daemon):
    port = free_port()
    # nobody connected: nothing is encoded
    d = start_daemon(_config(tmp_path, port))
    d.wait_for("ready")
    # two stats intervals of results (the daemon's stats lines) with nobody connected
    wait_until("two stats intervals", lambda: processed_intervals(d.log(), "front") >= 2)
    assert d.terminate()[0] == 0
    assert _encoded(d.log()) == dict.fromkeys((*CHANNELS, "stats"), 0), d.log()
    # a client of the mask only: the mask is encoded, the image (JPEG) never
    d = start_daemon(_config(tmp_path, port))
    d.wait_for("ready")
    # 10 masks: results processed while subscribed, in which the image was never asked for
    _, got = asyncio.run(collect(f"ws://127.0.0.1:{port}", {"/front/mask"}, 60.0, want=10))
    assert d.terminate()[0] == 0
    n = _encoded(d.log())
    assert n["image"] == n["mask_color"] == n["annotations"] == n["stats"] == 0, n
    assert n["mask"] >= len(got) >= 10, (n, len(got))


def test_foxglove_config_errors_and_check_parity(tmp_path):
    cfg = _config(tmp_path, free_port())
    text = cfg.read_text()
    cfg.write_text(text.replace("listen: 127.0.0.1:", "listen: 0.0.0.0:"))
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 1 and "has no authentication" in p.stderr, p.stderr
    cfg.write_text(text.replace("listen: 127.0.0.1:", "listen: 0.0.0.0:")
                   + "  allow_remote: true\n")
    assert run_cli("check", "-c", str(cfg)).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = _config(tmp_path, port)
        p = run_cli("check", "-c", str(cfg))
        want = f"cannot listen on foxglove.listen 127.0.0.1:{port}: Address already in use"
        assert p.returncode == 1 and want in p.stderr, p.stderr
        r = run_cli("run", "-c", str(cfg), "--frames", "1")
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert "Traceback" not in p.stderr + r.stderr
    p = run_cli("check", "-c", str(_config(tmp_path, free_port())))
    assert p.returncode == 0 and "foxglove: ws://127.0.0.1:" in p.stdout
    p = run_cli("check", "-c", str(_config(tmp_path, free_port(), client_backlog=0)))
    assert p.returncode == 1 and "foxglove.client_backlog" in p.stderr, p.stderr


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


def test_a_stalled_client_costs_its_backlog_only(tmp_path, start_daemon):
    """A client that subscribes to everything and stops reading: the daemon keeps at most
    `client_backlog` messages for it (judged by traffic, not time: while another client
    counts 40 MB of the same channels, the daemon may grow by a fraction of that; with
    the SDK's old default of 1024 it grew by all of it), says so in one WARNING, and
    nobody's disconnect is an ERROR. The other client keeps receiving."""
    port = free_port()
    cfg = _config(tmp_path, port, client_backlog=16)
    cfg.write_text(cfg.read_text().replace("fps: 10", "fps: 15"))
    d = start_daemon(cfg)
    d.wait_for("ready")
    stalled = StalledClient("127.0.0.1", port)
    assert {c["topic"] for c in stalled.channels} >= {f"/front/{c}" for c in CHANNELS}
    d.wait_for("has taken nothing", timeout=60)  # its queues are full from here on
    rss_before = _rss_mb(d.proc.pid)
    got = asyncio.run(count(f"ws://127.0.0.1:{port}", 40_000_000, 240.0))
    rss_stalled = _rss_mb(d.proc.pid)
    stalled.close()
    d.wait_for("left after", timeout=20)
    assert d.terminate()[0] == 0
    log = d.log()
    assert got.bytes >= 40_000_000, (got.bytes, got.messages)
    grew = rss_stalled - rss_before
    print(f"stalled client: daemon RSS {rss_before:.0f} -> {rss_stalled:.0f} MB while "
          f"another client read {got.bytes / 1e6:.0f} MB ({got.messages})")
    assert grew < 0.4 * got.bytes / 1e6, (grew, got.bytes)
    # the reading client got the masks of the stall's time, in order, most of them
    assert got.messages and got.messages["/front/mask"] >= 50
    times = got.log_times["/front/mask"] if got.log_times else []
    assert times == sorted(times)
    assert log.count("has taken nothing") == 1, log
    assert " ERROR " not in log and "Traceback" not in log, log
    assert re.search(r"foxglove: clients: 2 \(2 with foxglove.websocket.v1\), 1 stalled",
                     log), log


TLS_CERT = Path(__file__).parents[1] / "data" / "tls-test.crt"  # self-signed for 127.0.0.1
TLS_KEY = Path(__file__).parents[1] / "data" / "tls-test.key"


def test_foxglove_over_tls(tmp_path, start_daemon):
    import ssl

    port = free_port()
    cfg = _config(tmp_path, port, tls={"cert_file": str(TLS_CERT),
                                        "key_file": str(TLS_KEY)})
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 0 and f"foxglove: wss://127.0.0.1:{port}: bound OK" in p.stdout
    d = start_daemon(cfg)
    d.wait_for("Foxglove WebSocket server on wss://")
    trusted = ssl.create_default_context(cafile=str(TLS_CERT))
    _, got = asyncio.run(collect(f"wss://127.0.0.1:{port}", {"/front/mask"}, 10.0, want=3,
                                 ssl=trusted))
    assert len(got) >= 3
    # and the legacy subprotocol name over TLS too (TLS ends at the relay)
    chosen: list[str] = []
    _, got = asyncio.run(collect(f"wss://127.0.0.1:{port}", {"/front/mask"}, 10.0, want=3,
                                 ssl=trusted, protocols=LEGACY, chosen=chosen))
    assert len(got) >= 3 and chosen == ["foxglove.websocket.v1"]
    # the configured certificate is the one served: a client without it refuses
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        asyncio.run(collect(f"wss://127.0.0.1:{port}", {"/front/mask"}, 2.0))
    # and plain ws:// gets no connection
    with pytest.raises(aiohttp.ClientError):
        asyncio.run(collect(f"ws://127.0.0.1:{port}", {"/front/mask"}, 2.0))
    assert d.terminate()[0] == 0
    # a key that is not the certificate's: check and run fail alike, naming the key
    cfg.write_text(cfg.read_text().replace(f"key_file: {TLS_KEY}", f"key_file: {TLS_CERT}"))
    p = run_cli("check", "-c", str(cfg))
    r = run_cli("run", "-c", str(cfg), "--frames", "1")
    want = "foxglove.tls: "
    assert p.returncode == r.returncode == 1, (p.stderr, r.stderr)
    assert want in p.stderr and "are not a PEM certificate and its private key" in p.stderr
    assert want in r.stderr and "Traceback" not in p.stderr + r.stderr


def test_the_relay_rewrites_only_a_legacy_only_handshake():
    from edged.outputs.foxglove.relay import offered_protocols, rewrite_request, rewrite_response

    def req(*protocol_lines: str) -> bytes:
        return ("GET / HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\n"
                + "".join(f"{ln}\r\n" for ln in protocol_lines)
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()

    legacy = req("sec-websocket-protocol: foxglove.websocket.v1")
    out, rewritten = rewrite_request(legacy)
    assert rewritten and offered_protocols(out) == [b"foxglove.sdk.v1"]
    assert out.endswith(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    # split over two headers, with another name: still only the SDK's name goes on
    out, rewritten = rewrite_request(req("Sec-WebSocket-Protocol: x.y",
                                         "Sec-WebSocket-Protocol: foxglove.websocket.v1"))
    assert rewritten and offered_protocols(out) == [b"foxglove.sdk.v1"]
    # an SDK name offered (Foxglove offers both): untouched, the SDK chooses
    both = req("Sec-WebSocket-Protocol: foxglove.websocket.v1, foxglove.sdk.v1")
    assert rewrite_request(both) == (both, False)
    # nothing Foxglove offered: untouched, the SDK refuses it as it would
    assert rewrite_request(req("Sec-WebSocket-Protocol: chat"))[1] is False
    assert rewrite_request(req())[1] is False
    answer = (b"HTTP/1.1 101 Switching Protocols\r\nsec-websocket-protocol: foxglove.sdk.v1"
              b"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    assert rewrite_response(answer) == answer.replace(b"foxglove.sdk.v1",
                                                      b"foxglove.websocket.v1")
