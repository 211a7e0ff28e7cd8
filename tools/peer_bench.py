"""edged against what people would run instead, on the same clip, cores and ONNX file.

    .venv-refs/bin/python tools/peer_bench.py --frames 300 --rounds 3 --plot docs/peer_latency.png
    .venv-refs/bin/python tools/peer_bench.py --model demo --frames 300 --rounds 3

Run in the reference venv (.ci/run's `.venv-refs`: torch CPU, ultralytics, matplotlib).
It writes a 640x480 MJPG clip of synthetic scenes and a YOLOv8n-seg export with random
but calibrated weights (tests/ultralytics_exports.py; nothing is downloaded), picks one
score threshold at which the export finds about 10-50 objects per frame of the clip, and
then runs each contender in a process of its own, in alternating order, `--rounds` times:

- edged-replay, edged-realtime: the real pipeline in process (as `edged bench` drives
  it), received by a real ZeroMQ subscriber; every frame in replay (`every_frame`), the
  clip paced at `--rate` fps in realtime (the newest frame wins);
- ultralytics: `YOLO(onnx)` called on each frame as its "streaming for-loop" example
  does (cv2.VideoCapture; `predict(stream=True)` on the file itself needs torchvision,
  which cannot load in this venv: see `run_ultralytics`), every frame (replay) or the
  newest frame of a paced reader thread (realtime); `retina_masks=True`, so its masks
  are at camera resolution like edged's;
- user: an OpenCV + onnxruntime loop as a user writes it (read, letterbox,
  `blobFromImage`, run, threshold, `NMSBoxes`, sigmoid of coefficients x prototypes,
  each mask resized to the frame and cropped to its box), as written with onnxruntime's
  and OpenCV's defaults;
- user-tuned: the same loop with the session options onnxruntime's docs give (threads =
  the cores, no spinning between runs) and `cv2.setNumThreads(1)`.

`--model demo`: edged's built-in demo instead (`builtin:yoeo-demo`, the int8 variant
`edged run` picks for this CPU; YOEO: boxes + a semantic class map) on the same clip,
which is rendered by the synthetic camera the demo is made for (`edged.synth`, seed 0,
640x480), at its manifest's score threshold. Contenders: edged and the user's loop
written for this model (letterbox with zero padding, `blobFromImage`, run, objectness
and class x objectness thresholds, multi-label, `NMSBoxesBatched`, the class map cropped
and resized to the frame; edged's consumer likewise takes `mask_camera()` before its
result is timed). Ultralytics is not a contender there: it has no YOEO family.

Per contender and mode: frames per second, latency per frame from the end of its decode
to its result (p50/p99), CPU time per frame (the child process's user+system time over
the timed part, every thread), peak RSS, and objects per frame (so each did the work).
Every result is tagged with its frame of the clip, so each contender's objects per frame
(and, for the demo, its class map's shares) are compared with edged's on the frames both
processed: the agreement that says both did the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("edged", "ultralytics", "user", "user-tuned")
MODES = ("replay", "realtime")
MODELS = ("yolov8n-seg", "demo")
NO_YOEO = ("ultralytics: not run on the demo: Ultralytics has no YOEO family (its YOLO() "
           "tasks are its own heads: detect, segment, pose, obb, classify), so it cannot "
           "decode the demo's box rows and class map")
SHARE_STEP = 4  # class-map shares from every 4th pixel each way: agreement, not work


@dataclass
class Trace:
    """What a child measured, one entry per result."""

    latency_ms: list[float] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)
    frame: list[int] = field(default_factory=list)  # its frame's index in the clip
    shares: list[list[float]] = field(default_factory=list)  # demo: class-map shares


def class_shares(mask: np.ndarray | None, n_classes: int) -> list[float]:
    if mask is None:
        return []
    counts = np.bincount(mask[::SHARE_STEP, ::SHARE_STEP].ravel(), minlength=n_classes)
    return (counts / counts.sum()).tolist()


# ---------------------------------------------------------------- set-up (parent)

def make_inputs(work: Path, frames: int, imgsz: int, model: str) -> tuple[Path, Path]:
    """The clip and the model: the demo's packaged file, or an export made once per work
    directory."""
    from edged.tools.bench import write_synthetic_video

    work.mkdir(parents=True, exist_ok=True)
    clip = work / f"clip-{frames}.avi"
    if not clip.exists():
        write_synthetic_video(clip, frames, fps=30.0)
    if model == "demo":
        from edged.config.model import builtin_variant

        return clip, builtin_variant("yoeo-demo")  # what `edged run` with no config loads
    onnx = work / f"yolov8n-seg-{imgsz}.onnx"
    if not onnx.exists():
        sys.path.insert(0, str(ROOT / "tests"))
        import ultralytics_exports as ue

        ue.IMGSZ = imgsz  # the export's input size; read by export() at call time
        made = ue.export("yolov8n-seg.yaml", work, onnx.stem)
        assert made == onnx, made
    return clip, onnx


def pick_threshold(clip: Path, onnx: Path, lo: int, hi: int, n: int, probe: int = 16
                   ) -> tuple[float, float]:
    """The highest score threshold at which edged's runner finds a mean of at least `lo`
    objects per frame (at most `hi`) on `probe` frames spread over the clip's first `n`
    (the frames the contenders run); and that mean."""
    import cv2

    from edged.inference.runner import ModelOptions, ModelRunner
    from edged.results import Frame

    cap = cv2.VideoCapture(str(clip))
    frames = []
    step = max(1, n // probe)
    for i in range(n):
        ok, img = cap.read()
        if not ok:
            break
        if i % step == 0:
            frames.append(img)
    cap.release()
    if not frames:
        raise SystemExit(f"peer_bench: no frame could be read from {clip}")
    for conf in (0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01):
        runner = ModelRunner(ModelOptions(path=onnx, threads=1, conf_threshold=conf,
                                          warmup_runs=0))
        mean = statistics.mean(len(runner.infer(Frame("probe", i, f, 0, 0)).detections)
                               for i, f in enumerate(frames))
        if mean >= lo:
            if mean > hi:
                raise SystemExit(f"peer_bench: {mean:.1f} objects per frame at conf {conf} "
                                 f"(above {hi}) and fewer than {lo} at the step above: widen "
                                 "--objects")
            return conf, mean
    raise SystemExit(f"peer_bench: fewer than {lo} objects per frame even at conf 0.01")


# ---------------------------------------------------------------- children

class Timed:
    """The timed part of a child: from `start()` (after loading and warm-up, just before
    the first frame is read) to `stop()`: the process's CPU time; and `span_s`, from the
    end of the first frame's decode to the last result (what frames per second count)."""

    def __init__(self) -> None:
        self.t0 = self.t1 = 0.0
        self.cpu = 0.0
        self.span_s = 0.0

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def start(self) -> None:
        self.t0, self.cpu = time.perf_counter(), self._cpu()

    def stop(self) -> None:
        self.t1, self.cpu = time.perf_counter(), self._cpu() - self.cpu


