"""The live view: overlay pixels, the server's rules (cost, rate, token, origin), the
config/check parity, and the page in a real headless Chromium against the synthetic
scene's ground truth."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from browser import Browser, find_chromium
from configfile import daemon_config, synthetic
from conftest import free_port
from daemonlog import processed_intervals
from daemonrun import run_cli, wait_until

from edged import synth
from edged.outputs.base.draw import MASK_ALPHA, Overlay, box_colour, mask_colour
from edged.results import Detections, Frame, Result

REPO = Path(__file__).resolve().parents[2]
SEED = 3
BALL_SEED = 9  # a scene whose ball is in view for much of its first 600 frames
BALL, FIELD = 0, 2  # synth classes: detections 0 ball; segmentation 2 field


def _config(tmp_path: Path, port: int, cameras: dict[str, int], *, fps: float = 10,
            view: dict[str, Any] | None = None, stats_s: float = 1.0) -> Path:
    return daemon_config(tmp_path, {name: synthetic(seed, fps=fps)
                                    for name, seed in cameras.items()},
                         name="view.yaml", stats_s=stats_s,
                         view={"listen": f"127.0.0.1:{port}", **(view or {})})


def _frame_header(data: bytes) -> dict:
    n = struct.unpack(">I", data[:4])[0]
    return json.loads(data[4:4 + n])


async def _get(url: str, **kw) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, await r.text()


async def _status(port: int) -> dict:
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{port}/api/status") as r:
        return await r.json()


async def _watch(port: int, seconds: float, watch: list[str] | None = None,
                 query: str = "", scheme: str = "http", ssl: Any = True,
                 until: Callable[[list[dict], list[dict]], bool] | None = None
                 ) -> tuple[list[dict], list[dict]]:
    """Frame headers and text messages a viewer gets in `seconds`, or until
    `until(frames, texts)` holds (then `seconds` is only a ceiling)."""
    frames: list[dict] = []
    texts: list[dict] = []
    async with aiohttp.ClientSession() as s, \
            s.ws_connect(f"{scheme}://127.0.0.1:{port}/ws{query}", ssl=ssl) as ws:
        if watch is not None:
            await ws.send_str(json.dumps({"watch": watch}))
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append(_frame_header(msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                texts.append(json.loads(msg.data))
            else:
                break
            if until is not None and until(frames, texts):
                break
    return frames, texts


# ---------------------------------------------------------------- overlay


def test_overlay_blends_class_colours_and_outlines_boxes():
    scene = synth.render(SEED, 5, 320, 240)
    frame = Frame("cam", 5, scene.image, 0, 0)
    box = np.array([[40.0, 50.0, 120.0, 110.0]], np.float32)
    res = Result("cam", 5, 0, 0, 320, 240, Detections(box, np.array([0.9], np.float32),
                                                      np.array([BALL], np.int32)),
                 ("ball", "goalpost", "robot"), scene.segmentation,
                 ("background", "lines", "field"), None)
    before = scene.image.copy()
    out = Overlay().draw(frame, res)
    assert np.array_equal(scene.image, before)  # the camera's frame is not touched
    seg = scene.segmentation
    inside = np.zeros_like(seg, bool)
    inside[25:125, 30:135] = True  # the box, its outline and its label above it
    for cls in (1, 2):  # lines and field: the frame blended with the class colour
        sel = (seg == cls) & ~inside
        want = (scene.image[sel] * (1 - MASK_ALPHA)
                + np.array(mask_colour(cls)) * MASK_ALPHA)
        assert np.abs(out[sel].astype(float) - want).max() <= 1.0, cls
    bg = (seg == 0) & ~inside
    assert bg.any() and np.array_equal(out[bg], scene.image[bg])  # background left clear
    # the box outline in the ball's colour on all four sides
    red = np.array(box_colour(BALL))
    for y, x in ((80, 40), (80, 120), (110, 80), (50, 100)):
        assert np.abs(out[y, x].astype(int) - red).max() <= 40, (y, x, out[y, x])


def test_overlay_tints_instance_masks_inside_their_boxes():
    img = np.full((60, 80, 3), 100, np.uint8)
    frame = Frame("cam", 0, img, 0, 0)
    inst = np.zeros((20, 30), np.uint8)
    inst[5:15, 5:25] = 1
    det = Detections(np.array([[10.0, 10.0, 40.0, 30.0]], np.float32),
                     np.array([0.8], np.float32), np.array([1], np.int32), [inst])
    res = Result("cam", 0, 0, 0, 80, 60, det, ("a", "b"), None, (), None)
    out = Overlay().draw(frame, res)
    want = np.round(100 * (1 - MASK_ALPHA) + np.array(box_colour(1)) * MASK_ALPHA)
    assert np.abs(out[20, 25].astype(float) - want).max() <= 1.0
    assert np.array_equal(out[14, 30], img[14, 30])  # in the box, outside the instance


# ---------------------------------------------------------------- server rules


def test_view_costs_nothing_unwatched_and_sends_at_most_view_fps(tmp_path, start_daemon):
    port = free_port()
    cfg = _config(tmp_path, port, {"a": 0, "b": 1}, fps=15, view={"fps": 4})
    d = start_daemon(cfg)
    d.wait_for("ready")
    d.wait_for("view on http://127.0.0.1")
    # two stats intervals of results with nobody watching
    wait_until("two stats intervals", lambda: processed_intervals(d.log(), "a") >= 2)
    st = asyncio.run(_status(port))
    assert st == {"viewers": 0, "rendered": {}, "sent": 0, "skipped": 0}, st
    # a viewer of camera b only (chosen when it connects): b is drawn, a never is
    def b_running(frames: list[dict], texts: list[dict]) -> bool:
        return bool(frames) and any(t["type"] == "stats" and t["cameras"].get("b", {}).get(
            "state") == "running" for t in texts)

    t0 = time.monotonic()
    frames, texts = asyncio.run(_watch(port, 60.0, query="?watch=b", until=b_running))
    watched_s = time.monotonic() - t0
    assert texts and texts[0]["type"] == "hello" and set(texts[0]["cameras"]) == {"a", "b"}
    assert frames and {f["camera"] for f in frames} == {"b"}, frames
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs))
    st = asyncio.run(_status(port))
    assert "a" not in st["rendered"], st
    # at most view.fps per camera (the camera makes 15): the sink draws a frame at most
    # every 1/fps s, so a window of watched_s holds at most watched_s x 4 of them, and one
    # more at its edge
    assert len(frames) <= watched_s * 4 + 1, (len(frames), watched_s)
    assert all(f["width"] == 640 and f["height"] == 480 for f in frames)
    # stats reach the viewer once a second, typed from the daemon's own `_stats`
    stats = [t for t in texts if t["type"] == "stats"]
    assert stats and stats[-1]["cameras"]["b"]["state"] == "running", texts
    assert stats[-1]["cameras"]["b"]["variant"] == "yoeo-demo-int8"
    # a viewer that changes its choice with a message (the page does, on a click) gets
    # the camera it now watches
    switched, _ = asyncio.run(_watch(port, 60.0, watch=["a"], query="?watch=b",
                                     until=lambda f, _: any(x["camera"] == "a" for x in f)))
    assert "a" in {f["camera"] for f in switched}, switched
    # the viewer has gone: nothing is drawn any more
    end = time.monotonic() + 60
    while (n1 := asyncio.run(_status(port)))["viewers"] and time.monotonic() < end:
        time.sleep(0.1)
    # two stats intervals of results in which nothing may be drawn
    seen = processed_intervals(d.log(), "a")
    wait_until("two more stats intervals",
               lambda: processed_intervals(d.log(), "a") >= seen + 2)
    n2 = asyncio.run(_status(port))
    assert n1["viewers"] == n2["viewers"] == 0
    assert n1["rendered"] == n2["rendered"], (n1, n2)
    code, _ = d.terminate()
    assert code == 0
    assert "sink view: delivered" in d.log()


def test_view_token_host_and_origin_rules(tmp_path, start_daemon):
    port = free_port()
    token = "0123456789abcdef0123"
    cfg = _config(tmp_path, port, {"a": 0}, view={"token": "${EDGED_TEST_TOKEN}"})
    os.environ["EDGED_TEST_TOKEN"] = token
    try:
        d = start_daemon(cfg)
        d.wait_for("view on http://127.0.0.1")
    finally:
        del os.environ["EDGED_TEST_TOKEN"]
    base = f"http://127.0.0.1:{port}"
    status, text = asyncio.run(_get(base + "/"))
    assert status == 401 and "needs its token" in text
    assert asyncio.run(_get(base + "/?token=wrong-token-wrong-token"))[0] == 401
    status, text = asyncio.run(_get(base + f"/?token={token}"))
    assert status == 200 and "edged view" in text
    assert asyncio.run(_get(base + "/api/status",
                            headers={"Authorization": f"Bearer {token}"}))[0] == 200
    assert asyncio.run(_get(base + "/ws"))[0] == 401
    frames, _ = asyncio.run(_watch(port, 60.0, query=f"?token={token}",
                                   until=lambda f, _: bool(f)))
    assert frames

    async def cross_origin() -> int:
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(f"{base}/ws?token={token}",
                                        headers={"Origin": "http://evil.example"}):
                    return 101
            except aiohttp.WSServerHandshakeError as e:
                return e.status
    assert asyncio.run(cross_origin()) == 403
    assert d.terminate()[0] == 0


TLS_CERT = REPO / "tests" / "data" / "tls-test.crt"  # self-signed for 127.0.0.1
TLS_KEY = REPO / "tests" / "data" / "tls-test.key"


def test_view_over_tls(tmp_path, start_daemon):
    import ssl

    port = free_port()
    token = "0123456789abcdef0123"
    cfg = _config(tmp_path, port, {"a": 0}, view={"token": token, "tls": {
        "cert_file": str(TLS_CERT), "key_file": str(TLS_KEY)}})
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 0 and f"view: https://127.0.0.1:{port}/: bound OK" in p.stdout
    d = start_daemon(cfg)
    d.wait_for("view on https://127.0.0.1")
    base = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(TLS_CERT))
    status, text = asyncio.run(_get(base + f"/?token={token}", ssl=trusted))
    assert status == 200 and "edged view" in text
    frames, _ = asyncio.run(_watch(port, 60.0, query=f"?token={token}", scheme="https",
                                   until=lambda f, _: bool(f),
                                   ssl=trusted))
    assert frames  # the stream is wss://, as the page opens it on an https page
    # the configured certificate is the one served: a client without it refuses
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        asyncio.run(_get(base + "/"))
    # plain http on the port: no page (the token never travels in clear)
    with pytest.raises(aiohttp.ClientError):
        asyncio.run(_get(f"http://127.0.0.1:{port}/?token={token}"))
    assert d.terminate()[0] == 0
    # a missing file: check and run fail alike, naming the key and the file
    cfg.write_text(cfg.read_text().replace(str(TLS_KEY), str(tmp_path / "gone.key")))
    p = run_cli("check", "-c", str(cfg))
    r = run_cli("run", "-c", str(cfg), "--frames", "1")
    want = f"view.tls: cannot read {tmp_path / 'gone.key'}: No such file or directory"
    assert p.returncode == r.returncode == 1, (p.stderr, r.stderr)
    assert want in p.stderr and want in r.stderr, (p.stderr, r.stderr)
    assert "Traceback" not in p.stderr + r.stderr


def test_view_without_token_refuses_a_foreign_host_header(tmp_path, start_daemon):
    port = free_port()
    d = start_daemon(_config(tmp_path, port, {"a": 0}))
    d.wait_for("view on http://127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    assert asyncio.run(_get(base + "/"))[0] == 200
    # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1
    status, text = asyncio.run(_get(base + "/", headers={"Host": f"evil.example:{port}"}))
    assert status == 403 and "Host" in text
    assert asyncio.run(_get(base + "/", headers={"Host": f"localhost:{port}"}))[0] == 200
    assert d.terminate()[0] == 0


def test_view_config_errors_and_check_parity(tmp_path):
    cfg = _config(tmp_path, free_port(), {"a": 0})
    text = cfg.read_text()
    cfg.write_text(text.replace("listen: 127.0.0.1:", "listen: 0.0.0.0:"))
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 1
    assert "view.listen '0.0.0.0:" in p.stderr and "set view.token" in p.stderr, p.stderr
    cfg.write_text(text + "  token: short\n")
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 1 and "a view token needs at least 16 characters" in p.stderr
    # a port in use: check fails, and run fails the same way before READY
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = _config(tmp_path, port, {"a": 0})
        p = run_cli("check", "-c", str(cfg))
        assert p.returncode == 1
        assert f"cannot listen on view.listen 127.0.0.1:{port}: Address already in use" \
            in p.stderr, p.stderr
        r = run_cli("run", "-c", str(cfg), "--frames", "1")
        assert r.returncode == 1 and f"view.listen 127.0.0.1:{port}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr + p.stderr
    p = run_cli("check", "-c", str(_config(tmp_path, free_port(), {"a": 0})))
    assert p.returncode == 0 and "view: http://127.0.0.1:" in p.stdout, p.stderr


# ---------------------------------------------------------------- the page in a browser


def _box_red(img: np.ndarray) -> np.ndarray:
    """Pixels of the ball's box colour (pure red; the robots' red is duller)."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    want = box_colour(BALL)
    return (np.abs(b - want[0]) < 45) & (np.abs(g - want[1]) < 45) & (r > 215)


