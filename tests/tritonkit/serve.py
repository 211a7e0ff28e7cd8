"""A real Triton server (pytriton's tritonserver) serving an ONNX model through a Python
inference function that runs onnxruntime, as the tests' and the benchmarks' server.

Runs under the triton venv's python (pytriton pins numpy<2, so never edged's venv):

    .venv-triton/bin/python tests/tritonkit/serve.py MODEL.onnx --name NAME \
        --grpc-port P --http-port Q --access-token T [--output-name OLD=NEW] \
        [--stub STUB_NAME] [--record FILE]

Prints one line `READY` on stdout once the model is ready; stops at SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
import threading
import time
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(float16)": np.float16, "tensor(int8)": np.int8}


def _with_own_libpython() -> None:
    """Re-exec with this interpreter's libpython first on the library path: Triton's
    Python-backend stub links libpython3.X.so.1.0 and would otherwise load the system's,
    which may be another patch release than this interpreter's standard library."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    if libdir and os.path.isdir(libdir) and libdir not in paths:
        env = dict(os.environ, LD_LIBRARY_PATH=":".join([libdir, *filter(None, paths)]))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> int:
    _with_own_libpython()
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--name", required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    # pytriton guards shared memory (and model control) with a token it makes up unless
    # given one; clients send it as the header triton-access-token (HTTP) or
    # triton-grpc-protocol-triton-access-token (gRPC)
    ap.add_argument("--access-token", required=True)
    # gRPC over TLS with this certificate and key (HTTP stays plain: the tests wait on it)
    ap.add_argument("--grpc-tls", nargs=2, metavar=("CERT", "KEY"))
    # serve an output under another name: a "wrong model" for the tests
    ap.add_argument("--output-name", action="append", default=[])
    # a second model with the same tensors that answers with constant outputs at once: the
    # server's own cost per request, without the model's (tests/tritonkit/fleet.py)
    ap.add_argument("--stub")
    # one line per call of an inference function: model, requests, rows, seconds in it
    ap.add_argument("--record")
    args = ap.parse_args()
    renamed = dict(s.split("=", 1) for s in args.output_name)

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    ins, outs = session.get_inputs(), session.get_outputs()
    out_names = [o.name for o in outs]
    # a fixed batch dimension: Triton's max_batch_size 0, full shapes
    fixed = all(isinstance(d, int) for d in ins[0].shape)

    def dims(shape: list[Any]) -> tuple[int, ...]:
        s = [d if isinstance(d, int) else -1 for d in shape]
        return tuple(s if fixed else s[1:])

    # line-buffered: the server is stopped by a signal, a line is complete or absent
    record = open(args.record, "a", buffering=1) if args.record else None  # noqa: SIM115

    def note(model: str, requests: list[Any], t0: float) -> None:
        if record is not None:
            rows = sum(len(np.asarray(r[ins[0].name])) for r in requests)
            record.write(f"{model} {len(requests)} {rows} {time.perf_counter() - t0:.6f}\n")

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        t0 = time.perf_counter()
        replies = []
        for req in requests:
            feeds = {i.name: np.asarray(req[i.name]) for i in ins}
            values = session.run(out_names, feeds)
            replies.append({renamed.get(n, n): v for n, v in zip(out_names, values)})
        note(args.name, requests, t0)
        return replies

    # the stub's outputs: one run of the model on zeros, repeated along the batch
    zeros = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape],
                              _DTYPES[i.type]) for i in ins}
    canned = session.run(out_names, zeros)

    def stub(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        t0 = time.perf_counter()
        replies = []
        for req in requests:
            n = len(np.asarray(req[ins[0].name]))
            replies.append({renamed.get(k, k): v if fixed else np.repeat(v, n, axis=0)
                            for k, v in zip(out_names, canned)})
        note(args.stub, requests, t0)
        return replies

    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.grpc_port,
                          http_address="127.0.0.1", http_port=args.http_port,
                          allow_metrics=False, exit_timeout_secs=2,
                          **({"grpc_use_ssl": True, "grpc_server_cert": args.grpc_tls[0],
                              "grpc_server_key": args.grpc_tls[1]} if args.grpc_tls else {}))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    security = TritonSecurityConfig(access_token=args.access_token)
    with Triton(config=config, security_config=security) as triton:
        for name, func in ((args.name, infer), (args.stub, stub)):
            if name is None:
                continue
            triton.bind(
                model_name=name, infer_func=func,
                inputs=[Tensor(name=i.name, dtype=_DTYPES[i.type], shape=dims(i.shape))
                        for i in ins],
                outputs=[Tensor(name=renamed.get(o.name, o.name), dtype=_DTYPES[o.type],
                                shape=dims(o.shape)) for o in outs],
                config=ModelConfig(batching=not fixed, max_batch_size=0 if fixed else 8),
                strict=False)
        triton.run()
        print("READY", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