TIMED = Timed()

class Paced:
    """A live camera from a file: decodes a frame every 1/rate s into a newest-frame
    slot (an unprocessed frame is replaced), stamping when its decode ended."""

    def __init__(self, clip: Path, rate: float) -> None:
        import cv2

        self._cap = cv2.VideoCapture(str(clip))
        self._period = 1.0 / rate
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, float, int] | None = None
        self._stop = False
        self.read = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t_next = time.perf_counter()
        index = 0
        while not self._stop:
            ok, img = self._cap.read()
            if not ok:  # loop the clip
                self._cap.set(1, 0)  # CAP_PROP_POS_FRAMES
                index = 0
                continue
            with self._cond:
                self._slot = (img, time.perf_counter(), index)
                self.read += 1
                self._cond.notify_all()
            index += 1
            t_next += self._period
            time.sleep(max(0.0, t_next - time.perf_counter()))

    def frames(self, n: int) -> Iterator[tuple[np.ndarray, float, int]]:
        for _ in range(n):
            with self._cond:
                while self._slot is None:
                    self._cond.wait()
                item, self._slot = self._slot, None
            yield item

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._cap.release()


def replay_frames(clip: Path, n: int) -> Iterator[tuple[np.ndarray, float, int]]:
    """Every frame, in order (the clip looped), stamped at the end of its decode, with
    its index in the clip."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    got = index = 0
    while got < n:
        ok, img = cap.read()
        if not ok:
            cap.set(1, 0)
            index = 0
            continue
        got += 1
        yield img, time.perf_counter(), index
        index += 1
    cap.release()


Process = Callable[[np.ndarray], tuple[int, np.ndarray | None]]


def letterbox_blob(frame: np.ndarray, size: int, pad: int
                   ) -> tuple[np.ndarray, tuple[float, int, int, int, int]]:
    """A user loop's pre-processing: a centred letterbox to `size` padded with `pad`,
    RGB, /255, NCHW; with (scale, top, left, new width, new height) to map back."""
    import cv2

    h, w = frame.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    top, left = (size - nh) // 2, (size - nw) // 2
    img = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    img = cv2.copyMakeBorder(img, top, size - nh - top, left, size - nw - left,
                             cv2.BORDER_CONSTANT, value=(pad, pad, pad))
    return cv2.dnn.blobFromImage(img, 1 / 255.0, swapRB=True), (r, top, left, nw, nh)


def to_frame(xywh: np.ndarray, r: float, top: int, left: int, w: int, h: int
             ) -> np.ndarray:
    """Boxes (x0, y0, w, h in the letterboxed input) as x0, y0, x1, y1 camera pixels."""
    boxes = xywh.copy()
    boxes[:, 2:] += boxes[:, :2]
    boxes -= (left, top, left, top)
    boxes /= r
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes


def yolo_seg_loop(session: Any, conf: float) -> Process:
    """The loop a user writes from the Ultralytics ONNX examples: objects and no class
    map per frame."""
    import cv2

    inp = session.get_inputs()[0]
    size = int(inp.shape[2])
    iou = 0.7

    def process(frame: np.ndarray) -> tuple[int, np.ndarray | None]:
        h, w = frame.shape[:2]
        blob, (r, top, left, nw, nh) = letterbox_blob(frame, size, 114)
        out, protos = session.run(None, {inp.name: blob})
        preds = out[0].T  # anchors x (4 + classes + 32)
        nm = protos.shape[1]
        scores = preds[:, 4:-nm]
        best = scores.max(1)
        keep = best > conf
        preds, best, cls = preds[keep], best[keep], scores[keep].argmax(1)
        xywh = preds[:, :4].copy()
        xywh[:, :2] -= xywh[:, 2:] / 2
        idx = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), best.tolist(), cls.tolist(),
                                                 conf, iou), dtype=int).reshape(-1)[:300]
        boxes = to_frame(xywh[idx], r, top, left, w, h)
        _, _, ph, pw = protos.shape
        coef = preds[idx, -nm:]
        logits = (coef @ protos[0].reshape(nm, -1)).reshape(-1, ph, pw)
        masks = []
        for m, (x0, y0, x1, y1) in zip(1 / (1 + np.exp(-logits)), boxes.astype(int)):
            m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
            m = cv2.resize(m[top:top + nh, left:left + nw], (w, h),
                           interpolation=cv2.INTER_LINEAR)
            full = np.zeros((h, w), bool)
            full[y0:y1, x0:x1] = m[y0:y1, x0:x1] > 0.5
            masks.append(full)
        return len(boxes), None

    return process


def yoeo_loop(session: Any, conf: float) -> Process:
    """The loop a robotics user writes for the demo from its manifest (RGB, zero-padded
    centred letterbox to 416, /255; rows cx, cy, w, h, objectness, class scores; a class
    map): boxes and the class map at camera resolution."""
    import cv2

    inp = session.get_inputs()[0]
    size = int(inp.shape[2])
    iou = 0.4  # the manifest's

    def process(frame: np.ndarray) -> tuple[int, np.ndarray | None]:
        h, w = frame.shape[:2]
        blob, (r, top, left, nw, nh) = letterbox_blob(frame, size, 0)
        rows, seg = session.run(None, {inp.name: blob})
        rows = rows[0]
        rows = rows[rows[:, 4] > conf]
        scores = rows[:, 5:] * rows[:, 4:5]
        ri, ci = np.nonzero(scores > conf)  # multi-label: every class above the threshold
        xywh = rows[ri, :4].copy()
        xywh[:, :2] -= xywh[:, 2:] / 2
        idx = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores[ri, ci].tolist(),
                                                 ci.tolist(), conf, iou),
                         dtype=int).reshape(-1)[:300]
        boxes = to_frame(xywh[idx], r, top, left, w, h)
        # the graph ends in ArgMax + Cast: class ids already, so no argmax here
        ids = seg[0][top:top + nh, left:left + nw]
        return len(boxes), cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)

    return process


def run_user(clip: Path, onnx: Path, mode: str, n: int, conf: float, rate: float,
             model: str, tuned: bool = False) -> Trace:
    """An OpenCV + onnxruntime loop as a user writes it for the model; `tuned`: with the
    session options a user finds in onnxruntime's docs (threads = the cores, no spinning
    between runs) and OpenCV on one thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if tuned:
        so.intra_op_num_threads = len(os.sched_getaffinity(0))
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
    process = (yoeo_loop if model == "demo" else yolo_seg_loop)(session, conf)
    n_classes = 3  # the demo's class map: background, lines, field
    trace = Trace()
    process(next(replay_frames(clip, 1))[0])  # warm-up
    TIMED.start()
    first = None
    for frame, t, index in frames_for(clip, mode, n, rate):
        first = first or t
        objects, mask = process(frame)
        trace.latency_ms.append((time.perf_counter() - t) * 1e3)
        trace.objects.append(objects)
        trace.frame.append(index)
        if mask is not None:
            trace.shares.append(class_shares(mask, n_classes))
    TIMED.stop()
    TIMED.span_s = TIMED.t1 - (first or TIMED.t0)
    return trace


