"""`TritonRunner`: the model's runs on a Triton server, the local session as the fallback.

It is a `ModelRunner` of the same ONNX file: the local graph gives the manifest, the
tensors the server's model must match, pre- and post-processing, and the session that
runs a frame whenever the server cannot (down, slow, restarted, another model). So a
fallback costs no model switch and no extra memory beyond the local session, and every
result names where it was computed: `<model>@triton` from the server, `<model>` locally.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import numpy as np

from edged.inference.runner import ModelOptions, ModelRunner
from edged.inference.triton.client import Event, RemoteModel, TritonError
from edged.inference.triton.config import TritonConfig
from edged.results import Frame, Result

log = logging.getLogger("edged.inference.triton")

REMOTE_SUFFIX = "@triton"


class TritonRunner(ModelRunner):
    def __init__(self, options: ModelOptions, triton: TritonConfig, timeout_s: float,
                 connect: bool = True) -> None:
        """`connect`: try the server now (a server that is down only starts the prober;
        `check()` is the call that fails on it)."""
        self.remote: RemoteModel | None = None  # the local session's own runs below
        self._where = threading.local()
        super().__init__(options)
        self.local_id = self.model_id
        self.remote = RemoteModel(triton, f"edged's model {options.path}", self.inputs,
                                  self.outputs, timeout_s)
        self.triton = triton
        if connect:
            # down: logged and announced, the local session serves meanwhile
            with contextlib.suppress(TritonError):
                self.remote.connect()

    @property
    def remote_id(self) -> str:
        return self.local_id + REMOTE_SUFFIX

    def check(self) -> str:
        """`edged check`'s line; TritonError unless the server is reachable and its model
        matches the local graph."""
        assert self.remote is not None
        r = self.remote
        r.connect()
        out = self.run_tensor(np.zeros(self._probe_shape(), np.float32))
        if not getattr(self._where, "remote", False):
            raise TritonError(f"{r.config.where}: an inference failed: {r.reason}")
        del out
        return (f"  triton: {r.config.where}: OK (reached; tensors match {self.local_id}; one "
                f"inference; request timeout {r.timeout_s * 1000:.0f} ms; max batch "
                f"{r.max_batch}{'; auth header ' + r.config.auth_header if r.headers else ''}"
                f"{'; shared memory' if r.config.shared_memory else ''}; fallback: the local "
                f"session)")

    def _probe_shape(self) -> tuple[int, ...]:
        w, h = self.manifest.preprocess.input_size(640, 480)
        return (1, 3, h, w)

    def run_tensor(self, tensor: np.ndarray) -> list[np.ndarray]:
        remote = self.remote
        if remote is not None and remote.usable():
            name = self.manifest.input_name
            try:
                if self._unbatched:
                    values = remote.run({name: tensor[0]}, self.output_names)
                else:
                    # the server's max_batch_size bounds one request: larger batches in parts
                    step = remote.max_batch or len(tensor)
                    parts = [remote.run({name: tensor[i:i + step]}, self.output_names)
                             for i in range(0, len(tensor), step)]
                    values = parts[0] if len(parts) == 1 else [
                        np.concatenate(vs) for vs in zip(*parts)]
                self._where.remote = True
                return values
            except TritonError as e:
                remote.failed(e)
        self._where.remote = False
        return super().run_tensor(tensor)

    def infer_batch(self, frames: list[Frame]) -> list[Result]:
        results = super().infer_batch(frames)
        on_server = getattr(self._where, "remote", False)
        where = self.remote_id if on_server else self.local_id
        remote = self.remote
        if remote is not None:
            if on_server:
                remote.remote_frames += len(frames)
            else:
                remote.fallback_frames += len(frames)
        for r in results:
            r.model_id = where
        return results

    def reloaded(self) -> TritonRunner:
        assert self.remote is not None
        return TritonRunner(self.options, self.triton, self.remote.timeout_s)

    def take_events(self) -> list[Event]:
        return self.remote.take_events() if self.remote is not None else []

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        r = self.remote
        if r is not None:
            d["triton"] = {"model": r.config.where, "up": r.up, "reason": r.reason,
                           "timeout_ms": round(r.timeout_s * 1000, 1),
                           "max_batch": r.max_batch,
                           "shared_memory": r.config.shared_memory,
                           "auth_header": r.config.auth_header if r.headers else None}
        return d

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()
