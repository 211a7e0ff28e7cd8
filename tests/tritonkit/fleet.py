"""Two Triton figures of docs/benchmarks.md: where a request's time goes, and what a fleet
of daemons against one server does to it.

1. Per request, taking turns run by run: the local session; a bare tritonclient gRPC
   infer (no edged) against the model served by pytriton and against a stub with the
   same tensors that answers with constant outputs at once; edged's TritonRunner against
   both. The server's statistics (queue, compute) and the time spent inside the
   inference function split the server's share from the client's and edged's.
2. N daemons (1 synthetic realtime camera each) against one server, N taking turns:
   each daemon's e2e p50/p99 and how many of its results came from the local fallback,
   and the server's batch sizes (its statistics) and queue time.

    .venv/bin/python tests/tritonkit/fleet.py [--runs 200] [--fleet 1,2,4] [--seconds 12]

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
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edged.inference.runner import ModelOptions, ModelRunner  # noqa: E402
from edged.inference.triton.config import TritonConfig  # noqa: E402
from edged.inference.triton.runner import TritonRunner  # noqa: E402
from tritonkit.bench import Collector, _config  # noqa: E402
from tritonkit.harness import TOKEN, TOKEN_HEADER, TritonServer, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "edged" / "models" / "yoeo-demo-int8.onnx"
NAME = "yoeo-demo-int8"
STUB = "yoeo-stub"
HEADERS = {TOKEN_HEADER["grpc"]: TOKEN}
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def load() -> float:
    return round(os.getloadavg()[0], 1)


def server_stats(url: str) -> dict[str, dict[str, Any]]:
    """Per model: successful requests, mean ms of the whole request and of each stage in
    Triton's core, and executions per batch size (cumulative since the server started)."""
    import tritonclient.grpc as grpc

    c = grpc.InferenceServerClient(url)
    try:
        raw = c.get_inference_statistics(headers=HEADERS, as_json=True)
    finally:
        c.close()
    out = {}
    for m in raw.get("model_stats", []):
        st = m.get("inference_stats", {})
        d: dict[str, Any] = {"count": int(st.get("success", {}).get("count", 0)),
                             "ns": int(st.get("success", {}).get("ns", 0))}
        for k in STAGES:
            d[k] = int(st.get(k, {}).get("ns", 0))
        d["batches"] = {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0))
                        for b in m.get("batch_stats", [])}
        out[m["name"]] = d
    return out


def stats_between(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]
                  ) -> dict[str, dict[str, Any]]:
    out = {}
    for name, after in b.items():
        before = a.get(name, {"count": 0, "ns": 0, "batches": {}, **dict.fromkeys(STAGES, 0)})
        n = after["count"] - before["count"]
        if n <= 0:
            continue
        d: dict[str, Any] = {"requests": n, "request_ms": (after["ns"] - before["ns"]) / n / 1e6}
        for k in STAGES:
            d[f"{k}_ms"] = (after[k] - before[k]) / n / 1e6
        d["executions_by_batch"] = {s: c - before["batches"].get(s, 0)
                                    for s, c in after["batches"].items()
                                    if c - before["batches"].get(s, 0)}
        out[name] = d
    return out


def records(path: Path, start: int) -> list[tuple[str, int, int, float]]:
    """The inference functions' lines since byte `start`: model, requests, rows, s."""
    with open(path) as f:
        f.seek(start)
        rows = []
        for line in f:
            m, n, r, s = line.split()
            rows.append((m, int(n), int(r), float(s)))
    return rows


class Live:
    """A gRPC round trip with no tensors: is the server live."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpc

        self.client = grpc.InferenceServerClient(url)

    def run_tensor(self, x: np.ndarray) -> bool:
        return bool(self.client.is_server_live())

    def close(self) -> None:
        self.client.close()


class BareClient:
    """One gRPC infer as tritonclient's own examples do it: no edged in between."""

    def __init__(self, url: str, model: str) -> None:
        import tritonclient.grpc as grpc

        self.grpc, self.model = grpc, model
        self.client = grpc.InferenceServerClient(url)
        # ms of each run's parts: building the request (the tensor copied into it), the
        # call (serialising, gRPC both ways, the server), reading the outputs
        self.parts: dict[str, list[float]] = {"build": [], "call": [], "read": []}

    def run_tensor(self, x: np.ndarray) -> list[np.ndarray]:
        t0 = time.perf_counter()
        i = self.grpc.InferInput("InputLayer", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        outs = [self.grpc.InferRequestedOutput(n) for n in ("Detections", "Segmentations")]
        t1 = time.perf_counter()
        r = self.client.infer(self.model, [i], outputs=outs)
        t2 = time.perf_counter()
        values = [r.as_numpy("Detections"), r.as_numpy("Segmentations")]
        t3 = time.perf_counter()
        for k, a, b in (("build", t0, t1), ("call", t1, t2), ("read", t2, t3)):
            self.parts[k].append((b - a) * 1e3)
        return values

    def close(self) -> None:
        self.client.close()


def wait_ready(url: str, model: str, timeout: float = 120.0) -> None:
    """The server is ready once its first model is: the stub may load after it."""
    import tritonclient.grpc as grpc

    c = grpc.InferenceServerClient(url)
    try:
        end = time.monotonic() + timeout
        while not c.is_model_ready(model):
            if time.monotonic() > end:
                raise RuntimeError(f"{model} not ready on {url} within {timeout} s")
            time.sleep(0.2)
    finally:
        c.close()


def per_request(server: TritonServer, record: Path, runs: int) -> dict[str, Any]:
    opts = ModelOptions(path=MODEL, warmup_runs=0, threads=1)
    paths: dict[str, Any] = {"local": ModelRunner(opts),
                             "grpc is_server_live": Live(server.grpc_url)}
    for model in (NAME, STUB):
        paths[f"bare {model}"] = BareClient(server.grpc_url, model)
        paths[f"edged {model}"] = TritonRunner(
            opts, TritonConfig(url=server.grpc_url, protocol="grpc", model=model), 10.0)
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in paths}
    load0 = load()
    for i in range(runs + 5):
        if i == 5:
            before, offset = server_stats(server.grpc_url), record.stat().st_size
        for k, r in paths.items():
            t = time.perf_counter()
            r.run_tensor(x)
            if i >= 5:
                times[k].append((time.perf_counter() - t) * 1e3)
    server_side = stats_between(before, server_stats(server.grpc_url))
    inside: dict[str, list[float]] = {}
    for m, _, _, s in records(record, offset):
        inside.setdefault(m, []).append(s * 1e3)
    parts = {f"{k} {part}": statistics.median(v[5:])
             for k, r in paths.items() if isinstance(r, BareClient)
             for part, v in r.parts.items()}
    for r in paths.values():
        r.close()
    return {"load": [load0, load()],
            "client_ms": {k: statistics.median(v) for k, v in times.items()},
            "bare_parts_ms": parts,
            "server": server_side,
            "in_function_ms": {m: statistics.median(v) for m, v in inside.items()}}


