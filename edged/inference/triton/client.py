"""One model on a Triton server, as the runner uses it: `run(feeds) -> outputs`, like an
ONNX Runtime session, plus health: whether to try the server at all just now.

Each calling thread has its own client (tritonclient's HTTP client is not thread-safe;
one gRPC channel per worker keeps their requests apart). A failed request marks the
model down; no frame waits for the server while it is down: a prober thread (one per
model, only while down) reconnects with back-off, validates the model's tensors against
the local graph again (the server may have been restarted with another model) and marks
it up. Transitions are queued for the daemon to announce (`take_events`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.errors import UserError
from edged.inference.formats import TensorInfo
from edged.inference.triton.config import TritonConfig

log = logging.getLogger("edged.inference.triton")

# numpy dtype name -> KServe v2 datatype
KSERVE_TYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "uint8": "UINT8",
                "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
                "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL"}
NUMPY_TYPES = {v: k for k, v in KSERVE_TYPES.items()}


class TritonError(UserError, RuntimeError):
    """The server cannot be used for this model: unreachable, or a model that does not
    match the local one. The runner falls back on it; `edged check` reports it."""


class MissingExtra(UserError, ImportError):
    """tritonclient is not installed."""


def _tritonclient(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
    except ImportError as e:
        raise MissingExtra(f"model.triton needs tritonclient ({e}): pip install "
                           f"'edged[triton]'") from None
    return mod


def read_auth(config: TritonConfig) -> dict[str, str]:
    """The auth header, its value from the environment or a file (never logged)."""
    value: str | None = None
    if config.auth_env is not None:
        value = os.environ.get(config.auth_env)
        if not value:
            raise TritonError(f"model.triton.auth_env: environment variable "
                              f"{config.auth_env} is not set")
    elif config.auth_file is not None:
        try:
            value = config.auth_file.read_text().strip()
        except OSError as e:
            raise TritonError(f"model.triton.auth_file: cannot read {config.auth_file}: "
                              f"{e.strerror or e}") from None
        if not value:
            raise TritonError(f"model.triton.auth_file: {config.auth_file} is empty")
    return {config.auth_header: value} if value is not None else {}


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def check_tensors(where: str, local: str, metadata: dict[str, Any], max_batch: int,
                  inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """TritonError naming each difference between the server's model and the local graph
    (names, dtypes, fixed dimensions); `max_batch` > 0: the server adds the batch
    dimension, which the metadata then shows as -1."""
    problems: list[str] = []
    for kind, mine, theirs in (("input", inputs, metadata.get("inputs", [])),
                               ("output", outputs, metadata.get("outputs", []))):
        by_name = {t["name"]: t for t in theirs}
        for t in mine:
            other = by_name.get(t.name)
            if other is None:
                problems.append(f"{kind} {t.name} is missing (the server's model has "
                                f"{', '.join(sorted(by_name)) or 'none'})")
                continue
            want = KSERVE_TYPES.get(t.dtype, t.dtype)
            if other["datatype"] != want:
                problems.append(f"{kind} {t.name} is {other['datatype']}, edged's model "
                                f"has {want}")
            dims = _dims(other["shape"])
            if len(dims) != len(t.shape):
                problems.append(f"{kind} {t.name} has shape {list(dims)}, edged's model "
                                f"{_shape_text(t.shape)}")
                continue
            for i, (a, b) in enumerate(zip(dims, t.shape)):
                if a >= 0 and isinstance(b, int) and b >= 0 and a != b \
                        and not (i == 0 and max_batch > 0):
                    problems.append(f"{kind} {t.name} has shape {list(dims)}, edged's "
                                    f"model {_shape_text(t.shape)}")
                    break
    if problems:
        raise TritonError(f"{where} does not match {local}: {'; '.join(problems)}")


def _shape_text(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape) + "]"


@dataclass(frozen=True, slots=True)
class Event:
    """The remote model went down (`up` False, `reason` why) or came back."""

    up: bool
    reason: str
    t_mono: float


class _Channel:
    """One thread's client (and shared-memory regions), for one connection generation."""

    def __init__(self, remote: RemoteModel, generation: int, timeout_s: float) -> None:
        c = remote.config
        self.mod = _tritonclient(c.protocol)
        self.generation = generation
        self.regions: dict[tuple[str, ...], list[tuple[str, Any, int]]] = {}
        tls = c.tls
        if c.protocol == "grpc":
            kw: dict[str, Any] = {}
            if tls is not None:
                kw = {"ssl": True, "root_certificates": str(tls.ca) if tls.ca else None,
                      "private_key": str(tls.key) if tls.key else None,
                      "certificate_chain": str(tls.cert) if tls.cert else None}
            self.client = self.mod.InferenceServerClient(c.url, **kw)
        else:
            kw = {"connection_timeout": remote.probe_timeout_s, "network_timeout": timeout_s}
            if tls is not None:
                opts: dict[str, Any] = {}
                if tls.ca:
                    opts["ca_certs"] = str(tls.ca)
                if tls.cert:
                    opts["certfile"], opts["keyfile"] = str(tls.cert), str(tls.key)
                kw |= {"ssl": True, "ssl_options": opts}
            self.client = self.mod.InferenceServerClient(c.url, **kw)
        self._shm_serial = 0
        self.headers = remote.headers or None
        self.remote = weakref.proxy(remote)

    def close(self) -> None:
        for regions in self.regions.values():
            for name, handle, _ in regions:
                # a server that went away forgot them anyway
                with contextlib.suppress(Exception):
                    self.client.unregister_system_shared_memory(name,
                                                                headers=self.headers)
                _shm().destroy_shared_memory_region(handle)
        self.regions.clear()
        with contextlib.suppress(Exception):  # a broken connection: nothing more to do
            self.client.close()

    def _shm_regions(self, feeds: dict[str, np.ndarray], out_shapes: list[tuple[int, ...]],
                     out_types: list[str]) -> list[tuple[str, Any, int]]:
        """Input regions then output regions, registered once per shape combination."""
        key = tuple(f"{k}{v.shape}" for k, v in feeds.items())
        regions = self.regions.get(key)
        if regions is None:
            shm = _shm()
            regions = []
            sizes = [v.nbytes for v in feeds.values()]
            sizes += [int(np.prod(s)) * np.dtype(t).itemsize
                      for s, t in zip(out_shapes, out_types)]
            for size in sizes:
                self._shm_serial += 1
                name = f"edged-{os.getpid()}-{threading.get_ident()}-{self._shm_serial}"
                handle = shm.create_shared_memory_region(name, "/" + name, size)
                self.client.register_system_shared_memory(name, "/" + name, size,
                                                          headers=self.headers)
                regions.append((name, handle, size))
            self.regions[key] = regions
        return regions

    def infer(self, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        r = self.remote
        mod = self.mod
        inputs = []
        for name, value in feeds.items():
            i = mod.InferInput(name, list(value.shape), KSERVE_TYPES[value.dtype.name])
            inputs.append(i)
        outputs = [mod.InferRequestedOutput(n) for n in names]
        shm_out: list[tuple[Any, str, tuple[int, ...]]] = []
        if r.config.shared_memory:
            n = next(iter(feeds.values())).shape[0]
            shapes = [r.output_shape(o, n) for o in names]
            types = [r.output_dtype(o) for o in names]
            regions = self._shm_regions(feeds, shapes, types)
            shm = _shm()
            for i, value, (rname, handle, size) in zip(inputs, feeds.values(), regions):
                shm.set_shared_memory_region(handle, [np.ascontiguousarray(value)])
                i.set_shared_memory(rname, size)
            for o, (rname, handle, size), s, t in zip(outputs, regions[len(feeds):],
                                                      shapes, types):
                o.set_shared_memory(rname, size)
                shm_out.append((handle, t, s))
        else:
            for i, value in zip(inputs, feeds.values()):
                if r.config.protocol == "http":
                    i.set_data_from_numpy(value, binary_data=True)
                else:
                    i.set_data_from_numpy(value)
            if r.config.protocol == "http":
                outputs = [mod.InferRequestedOutput(n, binary_data=True) for n in names]
        kw: dict[str, Any] = {"model_version": r.config.version, "outputs": outputs,
                              "headers": r.headers or None}
        if r.config.protocol == "grpc":
            kw["client_timeout"] = r.timeout_s
        result = self.client.infer(r.config.model, inputs, **kw)
        if shm_out:
            return [np.array(_shm().get_contents_as_numpy(h, np.dtype(t), list(s)))
                    for h, t, s in shm_out]
        values = []
        for n in names:
            v = result.as_numpy(n)
            if v is None:
                raise TritonError(f"{r.config.where}: the response has no output {n}")
            values.append(v)
        return values


def _shm() -> Any:
    import tritonclient.utils.shared_memory as shm
    return shm


class RemoteModel:
    """The model on the server, validated against the local graph's tensors."""

    def __init__(self, config: TritonConfig, local: str, inputs: list[TensorInfo],
                 outputs: list[TensorInfo], timeout_s: float) -> None:
        _tritonclient(config.protocol)  # the extra, before anything else
        self.config = config
        self.local = local
        self.inputs = inputs
        self.outputs = {o.name: o for o in outputs}
        self.timeout_s = timeout_s
        # health and metadata calls are not on a frame's path: they may take longer
        self.probe_timeout_s = max(timeout_s, 2.0)
        self.headers = read_auth(config)
        self.max_batch = 0
        self._lock = threading.Lock()
        self._generation = 0
        self._local = threading.local()
        self._channels: list[_Channel] = []
        self.up = False
        self._downs = 0
        self._up_at = 0.0
        self.reason = "not connected yet"
        self._retry = config.retry_s
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()
        self.events: deque[Event] = deque(maxlen=64)
        # frames computed on the server and on the local fallback since start
        self.remote_frames = 0
        self.fallback_frames = 0

    # ------------------------------------------------------------------ health

    def connect(self) -> None:
        """Reach the server, check the model is ready and matches the local graph; up.
        TritonError (and down) otherwise."""
        try:
            self._validate()
        except TritonError as e:
            self._down(str(e))
            raise
        self._mark_up()

    def _validate(self) -> None:
        c = self.config
        # its own client, with the probe's timeout: a probe must not share a thread's
        ch = _Channel(self, -1, self.probe_timeout_s)
        try:
            kw: dict[str, Any] = {"headers": self.headers or None}
            if c.protocol == "grpc":
                kw["client_timeout"] = self.probe_timeout_s
            try:
                live = ch.client.is_server_live(**kw)
            except Exception as e:
                raise TritonError(f"{c.where}: server not reachable: {_short(e)}") from None
            if not live:
                raise TritonError(f"{c.where}: server not live")
            try:
                ready = ch.client.is_model_ready(c.model, c.version, **kw)
            except Exception as e:
                raise TritonError(f"{c.where}: {_short(e)}") from None
            if not ready:
                raise TritonError(f"{c.where}: the model is not ready on the server "
                                  f"(not loaded, or no such model)")
            try:
                if c.protocol == "grpc":
                    meta = ch.client.get_model_metadata(c.model, c.version, as_json=True,
                                                        **kw)
                    conf = ch.client.get_model_config(c.model, c.version, as_json=True,
                                                      **kw)["config"]
                else:
                    meta = ch.client.get_model_metadata(c.model, c.version, **kw)
                    conf = ch.client.get_model_config(c.model, c.version, **kw)
            except Exception as e:
                raise TritonError(f"{c.where}: model metadata: {_short(e)}") from None
            self.max_batch = int(conf.get("max_batch_size", 0) or 0)
            check_tensors(c.where, self.local, meta, self.max_batch, self.inputs,
                          list(self.outputs.values()))
        finally:
            ch.close()

    def _mark_up(self) -> None:
        with self._lock:
            was = self.up
            self.up = True
            self.reason = ""
            self._up_at = time.monotonic()
            # coming back is news; being up from the start is not
            if not was and self._downs:
                self.events.append(Event(True, f"{self.config.where} is usable",
                                         time.monotonic()))
        if not was:
            log.info("%s: connected, model validated against %s", self.config.where,
                     self.local)

    def usable(self) -> bool:
        return self.up

    def failed(self, error: BaseException) -> None:
        """A request failed: down, and the prober starts (once)."""
        self._down(_short(error))

    def _down(self, reason: str) -> None:
        with self._lock:
            was = self.up
            first = was or not self._downs  # the first failure at start is news too
            self._downs += 1
            # a server that stayed up a while starts the back-off afresh; one that fails
            # again soon after coming back (slow, flapping) keeps its longer delay
            if was:
                if time.monotonic() - self._up_at > 2 * self.config.retry_max_s:
                    self._retry = self.config.retry_s
                else:
                    self._retry = min(self._retry * 2, self.config.retry_max_s)
            self.up = False
            self.reason = reason
            self._generation += 1  # every thread's client is rebuilt after this
            if first:
                self.events.append(Event(False, reason, time.monotonic()))
                log.warning("%s; the local model takes over, retrying every %g-%g s",
                            reason, self.config.retry_s, self.config.retry_max_s)
            if self._prober is None and not self._closed.is_set():
                self._prober = threading.Thread(target=_probe_loop, args=(weakref.ref(self),),
                                                name="triton-probe", daemon=True)
                self._prober.start()

    def _probe_once(self) -> bool:
        """One reconnect attempt: True once up (the prober ends), else False and the next
        delay doubled."""
        try:
            self._validate()
        except TritonError as e:
            with self._lock:
                if str(e) != self.reason:
                    log.warning("%s", e)
                self.reason = str(e)
                self._retry = min(self._retry * 2, self.config.retry_max_s)
            return False
        with self._lock:
            self._prober = None
        self._mark_up()
        return True

    def take_events(self) -> list[Event]:
        out = []
        while self.events:
            out.append(self.events.popleft())
        return out

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            channels, self._channels = self._channels, []
        for ch in channels:
            ch.close()

    # ------------------------------------------------------------------ running

    def output_shape(self, name: str, batch: int) -> tuple[int, ...]:
        shape = self.outputs[name].shape
        return tuple(d if isinstance(d, int) and d >= 0 else batch for d in shape)

    def output_dtype(self, name: str) -> str:
        return self.outputs[name].dtype

    def run(self, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """Outputs by name, or TritonError; checked against the local graph's shapes, so a
        bad response is an error here, never a wrong detection."""
        ch: _Channel | None = getattr(self._local, "channel", None)
        if ch is None or ch.generation != self._generation:
            if ch is not None:
                with self._lock:
                    if ch in self._channels:
                        self._channels.remove(ch)
                ch.close()
            ch = self._local.channel = _Channel(self, self._generation, self.timeout_s)
            with self._lock:
                self._channels.append(ch)
        try:
            values = ch.infer(feeds, names)
        except TritonError:
            raise
        except Exception as e:  # tritonclient's InferenceServerException, socket errors
            raise TritonError(f"{self.config.where}: {_short(e)}") from None
        n = next(iter(feeds.values())).shape[0]
        for name, v in zip(names, values):
            want = self.output_shape(name, n)
            if v.shape != want or v.dtype.name != self.output_dtype(name):
                raise TritonError(f"{self.config.where}: output {name} came back as "
                                  f"{v.dtype.name} {list(v.shape)}, expected "
                                  f"{self.output_dtype(name)} {list(want)}")
        return values


def _probe_loop(ref: weakref.ReferenceType[RemoteModel]) -> None:
    """Wait the current back-off, probe; until up, closed, or the model is dropped."""
    while True:
        remote = ref()
        if remote is None:
            return
        closed, wait = remote._closed, remote._retry
        del remote  # no strong reference while sleeping: a dropped model ends the loop
        if closed.wait(wait):
            return
        remote = ref()
        if remote is None or remote._probe_once():
            return
        del remote


def _short(e: BaseException) -> str:
    """One line of an exception, without tritonclient's prefixes."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]