def run_user_tuned(clip: Path, onnx: Path, mode: str, n: int, conf: float, rate: float,
                   model: str) -> Trace:
    return run_user(clip, onnx, mode, n, conf, rate, model, tuned=True)


def frames_for(clip: Path, mode: str, n: int, rate: float
               ) -> Iterator[tuple[np.ndarray, float, int]]:
    if mode == "replay":
        yield from replay_frames(clip, n)
        return
    cam = Paced(clip, rate)
    try:
        yield from cam.frames(n)
    finally:
        cam.close()


def run_ultralytics(clip: Path, onnx: Path, mode: str, n: int, conf: float, rate: float,
                    model: str) -> Trace:
    if model == "demo":
        raise SystemExit(NO_YOEO)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend

    # PyPI's torchvision cannot load beside the CPU torch wheel (.ci/run), and ultralytics
    # imports it for a video file source and in an ONNX model's warm-up (which on the CPU
    # runs nothing else): so the clip is read as in Ultralytics' "streaming for-loop"
    # example (cv2.VideoCapture, then model(frame) per frame), the warm-up skipped, and
    # ultralytics runs its own TorchNMS, as it does without torchvision
    AutoBackend.warmup = lambda self, *a, **k: None  # type: ignore[method-assign]
    yolo = YOLO(str(onnx), task="segment")
    kw: dict[str, Any] = {"conf": conf, "iou": 0.7, "retina_masks": True, "verbose": False}
    yolo.predict(next(replay_frames(clip, 1))[0], **kw)  # warm-up
    trace = Trace()
    TIMED.start()
    first = None
    for frame, t, index in frames_for(clip, mode, n, rate):
        first = first or t
        r = yolo.predict(frame, **kw)[0]
        trace.latency_ms.append((time.perf_counter() - t) * 1e3)
        trace.objects.append(len(r.boxes))
        trace.frame.append(index)
    TIMED.stop()
    TIMED.span_s = TIMED.t1 - (first or TIMED.t0)
    return trace


