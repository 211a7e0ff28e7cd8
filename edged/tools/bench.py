"""`edged bench`: the configured pipeline against the loops people write by hand.

Three measurements in one run, on the same model, session and thread settings:

- raw: a bare `session.run` loop on one pre-processed tensor; and the same loop run
  by as many threads as edged has inference workers (the machine's ceiling for this
  model and these settings);
- serial: read, pre-process, infer, post-process, encode, publish, repeat, in one
  thread (the usual OpenCV + onnxruntime loop);
- edged: the real pipeline with the config's cameras, received by a real subscriber;
  latency is capture to received.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edged.capture.sources import source_for
from edged.config import Config
from edged.inference.cpu import detect as detect_cpu
from edged.inference.pool import Models
from edged.inference.runner import ModelRunner
from edged.results import Frame
from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, MaskEncoder, Message, encode_result
from edged.wire.publisher import Publisher


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    p = np.percentile(values, [50, 90, 99])
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2])}


def raw_loop(runner: ModelRunner, frame: np.ndarray, n: int, loops: int = 1
             ) -> dict[str, float]:
    """`loops` threads each running `session.run` on a ready tensor, n runs in all."""
    from edged.inference.preprocess import Preprocessor

    pre = Preprocessor(runner.manifest.preprocess)
    pre(frame)
    for _ in range(3):
        runner.run_tensor(pre.tensor)
    times: list[float] = []
    per_loop = [n // loops + (1 if i < n % loops else 0) for i in range(loops)]

    def work(k: int) -> None:
        mine = []
        for _ in range(k):
            t = time.perf_counter()
            runner.run_tensor(pre.tensor)
            mine.append((time.perf_counter() - t) * 1e3)
        times.extend(mine)

    threads = [threading.Thread(target=work, args=(k,)) for k in per_loop]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {"fps": n / wall, "inference_ms_p50": float(np.median(times)), "frames": n,
            "loops": loops}


def serial_loop(runner: ModelRunner, config: Config, n: int) -> dict[str, float]:
    """One thread doing everything in turn, publishing to a drained local socket."""
    name, cam = next(iter(config.cameras.items()))
    source = source_for(cam, loop=True, redactor=config.redactor())  # loops until n frames
    source.open()
    with tempfile.TemporaryDirectory() as tmp:
        ep = f"ipc://{tmp}/serial.sock"
        pub = Publisher([ep], sndhwm=1000)
        stop = threading.Event()

        def drain() -> None:
            with Subscriber(ep) as sub:
                while not stop.is_set():
                    sub.recv(timeout=0.05)

        th = threading.Thread(target=drain, daemon=True)
        th.start()
        time.sleep(0.2)  # slow joiner
        encoder = MaskEncoder(config.publish.mask_encoding, config.publish.zstd_level)
        t0 = time.perf_counter()
        for seq in range(n):
            img = source.read()
            if img is None:
                break
            result = runner.infer(Frame(name, seq, img, time.time_ns(), time.monotonic_ns()))
            pub.send(encode_result(result, encoder, send_mask=config.publish.send_masks))
        wall = time.perf_counter() - t0
        stop.set()
        th.join(2)
        pub.close()
    source.close()
    return {"fps": n / wall, "frames": n}


def _all_running_from(received: dict[str, list[Message]], ended: set[str],
                      names: set[str]) -> int | None:
    """When the last camera's first result came (t_received_ns), once every camera has
    sent one or ended; None before that."""
    if not all(received.get(n) or n in ended for n in names):
        return None
    firsts = [received[n][0].t_received_ns for n in names if received.get(n)]
    return max(firsts) if firsts else None


def pipeline_run(models: Models, config: Config, n: int,
                 on_bound: Callable[[], None] | None = None) -> dict[str, Any]:
    """The real pipeline, `n` frames per camera, received by a real subscriber.

    Several cameras: their first frames come at different times (a camera's start-up
    takes longer on a loaded machine), so a fixed `n` frames each could end one camera
    before another has begun, and shares of the model are only meaningful while all of
    them run. So the run goes on until every camera has `n` results from the moment the
    last one started (or has ended), and shares are counted in the window all ran.
    """
    from edged.daemon.pipeline import Pipeline

    received: dict[str, list[Message]] = defaultdict(list)
    ended: set[str] = set()
    names = set(config.cameras)
    several = len(names) > 1
    stop = threading.Event()
    enough = threading.Event()  # several cameras: n results each while all ran

    def collect() -> None:
        t_all: int | None = None  # when the last camera started
        together: dict[str, int] = {}  # results per camera since then
        with Subscriber(config.publish.endpoints[0]) as sub:
            while not stop.is_set() and ended != names:
                m = sub.recv(timeout=0.05)
                if isinstance(m, Message):
                    received[m.camera].append(m)
                    if t_all is not None:
                        together[m.camera] += 1
                elif isinstance(m, EndOfStream):
                    ended.add(m.camera)
                else:
                    continue
                if not several or enough.is_set():
                    continue
                if t_all is None:
                    t_all = _all_running_from(received, ended, names)
                    if t_all is None:
                        continue
                    together = {c: sum(x.t_received_ns >= t_all for x in received[c])
                                for c in names}
                if all(c in ended or together[c] >= n for c in names):
                    enough.set()

    from edged.app import OUTPUTS

    pipeline = Pipeline(config, models, outputs=OUTPUTS, frames=None if several else n)

    async def run() -> None:
        task = asyncio.ensure_future(pipeline.run())
        while not task.done() and not enough.is_set():
            await asyncio.wait({task}, timeout=0.02)
        if not task.done():
            pipeline.stop()  # in-flight frames are finished and published
        await task

    pipeline.bind()  # bound first, so the subscriber is connected before the first frame
    if on_bound is not None:
        on_bound()
    th = threading.Thread(target=collect, daemon=True)
    th.start()
    time.sleep(0.5)  # the subscription reaches the publisher (PUB/SUB slow joiner)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    asyncio.run(run())
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    th.join(5)
    stop.set()
    snapshot = pipeline.latest_stats()  # once stopped: the whole run
    cams: dict[str, Any] = {}
    total = 0
    for name in config.cameras:
        msgs = received.get(name, [])
        total += len(msgs)
        span = (msgs[-1].t_received_ns - msgs[0].t_received_ns) / 1e9 if len(msgs) > 1 else 0.0
        stages: dict[str, list[float]] = defaultdict(list)
        for m in msgs:
            for k, v in m.timings_ms.items():
                stages[k].append(v)
        snap = snapshot.cameras.get(name)
        cams[name] = {
            "received": len(msgs),
            "fps": (len(msgs) - 1) / span if span > 0 else None,
            "e2e_ms": _pct([m.latency_ms for m in msgs]),
            "stages_ms_p50": {k: float(np.median(v)) for k, v in stages.items()},
            "drops": None if snap is None else snap.drops.to_wire(),
            "late": None if snap is None else snap.late,
        }
    # the process's CPU time (every thread, the subscriber's and clients' included)
    out: dict[str, Any] = {"cameras": cams, "total": {
        "received": total, "fps": total / wall, "wall_s": wall,
        "cpu_ms_per_frame": cpu * 1e3 / total if total else None}}
    if several:
        shares, why = _shares_all_running(received, names)
        for name in config.cameras:
            cams[name].update(shares.get(name, {"fps_all_running": None,
                                                "share_all_running": None}))
        if why:
            out["shares_all_running_missing"] = why
    return out


def _shares_all_running(received: dict[str, list[Message]], names: set[str]
                        ) -> tuple[dict[str, dict[str, float | None]], str]:
    """Each camera's fps and share of the results in the window all cameras ran (from
    the last camera's first result to the first camera's last), or why there is none."""
    silent = sorted(n for n in names if not received.get(n))
    if silent:
        return {}, f"no results from {', '.join(silent)}"
    first = {n: received[n][0].t_received_ns for n in names}
    last = {n: received[n][-1].t_received_ns for n in names}
    t0, t1 = max(first.values()), min(last.values())
    if t1 <= t0:
        early = min(last, key=lambda n: last[n])
        late = max(first, key=lambda n: first[n])
        return {}, (f"the cameras never all ran at once: {early}'s last result came "
                    f"{(t0 - t1) / 1e6:.0f} ms before {late}'s first")
    counts = {n: sum(t0 <= m.t_received_ns <= t1 for m in received[n]) for n in names}
    together = sum(counts.values())
    return {n: {"fps_all_running": c / ((t1 - t0) / 1e9),
                "share_all_running": c / together if together else None}
            for n, c in counts.items()}, ""


class _Client:
    """A consumer of one output, on a thread and loop of its own: a WebSocket client of
    the live view (`foxglove=False`) or a Foxglove WebSocket client subscribed to every
    channel; it takes and counts every message it is sent."""

    def __init__(self, url: str, foxglove: bool = False) -> None:
        self.url = url
        self.foxglove = foxglove
        self.messages = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.connected.wait(10):
            raise RuntimeError(f"bench: {self.url} did not accept a client")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    async def _run(self) -> None:
        import json

        import aiohttp

        protocols = ("foxglove.sdk.v1", "foxglove.websocket.v1") if self.foxglove else ()
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    ws = await s.ws_connect(self.url, protocols=protocols,
                                            max_msg_size=64 * 1024 * 1024)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                return
            self.connected.set()
            sub_id = 0
            async with ws:
                while not self._stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.1)
                    except TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        self.messages += 1
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if self.foxglove and data.get("op") == "advertise":
                            subs = []
                            for ch in data["channels"]:
                                sub_id += 1
                                subs.append({"id": sub_id, "channelId": ch["id"]})
                            await ws.send_str(json.dumps({"op": "subscribe",
                                                          "subscriptions": subs}))
                    else:
                        return


_BENCH_DOMAIN = 231  # a DDS domain robots rarely use
LOOPBACK_DDS = """<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any"><General>
<Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>
<AllowMulticast>false</AllowMulticast></General><Discovery>
<ParticipantIndex>auto</ParticipantIndex><Peers><Peer address="127.0.0.1"/></Peers>
</Discovery></Domain></CycloneDDS>"""


class _DdsReader:
    """A DDS participant reading each camera's mask and detections (ROS 2's default
    profile), and the capture-to-received latency of each mask."""

    def __init__(self, domain_id: int, xml: str, cameras: list[str]) -> None:
        self.domain_id, self.xml, self.cameras = domain_id, xml, cameras
        self.messages = 0
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from cyclonedds.core import DDSException
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.qos import Policy, Qos
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic
        from cyclonedds.util import duration

        from edged.outputs.base.ros2msgs import msgs

        # the domain is the ROS 2 sink's, configured by it in this process
        p = DomainParticipant(self.domain_id)
        qos = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)),
                  Policy.History.KeepLast(10), Policy.Durability.Volatile)
        masks = [DataReader(p, Topic(p, f"rt/edged/{c}/mask", msgs.Image), qos=qos)
                 for c in self.cameras]
        dets = [DataReader(p, Topic(p, f"rt/edged/{c}/detections", msgs.Detection2DArray),
                           qos=qos) for c in self.cameras]
        self._ready.set()
        try:
            while not self._stop.is_set():
                for r in masks:
                    for m in r.take(N=20):
                        if not isinstance(m, msgs.Image):
                            continue  # a writer's end (an invalid sample), not a message
                        now = time.time_ns()
                        t = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
                        self.latencies_ms.append((now - t) / 1e6)
                        self.messages += 1
                for dr in dets:
                    self.messages += len(dr.take(N=20))
                time.sleep(0.002)
        except DDSException:
            pass  # the pipeline stopped first and its domain went with it
        finally:
            for mr in masks:
                mr.__del__()
            for dr in dets:
                dr.__del__()
            p.__del__()


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    cams = list(run["cameras"].values())
    return {"fps": run["total"]["fps"], "cpu_ms_per_frame": run["total"].get("cpu_ms_per_frame"),
            "inference_ms_p50": [c["stages_ms_p50"].get("inference") for c in cams],
            "e2e_ms": [c["e2e_ms"] for c in cams]}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sink_costs(config: Config, models: Models, frames: int) -> list[dict[str, Any]]:
    """The pipeline with each new output on, without and with a consumer."""
    from edged.outputs.foxglove.settings import FoxgloveConfig
    from edged.outputs.record.settings import RecordConfig
    from edged.outputs.ros2.settings import Ros2Config
    from edged.outputs.view.settings import ViewConfig

    rows: list[dict[str, Any]] = []

    def case(label: str, cfg: Config, client: _Client | _DdsReader | None = None) -> None:
        run = pipeline_run(models, cfg, frames,
                           on_bound=client.start if client is not None else None)
        if client is not None:
            client.stop()
        rows.append({"case": label, **_summary(run),
                     "consumed": client.messages if client is not None else None})

    base = config.model_copy(update={"view": None, "foxglove": None, "record": None})
    case("no extra output", base)
    view = ViewConfig(listen=f"127.0.0.1:{_free_port()}")
    case("view, nobody watching", base.model_copy(update={"view": view}))
    case("view, one viewer", base.model_copy(update={"view": view}),
         _Client(f"http://{view.listen}/ws"))
    fox = FoxgloveConfig(listen=f"127.0.0.1:{_free_port()}")
    case("foxglove, no client", base.model_copy(update={"foxglove": fox}))
    case("foxglove, one client on every channel", base.model_copy(update={"foxglove": fox}),
         _Client(f"ws://{fox.listen}", foxglove=True))
    try:
        import cyclonedds  # noqa: F401
    except ImportError:
        pass
    else:
        with tempfile.TemporaryDirectory(prefix="edged-bench-dds-") as d:
            xml = Path(d) / "loopback.xml"
            xml.write_text(LOOPBACK_DDS)
            ros = Ros2Config(domain_id=_BENCH_DOMAIN, cyclonedds_config=xml)
            case("ros2, no reader", base.model_copy(update={"ros2": ros}))
            reader = _DdsReader(_BENCH_DOMAIN, LOOPBACK_DDS, [n for n in base.cameras])
            case("ros2, a reader of mask and detections", base.model_copy(update={"ros2": ros}),
                 reader)
            rows[-1]["dds_e2e_ms"] = _pct(reader.latencies_ms)
    with tempfile.TemporaryDirectory(prefix="edged-bench-rec-") as d:
        rec = RecordConfig(dir=Path(d), max_mb=2000, rotate_mb=500)
        case("record everything, with frames", base.model_copy(update={"record": rec}))
        rec = RecordConfig(dir=Path(d), trigger="on_miss", max_mb=2000, rotate_mb=500)
        case("record on_miss (buffering, no miss)", base.model_copy(update={"record": rec}))
    return rows


def first_frame(config: Config) -> np.ndarray:
    """One frame of the first camera (the frame the bench loops time)."""
    name, cam = next(iter(config.cameras.items()))
    src = source_for(cam, loop=True, redactor=config.redactor())
    src.open()
    frame = src.read()
    src.close()
    if frame is None:
        raise RuntimeError(f"camera {name} gave no frame")
    return frame


def bench(config: Config, models: Models, frames: int, with_sinks: bool = False
          ) -> dict[str, Any]:
    runner = models.rungs[0]
    workers = models.plan.workers
    first = first_frame(config)
    raw = raw_loop(runner, first, frames)
    raw_par = raw_loop(runner, first, frames, workers) if workers > 1 else raw
    serial = serial_loop(runner, config, frames)
    edged = pipeline_run(models, config, frames)
    ef = edged["total"]["fps"]
    inf = [c["stages_ms_p50"].get("inference") for c in edged["cameras"].values()]
    e2e = [c["e2e_ms"]["p50"] for c in edged["cameras"].values()]
    return {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cpu_info": detect_cpu().to_json(),
                    "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "model": {"path": str(runner.options.path), "id": runner.model_id,
                  "providers": runner.providers, "threads": runner.threads,
                  "workers": workers, "max_batch": models.max_batch},
        "frames_per_camera": frames,
        "raw_onnxruntime": raw, "raw_onnxruntime_parallel": raw_par, "serial_loop": serial,
        "edged": edged,
        "ratios": {"edged_vs_raw": ef / raw["fps"], "edged_vs_raw_parallel": ef / raw_par["fps"],
                   "edged_vs_serial": ef / serial["fps"]},
        "overhead_ms_p50": [None if a is None or b is None else a - b for a, b in zip(e2e, inf)],
        "sinks": sink_costs(config, models, frames) if with_sinks else None,
    }


def provider_comparison(config: Config, runs: int = 100, also: tuple[Path, ...] = ()
                        ) -> list[dict[str, Any]]:
    """The configured model (and each of `also`) on each execution provider this
    onnxruntime build offers (and edged knows), one thread each unless the config says
    otherwise, all the sessions taking turns run by run on one frame: p50 ms, the ratio to
    the same model's CPU EP p50 (`vs_cpu`) and to the configured model's (`vs_base`) in the
    same runs, and where the nodes ran. Comparing an int8 file on OpenVINO with the fp32
    model on the CPU EP thus needs one command. A provider that fails to load is reported
    with onnxruntime's reason."""
    import dataclasses

    import onnxruntime as ort

    from edged.inference.preprocess import Preprocessor
    from edged.inference.providers import PROVIDER_NAMES, provider_chain
    from edged.inference.runner import ModelError, ModelRunner, time_interleaved

    base = config.model.runner_options()
    base = dataclasses.replace(base, threads=base.threads or 1, warmup_runs=1)
    available = set(ort.get_available_providers())
    frame = first_frame(config)
    rows: list[dict[str, Any]] = []
    runners: list[ModelRunner] = []
    tensors: list[list[np.ndarray]] = []
    timed: list[dict[str, Any]] = []  # the rows of `runners`, in order
    for path in (base.path, *also):
        for name, ort_name in PROVIDER_NAMES.items():
            if ort_name not in available:
                continue
            row: dict[str, Any] = {"model": str(path), "provider": name}
            try:
                r = ModelRunner(dataclasses.replace(base, path=path,
                                                    providers=provider_chain(name, base.threads)))
            except ModelError as e:
                rows.append({**row, "error": str(e)})
                continue
            if name != "cpu" and r.active_provider != ort_name:
                rows.append({**row, "error": "onnxruntime did not take it (fell back to "
                                            f"{', '.join(r.providers)})"})
                continue
            pre = Preprocessor(r.manifest.preprocess)
            pre(frame)
            runners.append(r)
            tensors.append([pre.tensor.copy()])
            timed.append({**row, "placement": r.placement_summary, "threads": r.threads})
            rows.append(timed[-1])
    if not runners:
        return rows
    times = time_interleaved(runners, tensors, runs, warmup=5)
    medians = [float(np.median(t)) for t in times]
    cpu_ms = {row["model"]: m for row, m in zip(timed, medians) if row["provider"] == "cpu"}
    base_ms = cpu_ms.get(str(base.path))
    for row, m in zip(timed, medians):
        row["ms_p50"] = m
        own = cpu_ms.get(row["model"])
        row["vs_cpu"] = own / m if own else None
        row["vs_base"] = base_ms / m if base_ms else None
    return rows


