"""What the Triton tests run against: a real tritonserver (pytriton, in its own venv) and a
KServe-v2 HTTP double that misbehaves on cue.

The real server needs the triton venv (.venv-triton, or EDGED_TRITON_PYTHON naming its
python) and tritonclient in edged's venv; without them the tests skip, and with
EDGED_REQUIRE_TRITON=1 they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SERVE = Path(__file__).with_name("serve.py")
REQUIRE = os.environ.get("EDGED_REQUIRE_TRITON") == "1"
# the token the test servers want for shared memory, and the header that carries it
TOKEN = "edged-test-token"
TOKEN_HEADER = {"grpc": "triton-grpc-protocol-triton-access-token",
                "http": "triton-access-token"}


def triton_python() -> Path | None:
    p = Path(os.environ.get("EDGED_TRITON_PYTHON") or REPO / ".venv-triton" / "bin" / "python")
    return p if p.is_file() else None


def need(what: str, ok: bool) -> None:
    """Skip (or fail, with EDGED_REQUIRE_TRITON=1) unless `ok`."""
    if ok:
        return
    if REQUIRE:
        pytest.fail(f"EDGED_REQUIRE_TRITON=1 but {what}")
    pytest.skip(what)


def need_client() -> None:
    try:
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401
    except ImportError:
        need("tritonclient is not installed (pip install 'edged[triton]')", False)


def need_server() -> Path:
    need_client()
    py = triton_python()
    need("no triton venv (.venv-triton with nvidia-pytriton, or EDGED_TRITON_PYTHON)",
         py is not None)
    assert py is not None
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TritonServer:
    """tests/tritonkit/serve.py as a process group of its own (tritonserver and its Python
    backend stubs are its children: `kill` takes them all, as a crash would)."""

    def __init__(self, model: Path, name: str, log: Path, *extra: str) -> None:
        self.py = need_server()
        self.model, self.name, self.log_path, self.extra = model, name, log, extra
        self.grpc_port, self.http_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 180.0) -> TritonServer:
        """Start (again, on the same ports) and wait until the model is ready."""
        import tritonclient.http as http

        log = open(self.log_path, "ab")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(
            [str(self.py), str(SERVE), str(self.model), "--name", self.name,
             "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
             "--access-token", TOKEN, *self.extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"triton server exited {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text(errors='replace')[-4000:]}")
            try:
                c = http.InferenceServerClient(self.http_url, connection_timeout=1.0)
                try:
                    if c.is_model_ready(self.name):
                        return self
                finally:
                    c.close()
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"triton server not ready within {timeout} s:\n"
                             f"{self.log_path.read_text(errors='replace')[-4000:]}")

    def kill(self) -> None:
        """SIGKILL to the whole group: the server dies mid-request, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        if self.proc is not None:
            # its children may outlive the parent for a moment: the ports must be free
            with_group = True
            while with_group:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    time.sleep(0.05)
                except ProcessLookupError:
                    with_group = False

    def stop(self) -> None:
        """SIGINT (pytriton's way to stop), then the group is killed if still there."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self.kill()


# ---------------------------------------------------------------------- the double

KSERVE = {"float32": "FP32", "uint8": "UINT8", "int64": "INT64", "int32": "INT32"}


class KServeDouble:
    """A KServe-v2 HTTP server (binary tensor extension) for one model, computing with
    onnxruntime when `mode` is "ok", and otherwise:

    - "stall": an inference request gets no answer until `release` is set;
    - "wrong_shape": the first output comes back with 10 rows;
    - "half": the response announces its full length and stops half-way, then closes;
    - "unready": the model is not ready (404 on ready and infer).

    `rename` (old -> new) changes output names in the metadata and responses.
    """

    def __init__(self, model: Path, name: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.name = name
        self.mode = "ok"
        self.rename: dict[str, str] = {}
        self.release = threading.Event()
        self.requests = 0  # inference requests
        self.probes = 0  # model-ready requests
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None,
                       send: int | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {"Content-Type": "application/json"}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body if send is None else body[:send])
                self.wfile.flush()
                if send is not None:
                    self.close_connection = True

            def _json(self, code: int, obj: Any) -> None:
                self._reply(code, json.dumps(obj).encode())

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.rstrip("/")
                base = f"/v2/models/{double.name}"
                if path in ("/v2/health/live", "/v2/health/ready"):
                    self._reply(200, b"")
                elif path in (base + "/ready", base + "/versions/1/ready"):
                    double.probes += 1
                    self._reply(400 if double.mode == "unready" else 200, b"")
                elif path in (base, base + "/versions/1"):
                    self._json(200, double.metadata())
                elif path in (base + "/config", base + "/versions/1/config"):
                    self._json(200, {"name": double.name, "max_batch_size": 0})
                else:
                    self._json(404, {"error": f"no such path {path}"})

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                double.requests += 1
                if double.mode == "unready":
                    self._json(400, {"error": "model not ready"})
                    return
                if double.mode == "stall":
                    double.release.wait(60)
                hlen = int(self.headers.get("Inference-Header-Content-Length", n))
                header = json.loads(body[:hlen])
                feeds, offset = {}, hlen
                for i in header["inputs"]:
                    size = i["parameters"]["binary_data_size"]
                    dtype = {v: k for k, v in KSERVE.items()}[i["datatype"]]
                    feeds[i["name"]] = np.frombuffer(body[offset:offset + size],
                                                     dtype).reshape(i["shape"])
                    offset += size
                names = [o.name for o in double.session.get_outputs()]
                values = double.session.run(names, feeds)
                if double.mode == "wrong_shape":
                    values[0] = np.ascontiguousarray(values[0][:, :10])
                outs, blobs = [], []
                for name, v in zip(names, values):
                    blob = v.tobytes()
                    outs.append({"name": double.rename.get(name, name),
                                 "datatype": KSERVE[v.dtype.name], "shape": list(v.shape),
                                 "parameters": {"binary_data_size": len(blob)}})
                    blobs.append(blob)
                head = json.dumps({"model_name": double.name, "model_version": "1",
                                   "outputs": outs}).encode()
                reply = head + b"".join(blobs)
                self._reply(200, reply, {"Content-Type": "application/octet-stream",
                                         "Inference-Header-Content-Length": str(len(head))},
                            send=len(reply) // 2 if double.mode == "half" else None)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def metadata(self) -> dict[str, Any]:
        def t(a: Any, rename: dict[str, str]) -> dict[str, Any]:
            dtype = KSERVE[{"tensor(float)": "float32", "tensor(uint8)": "uint8"}[a.type]]
            return {"name": rename.get(a.name, a.name), "datatype": dtype,
                    "shape": [d if isinstance(d, int) else -1 for d in a.shape]}
        return {"name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": [t(a, {}) for a in self.session.get_inputs()],
                "outputs": [t(a, self.rename) for a in self.session.get_outputs()]}

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