def run_edged(clip: Path, onnx: Path, mode: str, n: int, conf: float, rate: float,
              model: str) -> Trace:
    import asyncio

    from edged.app import OUTPUTS
    from edged.config import parse_config
    from edged.daemon.models import load_models
    from edged.daemon.pipeline import Pipeline
    from edged.wire.client import Subscriber
    from edged.wire.codec import EndOfStream, Message

    tmp = tempfile.mkdtemp(prefix="edged-peers-")
    ep = f"ipc://{tmp}/pub.sock"
    cam = ("mode: every_frame" if mode == "replay" else f"mode: realtime, fps: {rate}")
    cfg = parse_config(f"""
model: {{path: {json.dumps(str(onnx))}, conf_threshold: {conf}}}
cameras:
  clip: {{source: {json.dumps(str(clip))}, {cam}, loop: true}}
publish: {{endpoints: ["{ep}"]}}
log: {{level: warning}}
""")
    models = load_models(cfg)
    pipeline = Pipeline(cfg, models, outputs=OUTPUTS, frames=n)
    pipeline.bind()
    trace = Trace()
    done = threading.Event()
    subscribed = threading.Event()
    t_first: list[int] = []
    t_last: list[int] = []

    def collect() -> None:
        with Subscriber(ep) as sub:
            subscribed.set()
            while not done.is_set():
                m = sub.recv(timeout=0.05)
                if isinstance(m, Message):
                    if model == "demo":
                        # the class map at camera resolution, as the user's loop makes it
                        mask = m.mask_camera()
                        t_done = time.time_ns()
                        trace.shares.append(class_shares(mask, len(m.mask_classes)))
                    else:
                        t_done = m.t_received_ns
                    trace.latency_ms.append((t_done - m.t_capture_ns) / 1e6)
                    trace.objects.append(len(m.scores))
                    trace.frame.append(m.seq % n)  # the clip has n frames
                    t_first[:] = t_first or [m.t_capture_ns]
                    t_last[:] = [t_done]
                elif isinstance(m, EndOfStream):
                    return

    th = threading.Thread(target=collect, daemon=True)
    th.start()
    subscribed.wait(10)
    time.sleep(0.5)  # PUB/SUB slow joiner
    TIMED.start()
    asyncio.run(pipeline.run())
    th.join(10)
    TIMED.stop()
    done.set()
    if t_first:
        TIMED.span_s = (t_last[0] - t_first[0]) / 1e9
    return trace