def _ball_outlined(shot: np.ndarray, box: np.ndarray) -> bool:
    """A red line along each of the four sides of the ground-truth ball box (the model's
    box is near it, not on it: each side is looked for within a margin)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    m = max(6.0, 0.35 * max(x2 - x1, y2 - y1))
    h, w = shot.shape[:2]
    red = _box_red(shot)

    def rows(ya: float, yb: float, xa: float, xb: float) -> np.ndarray:
        return red[max(int(ya), 0):min(int(yb) + 1, h), max(int(xa), 0):min(int(xb) + 1, w)]

    # the middle 40% of each side, where neither the label nor a corner is
    cx1, cx2 = x1 + 0.3 * (x2 - x1), x2 - 0.3 * (x2 - x1)
    cy1, cy2 = y1 + 0.3 * (y2 - y1), y2 - 0.3 * (y2 - y1)
    top, bottom = rows(y1 - m, y1 + m / 2, cx1, cx2), rows(y2 - m / 2, y2 + m, cx1, cx2)
    left, right = rows(cy1, cy2, x1 - m, x1 + m / 2), rows(cy1, cy2, x2 - m / 2, x2 + m)
    # a line: one row (column) of the band red over most of its length
    return (top.size > 0 and top.mean(axis=1).max() > 0.8
            and bottom.size > 0 and bottom.mean(axis=1).max() > 0.8
            and left.size > 0 and left.mean(axis=0).max() > 0.8
            and right.size > 0 and right.mean(axis=0).max() > 0.8)


needs_browser = pytest.mark.skipif(
    find_chromium() is None and not os.environ.get("EDGED_REQUIRE_BROWSER"),
    reason="no Chromium here (.ci/run installs it and sets EDGED_REQUIRE_BROWSER)")


@needs_browser
def test_the_page_shows_the_field_the_ball_box_and_the_figures(tmp_path, start_daemon):
    port = free_port()
    d = start_daemon(_config(tmp_path, port, {"front": BALL_SEED}, fps=15))
    d.wait_for("ready")
    browser = Browser(tmp_path / "chromium")
    try:
        browser.navigate(f"http://127.0.0.1:{port}/#camera=front")
        browser.wait_until("Number(document.body.dataset.frames) >= 3")
        browser.wait_until("document.body.dataset.stats === '1'")
        text = browser.evaluate("document.body.innerText")
        for want in ("front", "running", "capture", "processed", "fps", "e2e p50", "p99",
                     "overwritten", "stale", "yoeo-demo-int8", "field", "lines", "ball",
                     "goalpost", "robot"):
            assert want in text, (want, text)
        assert browser.evaluate("getComputedStyle(document.querySelector('#conn')).color")
        # the frames whose ground truth has a ball well inside the image
        def ball(seq: int) -> np.ndarray | None:
            gt = synth.render(BALL_SEED, seq, 640, 480)
            for bx, c in zip(gt.boxes, gt.classes):
                if c == BALL and min(bx[2] - bx[0], bx[3] - bx[1]) >= 14 and bx[0] > 20 \
                        and bx[1] > 30 and bx[2] < 620 and bx[3] < 460:
                    return bx
            return None
        with_ball = {s for s in range(600) if ball(s) is not None}
        assert len(with_ball) > 100
        outlined, tried, fields = False, 0, 0
        shown_seq = "Number(document.querySelector('[data-camera=front] img').dataset.seq)"
        end = time.monotonic() + 120
        while not outlined and tried < 12 and time.monotonic() < end:
            shown = int(browser.evaluate(shown_seq))
            if shown not in with_ball and fields >= 1:
                # the next frame, until the ball comes into view
                browser.wait_until(f"{shown_seq} !== {shown}", timeout=60)
                continue
            browser.evaluate("window.edgedView.freeze()")
            # what the image shows once it is held (decoded, on screen)
            seq, rect = browser.evaluate(
                "(async () => { const i = document.querySelector('[data-camera=front] img');"
                " await i.decode(); const r = i.getBoundingClientRect();"
                " return [Number(i.dataset.seq), [r.x, r.y, r.width, r.height]]; })()")
            shot, png = browser.screenshot()
            x, y, w, h = (int(round(v)) for v in rect)
            assert (w, h) == (640, 480), rect  # the single view shows camera pixels 1:1
            view = shot[y:y + h, x:x + w]
            gt = synth.render(BALL_SEED, seq, 640, 480)
            field = cv2.erode((gt.segmentation == FIELD).astype(np.uint8),
                              np.ones((9, 9), np.uint8)).astype(bool)
            assert field.sum() > 10000, seq
            b, g = view[..., 0].astype(int), view[..., 1].astype(int)
            tinted = ((b > g + 30) & field).sum() / field.sum()
            raw_b, raw_g = gt.image[..., 0].astype(int), gt.image[..., 1].astype(int)
            raw_tinted = ((raw_b > raw_g + 30) & field).sum() / field.sum()
            # the field in the field colour where the ground truth says field (and the
            # camera image alone is not)
            assert tinted > 0.85 and raw_tinted < 0.05, (seq, tinted, raw_tinted)
            fields += 1
            box = ball(seq)
            if box is not None:
                tried += 1
                # the camera image alone has no such lines: they are edged's
                assert not _ball_outlined(gt.image, box), seq
                if _ball_outlined(view, box):
                    outlined = True
                    (tmp_path / "view.png").write_bytes(png)
                    if os.environ.get("EDGED_VIEW_SCREENSHOT"):
                        Path(os.environ["EDGED_VIEW_SCREENSHOT"]).write_bytes(png)
                    break
                cv2.imwrite(str(tmp_path / f"miss-{seq}.png"), view)
            browser.evaluate("window.edgedView.unfreeze()")
            browser.wait_until(f"{shown_seq} !== {seq}", timeout=60)  # a fresh frame
        assert outlined, f"no ball box drawn around the ground-truth ball in {tried} frames " \
            f"with a ball ({fields} checked; see {tmp_path}/miss-*.png)"
    finally:
        browser.close()
    assert d.terminate()[0] == 0
