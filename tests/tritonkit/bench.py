"""The Triton figures of docs/benchmarks.md: the per-request cost of the server over the
local session (interleaved, run by run), a real daemon's capture-to-publish latency with
the model local and on the server (gRPC, HTTP, gRPC + shared memory), and the fallback
and recovery times when the server is killed and restarted.

    .venv/bin/python tests/tritonkit/bench.py [--runs 200] [--seconds 20] [--cameras 1]

Needs the triton venv (.venv-triton) and tritonclient, as the tests do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edged.inference.runner import ModelOptions, ModelRunner  # noqa: E402
from edged.inference.triton.config import TritonConfig  # noqa: E402
from edged.inference.triton.runner import TritonRunner  # noqa: E402
from tritonkit.harness import TOKEN, TOKEN_HEADER, TritonServer, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "edged" / "models" / "yoeo-demo-int8.onnx"
NAME = "yoeo-demo-int8"


def per_request(server: TritonServer, runs: int) -> dict[str, float]:
    """Median ms of one run: the local session and each remote path, taking turns."""
    os.environ["EDGED_BENCH_TOKEN"] = TOKEN
    local = ModelRunner(ModelOptions(path=MODEL, warmup_runs=0, threads=1))
    paths = {"local": local}
    for label, proto, shm in (("grpc", "grpc", False), ("http", "http", False),
                              ("grpc+shm", "grpc", True)):
        url = server.grpc_url if proto == "grpc" else server.http_url
        auth = {"auth_env": "EDGED_BENCH_TOKEN", "auth_header": TOKEN_HEADER[proto]} \
            if shm else {}
        cfg = TritonConfig(url=url, protocol=proto, model=NAME, shared_memory=shm, **auth)
        paths[label] = TritonRunner(ModelOptions(path=MODEL, warmup_runs=0, threads=1), cfg,
                                    10.0)
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(runs + 5):
        for k, r in paths.items():
            t = time.perf_counter()
            r.run_tensor(x)
            if i >= 5:
                times[k].append((time.perf_counter() - t) * 1e3)
    for r in paths.values():
        r.close()
    return {k: statistics.median(v) for k, v in times.items()}


def _config(path: Path, triton: str, endpoint: str, cameras: int) -> Path:
    cams = "\n".join(f"  cam{i}: {{source: synthetic, seed: {i}}}" for i in range(cameras))
    path.write_text(f"""
model:
  path: builtin:yoeo-demo-int8.onnx
{triton}
camera_defaults: {{width: 640, height: 480, fps: 15}}
cameras:
{cams}
budget: {{latency_ms: 200}}
publish: {{endpoints: ["{endpoint}"]}}
""")
    return path


class Collector:
    def __init__(self, endpoint: str) -> None:
        from edged.wire.client import Subscriber
        from edged.wire.codec import Message

        self.rows: list[tuple[float, str, float]] = []  # (received, model, e2e ms)
        self._stop = threading.Event()

        def run() -> None:
            with Subscriber(endpoint) as sub:
                while not self._stop.is_set():
                    m = sub.recv(timeout=0.1)
                    if isinstance(m, Message):
                        self.rows.append((time.monotonic(), m.model,
                                          (m.t_publish_ns - m.t_capture_ns) / 1e6))

        self._th = threading.Thread(target=run, daemon=True)
        self._th.start()

    def stop(self) -> None:
        self._stop.set()
        self._th.join(5)


def daemon_e2e(server: TritonServer, seconds: float, cameras: int, tmp: Path
               ) -> dict[str, dict[str, float]]:
    os.environ["EDGED_BENCH_TOKEN"] = TOKEN
    modes = {
        "local": "",
        "grpc": f"  triton: {{url: '{server.grpc_url}', model: {NAME}}}",
        "http": f"  triton: {{url: '{server.http_url}', protocol: http, model: {NAME}}}",
        "grpc+shm": (f"  triton: {{url: '{server.grpc_url}', model: {NAME}, shared_memory: "
                     f"true, auth_env: EDGED_BENCH_TOKEN, auth_header: "
                     f"{TOKEN_HEADER['grpc']}}}"),
    }
    out = {}
    for label, triton in modes.items():
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        cfg = _config(tmp / f"{label}.yaml", triton, endpoint, cameras)
        col = Collector(endpoint)
        proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not col.rows and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(2.0)  # past the first frames
        start = len(col.rows)
        time.sleep(seconds)
        rows = col.rows[start:]
        proc.terminate()
        proc.wait(30)
        col.stop()
        e2e = np.array([r[2] for r in rows])
        where = {m for _, m, _ in rows}
        out[label] = {"p50": float(np.percentile(e2e, 50)), "p99": float(np.percentile(e2e, 99)),
                      "fps": len(rows) / seconds, "models": sorted(where)}  # type: ignore[dict-item]
    return out


def fallback_and_recovery(tmp: Path, trials: int) -> dict[str, list[float]]:
    """Server SIGKILLed -> first local result received; server ready again -> first
    result from the server (retry back-off 0.5 s doubling to 5 s, the defaults)."""
    fallback, recovery = [], []
    server = TritonServer(MODEL, NAME, tmp / "fb-server.log").start()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = _config(tmp / "fb.yaml", f"  triton: {{url: '{server.grpc_url}', model: {NAME}}}",
                  endpoint, 1)
    col = Collector(endpoint)
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(trials):
            while not any(m.endswith("@triton") for _, m, _ in col.rows[-3:]):
                time.sleep(0.05)
            n = len(col.rows)
            t_kill = time.monotonic()
            server.kill()
            while not any(m == NAME for _, m, _ in col.rows[n:]):
                time.sleep(0.005)
            fallback.append((next(t for t, m, _ in col.rows[n:] if m == NAME) - t_kill) * 1e3)
            server.start()
            t_ready = time.monotonic()
            n = len(col.rows)
            while not any(m.endswith("@triton") for _, m, _ in col.rows[n:]):
                time.sleep(0.005)
            recovery.append(next(t for t, m, _ in col.rows[n:] if m.endswith("@triton"))
                            - t_ready)
    finally:
        proc.terminate()
        proc.wait(30)
        col.stop()
        server.stop()
    return {"fallback_ms": fallback, "recovery_s": recovery}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = TritonServer(MODEL, NAME, tmp / "server.log").start()
        try:
            result = {"per_request_ms": per_request(server, args.runs),
                      "daemon": daemon_e2e(server, args.seconds, args.cameras, tmp)}
        finally:
            server.stop()
        result |= fallback_and_recovery(tmp, args.trials)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
