"""SIGHUP: the new config is applied without touching unchanged cameras; a bad one is
rejected with its errors logged while the old one keeps running."""

from __future__ import annotations

import signal
import time

from test_daemon import write_config

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message


def cams(**fps: float) -> str:
    return "\n".join(f"""\
  {name}:
    source: synthetic
    width: 160
    height: 120
    fps: {rate}""" for name, rate in fps.items())


def gather(sub: Subscriber, seconds: float, until=None, limit: float = 20.0) -> list:
    """Messages for `seconds`, or longer (up to `limit`) until `until(messages)` holds."""
    out: list = []
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if (elapsed >= seconds and (until is None or until(out))) or elapsed >= limit:
            return out
        m = sub.recv(timeout=0.1)
        if m is not None:
            out.append(m)


def count(camera: str, n: int):
    return lambda msgs: sum(isinstance(m, Message) and m.camera == camera for m in msgs) >= n


def test_sighup_applies_changes_and_keeps_unchanged_cameras(tmp_path, test_model, tcp_endpoint,
                                                            start_daemon):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(a=10, b=10))
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        before = [m for m in gather(sub, 1.0, until=count("a", 3)) if isinstance(m, Message)]
        write_config(cfg, test_model, [tcp_endpoint], cams(a=10, b=5, c=10))
        # the worker plan and batch size need a restart: said, and kept as running
        cfg.write_text(cfg.read_text().replace("  threads: 1\n", "  threads: 2\n  batch: 2\n"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("reload done")
        after = gather(sub, 2.0, until=lambda ms: count("a", 3)(ms) and count("c", 1)(ms))
        assert d.terminate()[0] == 0
    log = d.log()
    assert "reload done: 1 camera(s) unchanged, 1 restarted, 1 added, 0 removed" in log
    assert ("reload: model.threads, model.batch changed; restart edged to apply "
            "(kept as running)") in log
    assert "reload: model" not in log.replace("reload: model.threads", "")  # not reloaded
    eos = [m for m in after if isinstance(m, EndOfStream)]
    assert [(e.camera, e.reason) for e in eos] == [("b", "reconfigured")]
    res = [m for m in after if isinstance(m, Message)]
    a_before = [m.seq for m in before if m.camera == "a"]
    a_after = [m.seq for m in res if m.camera == "a"]
    # camera a was never restarted: its sequence numbers just continue
    assert a_before and a_after and a_after[0] > a_before[-1]
    # b restarted (sequence from 0 again) and c is new
    assert min(m.seq for m in res if m.camera == "b") < 5
    assert any(m.camera == "c" for m in res)


def test_sighup_with_a_bad_config_keeps_the_old_one(tmp_path, test_model, tcp_endpoint,
                                                    start_daemon):
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(a=10))
    with Subscriber(tcp_endpoint) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        gather(sub, 0.5)
        cfg.write_text(cfg.read_text().replace("fps: 10", "fps: -3\n    fsp: 2"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("reload rejected")
        after = gather(sub, 1.5, until=count("a", 5))
        assert d.terminate()[0] == 0
    log = d.log()
    assert "cfg.yaml:10: cameras.a.fps" in log and "did you mean 'fps'" in log
    assert not [m for m in after if isinstance(m, EndOfStream)]
    assert len([m for m in after if isinstance(m, Message) and m.camera == "a"]) >= 5


def test_network_camera_reconnects_and_states_go_on_the_bus(tmp_path, test_model,
                                                            tcp_endpoint, start_daemon,
                                                            mjpeg_server):
    from modelgen import painted_frame

    from edged.wire.telemetry import CameraState

    img, _ = painted_frame(160, 120)
    server = mjpeg_server(lambda i: img)
    port = int(server.url.split(":")[2].split("/")[0])
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(steady=10) + f"""
  ipcam:
    source: {server.url}""")
    with Subscriber(tcp_endpoint, states=True) as sub:
        d = start_daemon(cfg)
        d.wait_for("camera ipcam: running")
        gather(sub, 1.0, until=count("ipcam", 3))
        server.close()  # the camera's server goes away...
        d.wait_for("camera ipcam: reconnecting")
        msgs = gather(sub, 1.5)
        mjpeg_server(lambda i: img, port=port)  # ...and comes back on the same address
        msgs += gather(sub, 1.0, until=lambda ms: count("ipcam", 3)(ms) and any(
            isinstance(m, CameraState) and m.state == "running" for m in ms), limit=40)
        assert d.terminate()[0] == 0, d.log()
    states = [(m.camera, m.state) for m in msgs if isinstance(m, CameraState)]
    assert states.index(("ipcam", "reconnecting")) < states.index(("ipcam", "running")), (
        states, d.log())
    # the other camera never stopped: no end-of-stream, results all along
    assert not [m for m in msgs if isinstance(m, EndOfStream)]
    steady = [m.seq for m in msgs if isinstance(m, Message) and m.camera == "steady"]
    assert len(steady) >= 10 and steady == sorted(steady)
    log = d.log()
    assert log.count("camera ipcam: reconnecting") == 1  # once per state change
