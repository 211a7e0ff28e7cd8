"""The Triton provider (model.triton): config, `edged triton-repo`, the client against a
KServe-v2 double that misbehaves on cue, and against a real tritonserver (pytriton) over
gRPC, HTTP and system shared memory, down to a daemon whose server is killed and
restarted mid-stream. See tests/tritonkit/harness.py for what skips where."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edged.config import ConfigError, parse_config
from edged.inference.formats import TensorInfo
from edged.inference.runner import ModelOptions, ModelRunner
from edged.inference.triton.client import TritonError, check_tensors
from edged.inference.triton.config import TritonConfig
from edged.results import Frame
from edged.tools.triton_repo import RepoError, write_repo

sys.path.insert(0, str(Path(__file__).parents[1]))

from conftest import free_port  # noqa: E402
from modelgen import yoeo_model  # noqa: E402
from tritonkit.harness import (  # noqa: E402
    TOKEN,
    TOKEN_HEADER,
    KServeDouble,
    TritonServer,
    need_client,
)

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "edged" / "models" / "yoeo-demo-int8.onnx"
NAME = "yoeo-demo-int8"


def wait_until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def frames(n: int = 4) -> list[Frame]:
    """Scenes of the synthetic world (detections and field masks), as a camera gives."""
    from edged.synth import render

    return [Frame("front", i, render(3, i).image, 0, 0) for i in range(n)]


def local_runner() -> ModelRunner:
    return ModelRunner(ModelOptions(path=MODEL, warmup_runs=0))


def triton_runner(url: str, protocol: str = "grpc", timeout_s: float = 30.0, **kw: object):
    from edged.inference.triton.runner import TritonRunner

    cfg = TritonConfig(url=url, protocol=protocol, model=NAME, retry_s=0.1, retry_max_s=0.4,
                       **kw)  # type: ignore[arg-type]
    return TritonRunner(ModelOptions(path=MODEL, warmup_runs=0), cfg, timeout_s)


def assert_same(a, b) -> None:
    """Two results of the same frame, value for value."""
    assert np.array_equal(a.detections.boxes, b.detections.boxes)
    assert np.array_equal(a.detections.scores, b.detections.scores)
    assert np.array_equal(a.detections.class_ids, b.detections.class_ids)
    assert np.array_equal(a.mask, b.mask)


# ---------------------------------------------------------------------- config and repo


def test_config_rejects_a_bad_url_naming_the_field(tmp_path: Path) -> None:
    text = ("model:\n  path: builtin:yoeo-demo-int8.onnx\n  triton:\n"
            "    url: grpc://127.0.0.1:8001\n    model: yoeo-demo-int8\n"
            "cameras: {front: {source: synthetic}}\n")
    with pytest.raises(ConfigError) as e:
        parse_config(text, file="t.yaml")
    msg = str(e.value)
    assert "model.triton.url" in msg and "expected host:port" in msg, msg


def test_config_auth_from_one_place_and_tls_pairs(tmp_path: Path) -> None:
    base = ("model:\n  path: builtin:yoeo-demo-int8.onnx\n  triton:\n"
            "    url: 127.0.0.1:8001\n    model: yoeo-demo-int8\n{extra}"
            "cameras: {{front: {{source: synthetic}}}}\n")
    with pytest.raises(ConfigError, match="auth_env and auth_file both given"):
        parse_config(base.format(extra="    auth_env: TOKEN\n    auth_file: t.txt\n"))
    with pytest.raises(ConfigError, match="cert and key go together"):
        parse_config(base.format(extra="    tls: {cert: c.pem}\n"))
    cfg = parse_config(base.format(extra="    auth_file: secret.txt\n"), base_dir=tmp_path)
    assert cfg.model.triton is not None
    assert cfg.model.triton.auth_file == tmp_path / "secret.txt"
    # the request timeout follows the budget unless set
    assert cfg.model.triton.timeout_s(80.0) == pytest.approx(0.04)


def test_auth_header_value_is_sent_and_never_in_the_description(tmp_path: Path,
                                                                monkeypatch) -> None:
    from edged.inference.triton.client import read_auth

    monkeypatch.setenv("EDGED_TEST_TOKEN", "Bearer s3cret")
    cfg = TritonConfig(url="127.0.0.1:1", model=NAME, auth_env="EDGED_TEST_TOKEN")
    assert read_auth(cfg) == {"Authorization": "Bearer s3cret"}
    assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.where
    monkeypatch.delenv("EDGED_TEST_TOKEN")
    with pytest.raises(TritonError, match="EDGED_TEST_TOKEN is not set"):
        read_auth(cfg)


def test_the_example_config_is_the_promised_one() -> None:
    from edged.config import load_config

    cfg = load_config(REPO / "configs" / "triton.yaml")
    t = cfg.model.triton
    assert t is not None
    assert (t.url, t.protocol, t.model) == ("127.0.0.1:8001", "grpc", NAME)
    assert cfg.model.path == MODEL  # the local int8 demo: the fallback
    assert cfg.model.ladder is None


def test_triton_repo_fixed_batch(tmp_path: Path) -> None:
    entry = write_repo("builtin:yoeo-demo-int8.onnx", tmp_path)
    assert entry == tmp_path / NAME
    assert (entry / "1" / "model.onnx").read_bytes() == MODEL.read_bytes()
    text = (entry / "config.pbtxt").read_text()
    assert 'name: "yoeo-demo-int8"' in text and 'backend: "onnxruntime"' in text
    assert "max_batch_size: 0" in text and "dynamic_batching" not in text
    assert 'name: "InputLayer"\n    data_type: TYPE_FP32\n    dims: [ 1, 3, 416, 416 ]' in text
    assert 'name: "Segmentations"\n    data_type: TYPE_UINT8\n    dims: [ 1, 416, 416 ]' in text
    with pytest.raises(RepoError, match="exists"):
        write_repo("builtin:yoeo-demo-int8.onnx", tmp_path)
    write_repo("builtin:yoeo-demo-int8.onnx", tmp_path, force=True)


def test_triton_repo_dynamic_batch(tmp_path: Path) -> None:
    model = yoeo_model(tmp_path / "dyn.onnx", batch="N", size=64)
    entry = write_repo(str(model), tmp_path / "repo", name="dyn", max_batch=4)
    text = (entry / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in text and "dynamic_batching {" in text
    assert "dims: [ 3, 64, 64 ]" in text  # the batch dimension is Triton's
    with pytest.raises(RepoError, match="letters, digits"):
        write_repo(str(model), tmp_path / "repo", name="bad name")


def test_edged_triton_repo_command(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "edged", "triton-repo",
                        "builtin:yoeo-demo-int8.onnx", "-o", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / NAME)
    assert (tmp_path / NAME / "config.pbtxt").is_file()


def test_check_tensors_names_each_difference() -> None:
    mine = [TensorInfo("InputLayer", (1, 3, 416, 416), "float32")]
    outs = [TensorInfo("Detections", (1, 3549, 8), "float32"),
            TensorInfo("Segmentations", (1, 416, 416), "uint8")]
    meta = {"inputs": [{"name": "InputLayer", "datatype": "FP16",
                        "shape": ["1", "3", "416", "416"]}],
            "outputs": [{"name": "Dets", "datatype": "FP32", "shape": [1, 3549, 8]},
                        {"name": "Segmentations", "datatype": "UINT8",
                         "shape": [1, 320, 320]}]}
    with pytest.raises(TritonError) as e:
        check_tensors("triton model m at h:1 (grpc)", "edged's model x.onnx", meta, 0, mine,
                      outs)
    msg = str(e.value)
    assert "input InputLayer is FP16, edged's model has FP32" in msg
    assert "output Detections is missing (the server's model has Dets, Segmentations)" in msg
    assert "output Segmentations has shape [1, 320, 320], edged's model [1, 416, 416]" in msg
    # a batching server model reports -1 for the batch: that is no difference
    meta_ok = {"inputs": [{"name": "InputLayer", "datatype": "FP32",
                           "shape": [-1, 3, 416, 416]}],
               "outputs": [{"name": "Detections", "datatype": "FP32", "shape": [-1, 3549, 8]},
                           {"name": "Segmentations", "datatype": "UINT8",
                            "shape": [-1, 416, 416]}]}
    check_tensors("w", "l", meta_ok, 8, mine, outs)


# ---------------------------------------------------------------------- the double


@pytest.fixture
def double() -> Iterator[KServeDouble]:
    need_client()
    d = KServeDouble(MODEL, NAME)
    yield d
    d.close()


def test_double_results_equal_local_and_say_where(double: KServeDouble) -> None:
    local, remote = local_runner(), triton_runner(double.url, "http")
    assert remote.remote is not None and remote.remote.up
    for f in frames(3):
        a, b = local.infer(f), remote.infer(f)
        assert b.model_id == f"{NAME}@triton" and a.model_id == NAME
        assert_same(a, b)


@pytest.mark.parametrize("mode, reason", [
    ("wrong_shape", "output Detections came back as float32 [1, 10, 8], expected float32 "
                    "[1, 3549, 8]"),
    ("half", ""),
    ("stall", "timed out"),
])
def test_double_fault_falls_back_then_recovers(double: KServeDouble, mode: str,
                                               reason: str) -> None:
    local = local_runner()
    remote = triton_runner(double.url, "http", timeout_s=1.0)
    assert remote.remote is not None and remote.remote.up
    f = frames(1)[0]
    double.mode = mode
    r = remote.infer(f)
    # the same frame, computed locally: a fault never costs the frame
    assert r.model_id == NAME
    assert_same(r, local.infer(f))
    assert not remote.remote.up
    assert reason.lower() in remote.remote.reason.lower(), remote.remote.reason
    events = remote.take_events()
    assert [e.up for e in events] == [False]
    # while down no frame goes to the server
    before = double.requests
    assert remote.infer(f).model_id == NAME
    assert double.requests == before
    double.release.set()
    double.mode = "ok"
    wait_until(lambda: remote.remote.up, what="the prober reconnects")  # type: ignore[union-attr]
    assert [e.up for e in remote.take_events()] == [True]
    r = remote.infer(f)
    assert r.model_id == f"{NAME}@triton"
    assert_same(r, local.infer(f))


def test_double_unready_and_wrong_model_are_named_by_check(double: KServeDouble) -> None:
    double.mode = "unready"
    remote = triton_runner(double.url, "http")
    assert remote.remote is not None and not remote.remote.up
    with pytest.raises(TritonError, match="the model is not ready on the server"):
        remote.check()
    assert remote.infer(frames(1)[0]).model_id == NAME  # the local session serves
    double.mode = "ok"
    double.rename = {"Detections": "boxes"}
    with pytest.raises(TritonError, match=r"output Detections is missing \(the server's "
                                          r"model has Segmentations, boxes\)"):
        remote.check()


def test_backoff_bounds_the_reconnect_attempts() -> None:
    """A server that stays down is probed by one thread with a doubling, capped delay;
    frames never try it."""
    need_client()
    d = KServeDouble(MODEL, NAME)
    d.mode = "unready"
    try:
        remote = triton_runner(d.url, "http")
        assert remote.remote is not None and not remote.remote.up
        f = frames(1)[0]
        for _ in range(10):
            assert remote.infer(f).model_id == NAME
        wait_until(lambda: d.probes >= 5, what="five probes")
        assert d.requests == 0  # no inference request reached a server that is down
        assert remote.remote._retry == pytest.approx(0.4)  # 0.1, 0.2, 0.4, then capped
    finally:
        d.close()


def test_a_slow_server_is_retried_with_growing_delays(double: KServeDouble) -> None:
    """Healthy by its metadata, too slow for the timeout: each return to it costs one
    frame a timeout, so the delays before trying again double up to retry_max_s."""
    remote = triton_runner(double.url, "http", timeout_s=0.3)
    assert remote.remote is not None and remote.remote.up
    double.mode = "stall"
    f = frames(1)[0]
    while double.requests < 4:
        assert remote.infer(f).model_id in (NAME, f"{NAME}@triton")
    assert remote.remote._retry == pytest.approx(0.4)  # 0.1 -> 0.2 -> 0.4, capped
    assert [e.up for e in remote.take_events()][:3] == [False, True, False]


# ---------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    s = TritonServer(MODEL, NAME, tmp_path_factory.mktemp("triton") / "server.log").start()
    yield s
    s.stop()


@pytest.mark.parametrize("protocol, shm", [("grpc", False), ("http", False), ("grpc", True),
                                           ("http", True)])
def test_real_server_bit_for_bit(server: TritonServer, protocol: str, shm: bool,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    # the server guards shared memory with a token: the auth header carries it
    monkeypatch.setenv("EDGED_TEST_TRITON_TOKEN", TOKEN)
    auth = {"auth_env": "EDGED_TEST_TRITON_TOKEN", "auth_header": TOKEN_HEADER[protocol]} \
        if shm else {}
    local = local_runner()
    remote = triton_runner(url, protocol, shared_memory=shm, **auth)
    assert remote.remote is not None and remote.remote.up, remote.remote.reason
    for f in frames(4):
        pre = local._preprocessor(1)
        pre(f.image, 0)
        tensor = pre.tensor.copy()
        want = local.run_tensor(tensor)
        got = remote.run_tensor(tensor)
        assert remote._where.remote
        for w, g in zip(want, got):
            assert w.dtype == g.dtype and w.shape == g.shape
            assert np.array_equal(w, g)
        a, b = local.infer(f), remote.infer(f)
        assert b.model_id == f"{NAME}@triton"
        assert_same(a, b)
    assert "triton: triton model yoeo-demo-int8" in remote.check()
    remote.close()


def test_real_server_wrong_model_is_refused(tmp_path: Path) -> None:
    s = TritonServer(MODEL, NAME, tmp_path / "server.log",
                     "--output-name", "Segmentations=Mask").start()
    try:
        remote = triton_runner(s.grpc_url)
        assert remote.remote is not None and not remote.remote.up
        with pytest.raises(TritonError, match=r"output Segmentations is missing \(the "
                                              r"server's model has Detections, Mask\)"):
            remote.check()
        assert remote.infer(frames(1)[0]).model_id == NAME
    finally:
        s.stop()


def test_real_server_batches_of_several_cameras(tmp_path: Path) -> None:
    """A graph with a symbolic batch: frames of several cameras go as one request (in
    parts of the server's max_batch_size, 8 here), equal to the local batch run."""
    model = yoeo_model(tmp_path / "dyn.onnx", batch="N", size=64, convs=True)
    s = TritonServer(model, "dyn", tmp_path / "server.log").start()
    try:
        from edged.inference.triton.runner import TritonRunner

        cfg = TritonConfig(url=s.grpc_url, model="dyn")
        remote = TritonRunner(ModelOptions(path=model, warmup_runs=0), cfg, 30.0)
        local = ModelRunner(ModelOptions(path=model, warmup_runs=0))
        assert remote.dynamic_batch and remote.remote is not None and remote.remote.up
        assert remote.remote.max_batch == 8
        batch = frames(10)
        got, want = remote.infer_batch(batch), local.infer_batch(batch)
        assert [r.model_id for r in got] == ["dyn@triton"] * 10
        for a, b in zip(want, got):
            assert_same(a, b)
        assert remote.remote.remote_frames == 10
        remote.close()
    finally:
        s.stop()


def test_real_server_over_tls(tmp_path: Path) -> None:
    """gRPC over TLS: the server's certificate checked against the configured CA; a
    client without the CA is refused and falls back."""
    import shutil

    from edged.inference.triton.config import TlsFiles

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    s = TritonServer(MODEL, NAME, tmp_path / "server.log", "--grpc-tls", str(cert),
                     str(key)).start()
    try:
        remote = triton_runner(s.grpc_url, tls=TlsFiles(ca=cert))
        assert remote.remote is not None and remote.remote.up, remote.remote.reason
        f = frames(1)[0]
        r = remote.infer(f)
        assert r.model_id == f"{NAME}@triton"
        assert_same(r, local_runner().infer(f))
        plain = triton_runner(s.grpc_url)  # no TLS: the handshake fails
        assert plain.remote is not None and not plain.remote.up
        assert "server not reachable" in plain.remote.reason
        remote.close()
    finally:
        s.stop()


def test_metrics_say_where_frames_were_computed() -> None:
    from edged.daemon.metrics import render
    from edged.telemetry import DaemonSnapshot, InferenceCounters

    text = render(DaemonSnapshot(1.0, 1.0, inference=InferenceCounters(
        10, 10, 1, 0, remote_up=False, remote_frames=7, fallback_frames=3)))
    assert "edged_remote_up{} 0" in text
    assert 'edged_remote_frames_total{where="server"} 7' in text
    assert 'edged_remote_frames_total{where="fallback"} 3' in text
    assert "remote_up" not in render(DaemonSnapshot(1.0, 1.0))


def _config(tmp_path: Path, url: str, endpoint: str, protocol: str = "grpc") -> Path:
    cfg = tmp_path / "triton.yaml"
    cfg.write_text(f"""
model:
  path: builtin:yoeo-demo-int8.onnx
  warmup_runs: 1
  triton: {{url: "{url}", protocol: {protocol}, model: {NAME}, timeout_ms: 2000,
            retry_s: 0.2, retry_max_s: 1}}
cameras:
  front: {{source: synthetic, seed: 0, fps: 10}}
budget: {{latency_ms: 5000}}
publish: {{endpoints: ["{endpoint}"]}}
""")
    return cfg


def test_edged_check_reaches_the_server(server: TritonServer, tmp_path: Path) -> None:
    cfg = _config(tmp_path, server.grpc_url, f"tcp://127.0.0.1:{free_port()}")
    r = subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"triton: triton model {NAME} at {server.grpc_url} (grpc): OK" in r.stdout
    cfg = _config(tmp_path, f"127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
    r = subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "server not reachable" in r.stderr, r.stderr


def test_daemon_keeps_publishing_when_the_server_dies_and_returns(
        tmp_path: Path, start_daemon) -> None:
    import threading

    from edged.wire.client import Subscriber
    from edged.wire.codec import Message
    from edged.wire.telemetry import CameraState, ModelEvent

    s = TritonServer(MODEL, NAME, tmp_path / "server.log").start()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    models: list[str] = []
    events: list[ModelEvent] = []
    states: list[CameraState] = []
    stop = threading.Event()

    def listen() -> None:
        with Subscriber(endpoint, stats=True, states=True) as sub:
            while not stop.is_set():
                m = sub.recv(timeout=0.1)
                if isinstance(m, Message):
                    models.append(m.model)
                elif isinstance(m, ModelEvent):
                    events.append(m)
                elif isinstance(m, CameraState):
                    states.append(m)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    try:
        d = start_daemon(_config(tmp_path, s.grpc_url, endpoint))
        remote = f"{NAME}@triton"
        wait_until(lambda: models.count(remote) >= 3, 120, "results from the server")
        s.kill()  # mid-stream, as a crash
        n = len(models)
        wait_until(lambda: NAME in models[n:], 60, "results of the local fallback")
        wait_until(lambda: any(e.variant == NAME for e in events), 30, "the _model event")
        down = next(e for e in events if e.variant == NAME)
        assert down.previous == remote and "local fallback" in down.reason
        assert any("local fallback" in st.detail for st in states)
        s.start()  # same ports: the prober finds it again
        n = len(models)
        wait_until(lambda: remote in models[n:], 120, "results from the restarted server")
        wait_until(lambda: any(e.variant == remote for e in events), 30, "the back event")
        code, _ = d.terminate(30)
        assert code == 0, d.log()
        assert "on the local fallback" in d.log()  # the final inference line counts both
    finally:
        stop.set()
        th.join(5)
        s.stop()


def test_daemon_starts_with_the_server_down_and_moves_to_it(tmp_path: Path,
                                                           start_daemon) -> None:
    """No server at start is no error: the camera publishes from the local session, the
    fallback is announced, and the results move to the server once it is up."""
    import threading

    from edged.wire.client import Subscriber
    from edged.wire.codec import Message
    from edged.wire.telemetry import ModelEvent

    s = TritonServer(MODEL, NAME, tmp_path / "server.log")  # not started yet
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    models: list[str] = []
    events: list[ModelEvent] = []
    stop = threading.Event()

    def listen() -> None:
        with Subscriber(endpoint, stats=True) as sub:
            while not stop.is_set():
                m = sub.recv(timeout=0.1)
                if isinstance(m, Message):
                    models.append(m.model)
                elif isinstance(m, ModelEvent):
                    events.append(m)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    try:
        d = start_daemon(_config(tmp_path, s.grpc_url, endpoint))
        wait_until(lambda: models.count(NAME) >= 3, 120, "results of the local session")
        assert f"{NAME}@triton" not in models
        s.start()
        wait_until(lambda: f"{NAME}@triton" in models, 120, "results from the server")
        # the event goes on the stats channel, which may deliver it after the first result
        wait_until(lambda: any(e.variant == f"{NAME}@triton" and e.previous == NAME
                               for e in events), 60, "the _model event of the switch")
        code, _ = d.terminate(30)
        assert code == 0, d.log()
        assert "server not reachable" in d.log()
    finally:
        stop.set()
        th.join(5)
        s.stop()
