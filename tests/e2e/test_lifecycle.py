"""The daemon's lifecycle as systemd drives it: real `edged run` subprocesses, real
signals, real subscribers. Every stop must end in exit 0 with an end-of-stream for every
camera, within 5 s, whatever state the daemon is in when the signal arrives."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

from daemonrun import cams, count, write_config
from modelgen import stalling_yoeo_model

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, Message
from edged.wire.telemetry import Stats

STOP_S = 5.0


def slow_warmup_model(path: Path, iterations: int) -> Path:
    """Every frame (the warm-up's too) runs `iterations` 256^3 MatMuls: about 1.5-3 ms
    each here, so the model is warming up for as long as a test needs."""
    return stalling_yoeo_model(path, bright=-1.0, iterations=iterations)


class Collector:
    """A subscriber read all the time on its own thread, as a real consumer reads: a
    test that only waited would let its receive queue fill, and ZeroMQ would then drop
    what follows, end-of-stream included."""

    def __init__(self, endpoint: str) -> None:
        self.sub = Subscriber(endpoint, stats=True)
        self.got: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Collector:
        self.sub.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sub.__exit__(None, None, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self.sub.recv(timeout=0.1)
            if m is not None:
                with self._lock:
                    self.got.append(m)

    def messages(self) -> list:
        with self._lock:
            return list(self.got)

    def wait_subscribed(self) -> None:
        """Until a `_stats` message arrives: from then on nothing published is missed
        (PUB/SUB drops whatever is sent before the subscription reaches the socket)."""
        got = self.wait(lambda ms: any(isinstance(m, Stats) for m in ms))
        assert any(isinstance(m, Stats) for m in got), "no _stats message within 60 s"

    def wait_connected(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while not self.sub.handshakes:  # updated as the reading thread receives
            assert time.monotonic() < end, f"not connected within {timeout:g} s"
            time.sleep(0.05)

    def wait(self, pred, timeout: float = 60.0) -> list:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred(self.messages()):
            time.sleep(0.05)
        return self.messages()


def stop_and_collect(d, sub: Collector, cameras: set[str]) -> list[EndOfStream]:
    seen = len(sub.messages())  # what the stop publishes comes after these
    code, took = d.terminate(timeout=15)
    got = sub.wait(lambda ms: {m.camera for m in ms[seen:] if isinstance(m, EndOfStream)}
                   >= cameras)[seen:]
    log = d.log()
    assert code == 0, (code, log)
    assert took < STOP_S, (took, log)
    assert "Traceback" not in log, log
    eos = [m for m in got if isinstance(m, EndOfStream)]
    assert {m.camera for m in eos} == cameras, (eos, log)
    return eos


def test_sigterm_during_warmup_exits_0_with_end_of_stream_for_every_camera(tmp_path,
                                                                           start_daemon):
    model = slow_warmup_model(tmp_path / "slow.onnx", iterations=40000)  # ~60 s warm-up
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", model, [ep], cams(a=10, b=10))
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("configuration")
        # nothing is published before ready: wait until the subscriber has connected to
        # the socket bound before the load (its subscription goes out right behind the
        # handshake, long before the daemon has handled a signal sent after it)
        sub.wait_connected()
        assert "ready" not in d.log()
        eos = stop_and_collect(d, sub, {"a", "b"})
    assert all(m.reason == "shutdown" and m.last_seq == -1 for m in eos), eos
    assert "stopped before ready: end of stream published for 2 camera(s)" in d.log()


def test_sighup_during_warmup_is_applied_once_ready(tmp_path, start_daemon):
    model = slow_warmup_model(tmp_path / "slow.onnx", iterations=400)
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", model, [ep], cams(a=2))
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("configuration")
        write_config(cfg, model, [ep], cams(a=2, late=2))
        d.proc.send_signal(signal.SIGHUP)  # the model is still loading: not fatal
        d.wait_for("SIGHUP while starting", timeout=10)
        d.wait_for("reload done", timeout=60)
        assert "reload done: 1 camera(s) unchanged, 0 restarted, 1 added, 0 removed" in d.log()
        stop_and_collect(d, sub, {"a", "late"})


def test_sighup_during_a_reload_is_queued_and_the_last_file_wins(tmp_path, test_model,
                                                                  start_daemon):
    slow = slow_warmup_model(tmp_path / "slow.onnx", iterations=1500)  # seconds to warm
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], cams(a=10))
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        write_config(cfg, slow, [ep], cams(a=10, b=10))
        d.proc.send_signal(signal.SIGHUP)
        # the first reload has read the file once it loads the slow model: only then may
        # the second file be written (before, a fast reload could read the second file)
        d.wait_for("reload: loading model")
        # the second file is written while the first reload warms up the slow model
        write_config(cfg, test_model, [ep], cams(a=10, c=10))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("SIGHUP during a reload: reloading again when it is done")
        end = time.monotonic() + 60
        while d.log().count("reload done") < 2 and time.monotonic() < end:
            time.sleep(0.1)
        log = d.log()
        assert log.count("reload done") == 2, log
        # the last file runs: camera c publishes, b is gone again
        msgs = sub.wait(count("c", 3))
        assert sum(isinstance(m, Message) and m.camera == "c" for m in msgs) >= 3, log
        assert any(isinstance(m, EndOfStream) and m.camera == "b"
                   and m.reason == "removed by reload" for m in msgs) or \
            "camera b: end of stream published (removed by reload)" in d.log()
        stop_and_collect(d, sub, {"a", "c"})


def test_sigterm_during_a_reload_exits_0_with_end_of_stream_for_every_camera(
        tmp_path, test_model, start_daemon):
    slow = slow_warmup_model(tmp_path / "slow.onnx", iterations=40000)  # a minute to warm
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], cams(a=10, b=10))
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        sub.wait(lambda ms: count("a", 2)(ms) and count("b", 2)(ms))
        write_config(cfg, slow, [ep], cams(a=10, b=10, c=10))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("SIGHUP: reloading")
        d.wait_for("reload: loading model")  # the new model loads and warms on its thread
        assert "reload done" not in d.log()
        eos = stop_and_collect(d, sub, {"a", "b"})
    assert all(m.reason == "shutdown" for m in eos), eos
    assert "camera c" not in d.log()  # the reload was abandoned before any change


def test_sigterm_after_a_reload_that_changed_the_model_and_the_ladder(tmp_path,
                                                                     start_daemon):
    repo = Path(__file__).resolve().parents[2]
    cfg = tmp_path / "ladder.yaml"
    ep = f"ipc://{tmp_path}/e.sock"
    text = (repo / "configs" / "ladder.yaml").read_text()
    cfg.write_text(_with_endpoint(text, ep))
    cameras = _camera_names(cfg)
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready", timeout=60)
        # one value of the ladder edited: the model and its ladder are loaded anew
        edited = cfg.read_text().replace("down_after_s: 2", "down_after_s: 3", 1)
        assert edited != cfg.read_text()
        cfg.write_text(edited)
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("reload done", timeout=60)
        assert "reload: model" in d.log()
        seen = len(sub.messages())  # the ladder runs on the new model: results come
        sub.wait(lambda ms: sum(isinstance(m, Message) for m in ms[seen:]) >= 5)
        stop_and_collect(d, sub, cameras)


def test_stop_with_a_tiny_max_fps_is_prompt(tmp_path, test_model, start_daemon):
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep],
                       cams(slow=10) + "\n    max_fps: 0.05")
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        # a _stats message comes a second after ready: the first frame went through at
        # once, the camera now waits 20 s for its next slot
        sub.wait_subscribed()
        stop_and_collect(d, sub, {"slow"})
    assert "final slow: " in d.log() and ", 1 frames in " in d.log(), d.log()


def test_stop_during_reconnect_backoff(tmp_path, test_model, start_daemon):
    from conftest import free_port

    ep = f"ipc://{tmp_path}/e.sock"
    dead = f"http://127.0.0.1:{free_port()}/stream.mjpg"  # nobody listens: it backs off
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], cams(steady=10) + f"""
  ipcam:
    source: {dead}""")
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        d.wait_for("camera ipcam: reconnecting", timeout=20)
        msgs = sub.wait(count("steady", 2))  # the subscriber is connected
        assert any(isinstance(m, Message) for m in msgs), d.log()
        stop_and_collect(d, sub, {"steady", "ipcam"})


def test_a_reload_whose_model_fails_at_warmup_is_rejected(tmp_path, test_model,
                                                          start_daemon):
    # a manifest that says 320x320 for a 416x416 graph: the session loads, the first
    # inference fails
    bad = tmp_path / "bad.onnx"
    shutil.copy(test_model, bad)
    bad.with_suffix(".json").write_text(json.dumps({
        "format": "yoeo", "name": "bad", "input_name": "InputLayer",
        "preprocess": {"input_w": 320, "input_h": 320},
        "classes": ["ball", "goalpost", "robot"],
        "seg_classes": ["background", "lines", "field"]}))
    ep = f"ipc://{tmp_path}/e.sock"
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], cams(a=10))
    with Collector(ep) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        write_config(cfg, bad, [ep], cams(a=10))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("reload rejected")
        log = d.log()
        assert "the running model and configuration stay" in log, log
        seen = len(sub.messages())
        msgs = sub.wait(lambda ms: sum(isinstance(m, Message) and m.model == "yoeo-test"
                                       for m in ms[seen:]) >= 3)
        # still serving the old model
        assert sum(isinstance(m, Message) and m.model == "yoeo-test" for m in msgs[seen:]) >= 3
        stop_and_collect(d, sub, {"a"})


def _with_endpoint(text: str, ep: str) -> str:
    import yaml

    doc = yaml.safe_load(text)
    doc.setdefault("publish", {})["endpoints"] = [ep]
    path = doc["model"]["path"]
    if not str(path).startswith("builtin:") and not Path(path).is_absolute():
        doc["model"]["path"] = str(Path(__file__).resolve().parents[2] / "configs" / path)
    return yaml.safe_dump(doc, sort_keys=False)


def _camera_names(cfg: Path) -> set[str]:
    import yaml

    doc = yaml.safe_load(cfg.read_text())
    return {n for n, c in doc["cameras"].items() if (c or {}).get("enabled", True)}