RUNNERS: dict[str, Callable[[Path, Path, str, int, float, float, str], Trace]] = {
    "edged": run_edged, "ultralytics": run_ultralytics, "user": run_user,
    "user-tuned": run_user_tuned}


def child(args: argparse.Namespace) -> None:
    import cv2

    if args.contender != "user":
        cv2.setNumThreads(1)  # as `edged bench` and the daemon run (one thread per stage)
    trace = RUNNERS[args.contender](Path(args.clip), Path(args.onnx), args.mode,
                                    args.frames, args.conf, args.rate, args.model)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report
    # the parent's peak (which loaded torch for the export)
    status = Path("/proc/self/status").read_text()
    rss = int(status.split("VmHWM:")[1].split()[0]) / 1024
    # the timed part only: model loading and warm-up come before it
    print(json.dumps({**asdict(trace), "cpu_s": TIMED.cpu,
                      "fps": len(trace.latency_ms) / TIMED.span_s, "rss_mb": rss}))


# ---------------------------------------------------------------- parent

def run_child(args: argparse.Namespace, contender: str, mode: str, clip: Path, onnx: Path,
              conf: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", contender, "--mode", mode,
           "--clip", str(clip), "--onnx", str(onnx), "--conf", str(conf),
           "--frames", str(args.frames), "--rate", str(args.rate), "--model", args.model]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        raise SystemExit(f"peer_bench: {contender} {mode} failed:\n{p.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    return out


def summarise(run: dict[str, Any]) -> dict[str, float]:
    if len(run["latency_ms"]) < 10:
        raise SystemExit(f"peer_bench: only {len(run['latency_ms'])} results came back")
    lat = np.asarray(run["latency_ms"][5:])  # the first few frames warm caches
    n = len(run["latency_ms"])
    return {"frames": n, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "cpu_ms_per_frame": run["cpu_s"] * 1e3 / n, "rss_mb": run["rss_mb"],
            "objects_per_frame": float(np.mean(run["objects"])), "fps": run["fps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=MODELS, default="yolov8n-seg",
                    help="demo: edged's built-in YOEO demo (edged and the user loop only)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=640, help="the export's input size")
    ap.add_argument("--rate", type=float, default=15.0, help="realtime: camera fps")
    ap.add_argument("--objects", type=int, nargs=2, default=(10, 50), metavar=("LO", "HI"))
    ap.add_argument("--conf", type=float, help="score threshold (default: picked)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edged-peers")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    ap.add_argument("--plot", type=Path, help="PNG of latency per frame (last round)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per contender run, s")
    ap.add_argument("--min-agreement", type=float, default=0.0, metavar="SHARE",
                    help="fail unless each contender's objects per frame equal edged's on "
                         "at least this share of the replay frames both processed")
    ap.add_argument("--child", choices=CONTENDERS, dest="contender", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.contender:
        child(args)
        return
    if args.frames < 10 or args.rounds < 1:
        ap.error("--frames must be at least 10 and --rounds at least 1")
    clip, onnx = make_inputs(args.work, args.frames, args.imgsz, args.model)
    if args.model == "demo":
        if "ultralytics" in args.contenders:
            print(NO_YOEO, flush=True)
            args.contenders = [c for c in args.contenders if c != "ultralytics"]
        if not args.contenders:
            ap.error("--model demo: no contender left (ultralytics cannot run it)")
        # the demo is trained: its manifest's threshold finds the scene's objects
        conf = (args.conf if args.conf is not None
                else json.loads(onnx.with_suffix(".json").read_text())["conf_threshold"])
        source = "--conf" if args.conf is not None else "its manifest's"
        print(f"model {onnx.name}, score threshold {conf} ({source})", flush=True)
    elif args.conf is None:
        conf, mean = pick_threshold(clip, onnx, *args.objects, args.frames)
        print(f"score threshold {conf} (edged's runner: {mean:.1f} objects per frame on "
              f"frames spread over the clip)", flush=True)
    else:
        conf = args.conf
    runs: dict[str, list[dict[str, Any]]] = {}
    order = [(c, m) for m in args.modes for c in args.contenders]
    for rnd in range(args.rounds):
        shift = rnd % len(order)
        for contender, mode in order[shift:] + order[:shift]:  # alternate who goes first
            r = run_child(args, contender, mode, clip, onnx, conf)
            s = summarise(r)
            print(f"round {rnd + 1} {contender:<12} {mode:<8} {s['frames']} frames, "
                  f"p50/p99 {s['p50_ms']:.1f}/{s['p99_ms']:.1f} ms, "
                  f"{s['cpu_ms_per_frame']:.1f} CPU ms/frame, {s['rss_mb']:.0f} MB, "
                  f"{s['objects_per_frame']:.1f} objects/frame", flush=True)
            runs.setdefault(f"{contender} {mode}", []).append({**r, **s})
    agreement = agree(runs)
    report(args, runs, conf, agreement)
    low = [k for k, a in agreement.items()
           if k.endswith("replay") and a["equal"] < args.min_agreement]
    if low:
        raise SystemExit(f"peer_bench: objects per frame agree with edged's on fewer than "
                         f"{args.min_agreement:.0%} of the replay frames: {', '.join(low)}")


def agree(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Each contender against edged in the same mode and round, on the frames of the clip
    both processed (each one's first result for a frame): the share of frames with equal
    objects, with objects within one, and the mean and largest difference of class-map
    shares (percentage points, demo only)."""
    out: dict[str, dict[str, float]] = {}
    for key, rs in runs.items():
        contender, mode = key.split()
        ref = runs.get(f"edged {mode}")
        if contender == "edged" or not ref:
            continue
        frames = equal = near = 0
        diffs: list[float] = []
        for mine, theirs in zip(rs, ref):
            a = {f: i for i, f in reversed(list(enumerate(mine["frame"])))}
            b = {f: i for i, f in reversed(list(enumerate(theirs["frame"])))}
            for f in a.keys() & b.keys():
                da, db = mine["objects"][a[f]], theirs["objects"][b[f]]
                frames += 1
                equal += da == db
                near += abs(da - db) <= 1
                if mine["shares"] and theirs["shares"]:
                    diffs.append(100 * float(np.max(np.abs(
                        np.subtract(mine["shares"][a[f]], theirs["shares"][b[f]])))))
        if frames:
            out[key] = {"frames": frames, "equal": equal / frames, "within_one": near / frames}
            if diffs:
                out[key] |= {"share_diff_mean_pp": float(np.mean(diffs)),
                             "share_diff_max_pp": float(np.max(diffs))}
    return out


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], conf: float,
           agreement: dict[str, dict[str, float]]) -> None:
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    print(f"\n{cores} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"score threshold {conf}; medians over {args.rounds} round(s)")
    table: dict[str, dict[str, float]] = {}
    for key, rs in runs.items():
        table[key] = {k: float(np.median([r[k] for r in rs]))
                      for k in ("p50_ms", "p99_ms", "cpu_ms_per_frame", "rss_mb",
                                "objects_per_frame")}
        table[key]["fps"] = float(np.median([r["fps"] for r in rs]))
    print(f"{'contender':<22} {'fps':>7} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/f':>9} "
          f"{'RSS MB':>7} {'obj/f':>6}  edged fps / this, this p99 / edged p99")
    for key, t in table.items():
        ref = table.get(f"edged {key.split()[1]}")
        vs = (f"  {ref['fps'] / t['fps']:.2f}x, {t['p99_ms'] / ref['p99_ms']:.2f}x"
              if ref else "")
        print(f"{key:<22} {t['fps']:7.1f} {t['p50_ms']:8.1f} {t['p99_ms']:8.1f} "
              f"{t['cpu_ms_per_frame']:9.1f} {t['rss_mb']:7.0f} {t['objects_per_frame']:6.1f}"
              f"{vs}")
    for key, a in agreement.items():
        shares = (f"; class-map shares differ by {a['share_diff_mean_pp']:.2f} points on "
                  f"average, {a['share_diff_max_pp']:.2f} at most"
                  if "share_diff_mean_pp" in a else "")
        print(f"agreement {key} with edged: {a['frames']:.0f} frames both processed, objects "
              f"equal on {a['equal']:.1%}, within one on {a['within_one']:.1%}{shares}")
    if args.model == "demo":
        print(NO_YOEO)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "conf": conf, "cores": cores,
                                         "load": load, "table": table,
                                         "agreement": agreement, "runs": runs}, indent=1))
    if args.plot:
        plot(args.plot, runs)


def plot(path: Path, runs: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({k.split()[1] for k in runs}, key=MODES.index)
    fig, axes = plt.subplots(len(modes), 1, figsize=(9, 3.4 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        for key, rs in runs.items():
            if key.endswith(mode):
                ax.plot(rs[-1]["latency_ms"], label=key.split()[0], lw=0.8)
        ax.set_title(f"{mode}: latency per frame, decode to result (last round)")
        ax.set_xlabel("frame")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