def format_providers(rows: list[dict[str, Any]], runs: int) -> str:
    models = list(dict.fromkeys(x["model"] for x in rows))
    lines = [f"providers ({runs} runs each, all sessions taking turns):"]
    for model in models:
        lines.append(f"  {model}" + (" (base)" if model == models[0] else ""))
        for x in rows:
            if x["model"] != model:
                continue
            if "error" in x:
                lines.append(f"    {x['provider']:<10} failed: {x['error']}")
                continue
            ratio = f"{x['vs_cpu']:.2f}x its CPU EP" if x["vs_cpu"] else ""
            if x["vs_base"] and model != models[0]:
                ratio += f", {x['vs_base']:.2f}x the base on the CPU EP"
            lines.append(f"    {x['provider']:<10} {x['ms_p50']:7.2f} ms p50 ({x['threads']} "
                         f"thread(s)) {ratio}; {x['placement']}")
    return "\n".join(lines)


def format_report(r: dict[str, Any]) -> str:
    m = r["model"]
    rp = r["raw_onnxruntime_parallel"]
    ci = r["machine"].get("cpu_info") or {}
    lines = [f"cpu: {ci.get('model') or '?'}, {' '.join(ci.get('features', []))} (int8 class "
             f"{ci.get('int8_class', '?')})",
             f"model {m['id']} on {', '.join(m['providers'])}, {m['workers']} worker(s) x "
             f"{m['threads']} thread(s), batch up to {m['max_batch']}; "
             f"{r['machine']['cores']} cores",
             f"raw onnxruntime loop: {r['raw_onnxruntime']['fps']:.1f} fps "
             f"(inference p50 {r['raw_onnxruntime']['inference_ms_p50']:.2f} ms)",
             f"raw, {rp['loops']} loop(s) at once: {rp['fps']:.1f} fps",
             f"serial loop:          {r['serial_loop']['fps']:.1f} fps",
             f"edged:                {r['edged']['total']['fps']:.1f} fps "
             f"({r['ratios']['edged_vs_raw']:.2f}x raw, "
             f"{r['ratios']['edged_vs_raw_parallel']:.2f}x raw x{rp['loops']}, "
             f"{r['ratios']['edged_vs_serial']:.2f}x serial)"]
    for name, c in r["edged"]["cameras"].items():
        e = c["e2e_ms"]
        st = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["stages_ms_p50"].items()))
        fps = f"{c['fps']:.1f}" if c["fps"] else "-"
        if e["p50"] is None:
            lines.append(f"  {name}: nothing received")
            continue
        share = (f" ({c['fps_all_running']:.1f} fps, {c['share_all_running']:.0%} of the "
                 f"model while all cameras ran)"
                 if c.get("share_all_running") is not None else "")
        lines.append(f"  {name}: {c['received']} results, {fps} fps{share}, e2e p50/p90/p99 "
                     f"{e['p50']:.1f}/{e['p90']:.1f}/{e['p99']:.1f} ms; stages p50 ms: {st}; "
                     f"drops {c['drops']}, late {c['late']}")
    if r["edged"].get("shares_all_running_missing"):
        lines.append(f"  no shares of the model: {r['edged']['shares_all_running_missing']}")
    rows = r.get("sinks")
    if rows:
        lines.append("outputs (fps, CPU per frame, inference p50, e2e p50/p99 per camera):")
        for x in rows:
            e2e = ", ".join(f"{e['p50']:.1f}/{e['p99']:.1f}" for e in x["e2e_ms"]
                            if e["p50"] is not None)
            inf = ", ".join(f"{i:.2f}" for i in x["inference_ms_p50"] if i is not None)
            cpu = x["cpu_ms_per_frame"]
            used = f", {x['consumed']} messages consumed" if x["consumed"] is not None else ""
            if x.get("dds_e2e_ms") and x["dds_e2e_ms"]["p50"] is not None:
                dd = x["dds_e2e_ms"]
                used += f"; capture to DDS reader p50/p99 {dd['p50']:.1f}/{dd['p99']:.1f} ms"
            lines.append(f"  {x['case']:<40} {x['fps']:6.1f} fps, "
                         f"{cpu:.2f} CPU ms/frame, inference {inf} ms, e2e {e2e} ms{used}")
    return "\n".join(lines)


def write_synthetic_video(path: Path, frames: int, seed: int = 0, width: int = 640,
                          height: int = 480, fps: float = 30.0) -> None:
    """An MJPG AVI of synthetic scenes, for replay benchmarks."""
    import cv2

    from edged.synth import render

    # OpenCV's own MJPEG writer only: with the default backends a path it cannot write
    # falls through to the image-sequence writer, which prints an assertion to stderr
    vw = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"), fps,
                         (width, height))
    if not vw.isOpened():
        raise RuntimeError(f"cannot write {path}")
    for i in range(frames):
        vw.write(render(seed, i, width, height).image)
    vw.release()