def fleet(server: TritonServer, record: Path, n: int, seconds: float, tmp: Path
          ) -> dict[str, Any]:
    """n daemons, one synthetic realtime camera each (15 fps, budget 200 ms: a 100 ms
    request timeout), against one server, for `seconds` after the first results."""
    name = server.name
    triton = f"  triton: {{url: '{server.grpc_url}', model: {name}}}"
    procs, cols = [], []
    for i in range(n):
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        cfg = _config(tmp / f"fleet{n}-{i}.yaml", triton, endpoint, 1)
        # each daemon its own camera seed
        cfg.write_text(cfg.read_text().replace("seed: 0", f"seed: {i}").replace(
            "builtin:yoeo-demo-int8.onnx", str(server.model)))
        cols.append(Collector(endpoint))
        procs.append(subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        end = time.monotonic() + 120
        while not all(c.rows for c in cols) and time.monotonic() < end:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a daemon exited before its first result")
            time.sleep(0.1)
        time.sleep(2.0)  # past the first frames
        starts = [len(c.rows) for c in cols]
        before, offset, load0 = server_stats(server.grpc_url), record.stat().st_size, load()
        time.sleep(seconds)
        rows = [c.rows[s:] for c, s in zip(cols, starts)]
        after, load1 = server_stats(server.grpc_url), load()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        for c in cols:
            c.stop()
    daemons = []
    for r in rows:
        e2e = np.array([e for _, _, e in r])
        daemons.append({"results": len(r), "p50": float(np.percentile(e2e, 50)),
                        "p99": float(np.percentile(e2e, 99)),
                        "fallback": sum(1 for _, m, _ in r if m == name)})
    calls = [rec for rec in records(record, offset) if rec[0] == name]
    return {"model": name, "daemons": n, "load": [load0, load1], "per_daemon": daemons,
            "server": stats_between(before, after).get(name, {}),
            "rows_per_call": dict(Counter(r for _, _, r, _ in calls)),
            "in_function_ms": statistics.median(s * 1e3 for *_, s in calls) if calls else None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--fleet", default="1,2,4", help="daemon counts, taking turns")
    ap.add_argument("--rounds", type=int, default=2, help="times through the fleet sizes")
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--skip-requests", action="store_true")
    # the demo graph's batch is fixed at 1, so the server cannot batch it: the fleet runs
    # also against a graph with a symbolic batch (two real convolutions, tests/modelgen.py)
    # served with max_batch_size 8 and Triton's dynamic batcher
    ap.add_argument("--batching", action="store_true")
    args = ap.parse_args()
    os.environ["EDGED_BENCH_TOKEN"] = TOKEN
    sizes = [int(s) for s in args.fleet.split(",") if s]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        record = tmp / "calls.txt"
        record.touch()
        server = TritonServer(MODEL, NAME, tmp / "server.log", "--stub", STUB,
                              "--record", str(record)).start()
        servers = [(server, record)]
        try:
            wait_ready(server.grpc_url, STUB)
            if args.batching:
                from modelgen import yoeo_model

                dyn = yoeo_model(tmp / "yoeo-dyn.onnx", batch="N", convs=True)
                record2 = tmp / "calls-dyn.txt"
                record2.touch()
                servers.append((TritonServer(dyn, "yoeo-dyn", tmp / "server-dyn.log",
                                             "--record", str(record2)).start(), record2))
            result: dict[str, Any] = {}
            if not args.skip_requests:
                result["per_request"] = per_request(server, record, args.runs)
                print(json.dumps(result["per_request"], indent=1), flush=True)
            result["fleet"] = []
            for _ in range(args.rounds):
                for n in sizes:
                    for srv, rec in servers:
                        f = fleet(srv, rec, n, args.seconds, tmp)
                        print(json.dumps(f), flush=True)
                        result["fleet"].append(f)
        finally:
            for srv, _ in servers:
                srv.stop()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
