"""Typed telemetry: what the daemon knows about each camera, as frozen dataclasses.

`Pipeline` takes one `CameraSnapshot` per camera per stats window and wraps them in a
`DaemonSnapshot`; everything else is rendered from those: the log lines (`log_line`),
the `_stats` message (`to_wire`, see docs/protocol.md, "Statistics"), the systemd
status text, the Prometheus endpoint (`edged.daemon.metrics.render`) and `edged bench`.
Subscribers get the same `CameraSnapshot`s back from the wire (`from_wire`). The
events at the end (`StatsReport`, `StateChanged`, `ModelChanged`, `FrameDropped`,
`StreamEnded`) are what the daemon hands its outputs besides results.

Standard library only: the capture threads and the subscriber client import it too.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class CameraState(enum.StrEnum):
    """A camera's capture state; the value is the text on the wire and in the logs."""

    STARTING = "starting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    FAILED = "failed"
    # frames arrive but the model's output is NaN/Inf on every one: nothing usable is
    # published (issue 29); back to running at the first usable frame
    MODEL_ERROR = "model_error"


def _int(d: Mapping[str, Any], key: str) -> int:
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{key!r} must be an int, not {type(v).__name__}")
    return v


def _float(d: Mapping[str, Any], key: str) -> float:
    v = d[key]
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise TypeError(f"{key!r} must be a number, not {type(v).__name__}")
    return v


def _float_or_none(d: Mapping[str, Any], key: str) -> float | None:
    return None if d[key] is None else _float(d, key)


def _str(d: Mapping[str, Any], key: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise TypeError(f"{key!r} must be a string, not {type(v).__name__}")
    return v


def _map(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = d[key]
    if not isinstance(v, Mapping):
        raise TypeError(f"{key!r} must be a map, not {type(v).__name__}")
    return v


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


@dataclass(frozen=True, slots=True)
class LatencyPercentiles:
    """p50/p90/p99 in ms; all None before the first value."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def to_wire(self) -> dict[str, float | None]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> LatencyPercentiles:
        return cls(_float_or_none(d, "p50"), _float_or_none(d, "p90"),
                   _float_or_none(d, "p99"))


@dataclass(frozen=True, slots=True)
class Drops:
    """Frames not published since start, by cause."""

    overwritten: int = 0  # a newer frame replaced it before it was taken
    stale: int = 0  # dropped before inference: could not finish inside the budget
    late: int = 0  # over budget and not published (budget.on_late: drop)
    errors: int = 0  # inference failed

    def to_wire(self) -> dict[str, int]:
        """Cause -> count, in this order (also the Prometheus `cause` label)."""
        return {"overwritten": self.overwritten, "stale": self.stale, "late": self.late,
                "errors": self.errors}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Drops:
        return cls(_int(d, "overwritten"), _int(d, "stale"), _int(d, "late"),
                   _int(d, "errors"))


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """What the model gave that could not be published, since start."""

    nonfinite_rows: int = 0  # detections with NaN/Inf values, dropped
    nonfinite_frames: int = 0  # frames whose every detection was NaN/Inf

    def to_wire(self) -> dict[str, int]:
        return {"nonfinite_rows": self.nonfinite_rows,
                "nonfinite_frames": self.nonfinite_frames}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> ModelOutput:
        return cls(_int(d, "nonfinite_rows"), _int(d, "nonfinite_frames"))


@dataclass(frozen=True, slots=True)
class CaptureCounters:
    """Capture faults since start, and reader threads stuck now."""

    corrupt: int = 0
    reconnects: int = 0
    stalls: int = 0
    crashes: int = 0
    stuck_readers: int = 0

    def events(self) -> dict[str, int]:
        """The fault counters (not `stuck_readers`, a level): kind -> count."""
        return {"corrupt": self.corrupt, "reconnects": self.reconnects,
                "stalls": self.stalls, "crashes": self.crashes}

    def to_wire(self) -> dict[str, int]:
        return {**self.events(), "stuck_readers": self.stuck_readers}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> CaptureCounters:
        return cls(_int(d, "corrupt"), _int(d, "reconnects"), _int(d, "stalls"),
                   _int(d, "crashes"), _int(d, "stuck_readers"))


@dataclass(frozen=True, slots=True)
class CameraSnapshot:
    """One camera's figures for one stats window (rates) and since start (counts)."""

    camera: str
    state: CameraState
    capture_fps: float
    processed_fps: float
    published: int  # results published since start
    late: int  # of those, published over budget (flag "late")
    drops: Drops
    e2e_ms: LatencyPercentiles  # capture to send, last 512 results
    stages_ms_p50: dict[str, float]  # stage -> median ms, last 512 results
    budget_ms: float
    variant: str  # the model variant in use
    capture: CaptureCounters
    providers: str  # where the model's nodes run
    processed: int | None = None  # frames run since start; not on the wire (None there)
    model_output: ModelOutput = field(default_factory=ModelOutput)
    # confirmed tracks in the camera's last frame; None: tracking off for the camera
    tracks_active: int | None = None

    @property
    def budget_misses(self) -> int:
        """Frames that missed the budget since start: stale + published late + late dropped."""
        return self.drops.stale + self.late + self.drops.late

    def to_wire(self) -> dict[str, Any]:
        """The camera's map in the `_stats` message (docs/protocol.md, "Statistics")."""
        return {
            "state": self.state.value, "capture_fps": self.capture_fps,
            "processed_fps": self.processed_fps, "published": self.published,
            "late": self.late, "drops": self.drops.to_wire(), "e2e_ms": self.e2e_ms.to_wire(),
            "stages_ms_p50": dict(self.stages_ms_p50), "budget_ms": self.budget_ms,
            "variant": self.variant, "budget_misses": self.budget_misses,
            "capture": self.capture.to_wire(), "providers": self.providers,
            "model_output": self.model_output.to_wire(),
            **({} if self.tracks_active is None else {"tracks_active": self.tracks_active}),
        }

    @classmethod
    def from_wire(cls, camera: str, d: Mapping[str, Any]) -> CameraSnapshot:
        """Validate and type one camera's `_stats` map; unknown keys are ignored.

        Raises ValueError, TypeError or KeyError for a map that does not follow the
        protocol."""
        stages = _map(d, "stages_ms_p50")
        if not all(isinstance(k, str) for k in stages):
            raise TypeError("'stages_ms_p50' must map stage names to numbers")
        return cls(
            camera=camera, state=CameraState(_str(d, "state")),
            capture_fps=_float(d, "capture_fps"), processed_fps=_float(d, "processed_fps"),
            published=_int(d, "published"), late=_int(d, "late"),
            drops=Drops.from_wire(_map(d, "drops")),
            e2e_ms=LatencyPercentiles.from_wire(_map(d, "e2e_ms")),
            stages_ms_p50={k: _float(stages, k) for k in stages},
            budget_ms=_float(d, "budget_ms"), variant=_str(d, "variant"),
            capture=CaptureCounters.from_wire(_map(d, "capture")),
            providers=_str(d, "providers"),
            # absent from daemons before issue 29
            model_output=(ModelOutput.from_wire(_map(d, "model_output"))
                          if "model_output" in d else ModelOutput()),
            # absent when tracking is off, and from daemons before issue 30
            tracks_active=_int(d, "tracks_active") if "tracks_active" in d else None)

    def log_line(self, elapsed_s: float, *, final: bool = False) -> str:
        """The daemon's stats line: the last window, or the whole run when `final`."""
        e, d = self.e2e_ms, self.drops
        return (f"{'final' if final else 'stats'} {self.camera}: capture "
                f"{self.capture_fps:.1f} fps, processed {self.processed_fps:.1f} fps, "
                f"e2e p50/p90/p99 {_nan(e.p50):.1f}/{_nan(e.p90):.1f}/{_nan(e.p99):.1f} ms, "
                f"inference p50 {self.stages_ms_p50.get('inference', math.nan):.1f} ms, "
                f"dropped {d.overwritten} overwritten {d.stale} stale {d.late} late, "
                f"{self.late} published late, errors {d.errors}, "
                + (f"non-finite detections dropped {self.model_output.nonfinite_rows}, "
                   if self.model_output.nonfinite_rows else "")
                + f"state {self.state.value}"
                + (f", {self.processed} frames in {elapsed_s:.1f} s"
                   if final and self.processed is not None else ""))


@dataclass(frozen=True, slots=True)
class InferenceCounters:
    """The inference pool since start."""

    frames: int = 0
    batches: int = 0
    largest_batch: int = 0
    recreated: int = 0  # workers replaced after a stuck run
    # a model on an inference server (model.triton): usable now (None: no such model),
    # frames computed there and on the local fallback
    remote_up: bool | None = None
    remote_frames: int = 0
    fallback_frames: int = 0

    def log_line(self, variant: str) -> str:
        """The final line at exit, with the variant running then."""
        return (f"final inference: {self.frames} frames in {self.batches} runs (mean batch "
                f"{self.frames / max(self.batches, 1):.2f}, largest {self.largest_batch}), "
                f"{self.recreated} worker(s) recreated, variant {variant}"
                + (f", {self.remote_frames} frames on the server and {self.fallback_frames} "
                   f"on the local fallback" if self.remote_up is not None else ""))


@dataclass(frozen=True, slots=True)
class SinkStats:
    """One output (sink) since start; counted by its runner (`edged.outputs.base.sink`)."""

    name: str
    delivered: int = 0
    dropped: int = 0  # its queue was full: the oldest waiting result was discarded
    failed: int = 0  # the sink raised while handling a result or message
    queued: int = 0  # waiting now

    def to_wire(self) -> dict[str, int]:
        return {"delivered": self.delivered, "dropped": self.dropped, "failed": self.failed,
                "queued": self.queued}

    def log_line(self) -> str:
        return (f"sink {self.name}: delivered {self.delivered}, dropped {self.dropped} "
                f"(queue full), failed {self.failed}, queued {self.queued}")


@dataclass(frozen=True, slots=True)
class DaemonSnapshot:
    """Every camera's snapshot for one window (`interval_s`), or for the whole run."""

    uptime_s: float
    interval_s: float  # the window the rates cover (the whole run when `final`)
    final: bool = False
    cameras: dict[str, CameraSnapshot] = field(default_factory=dict)
    inference: InferenceCounters = field(default_factory=InferenceCounters)
    sinks: tuple[SinkStats, ...] = ()

    def to_wire(self) -> dict[str, dict[str, Any]]:
        """The `cameras` map of the `_stats` message."""
        return {name: c.to_wire() for name, c in self.cameras.items()}

    def sinks_to_wire(self) -> dict[str, dict[str, int]]:
        """The `sinks` map of the `_stats` message."""
        return {s.name: s.to_wire() for s in self.sinks}

    def log_lines(self) -> list[str]:
        """A line per camera; a line per sink when it lost anything, and at the end."""
        lines = [c.log_line(self.interval_s, final=self.final) for c in self.cameras.values()]
        lines += [s.log_line() for s in self.sinks if self.final or s.dropped or s.failed]
        return lines

    def status_line(self) -> str:
        """The service manager's STATUS= text."""
        return ", ".join(f"{n} {c.processed_fps:.1f} fps ({c.state.value})"
                         for n, c in self.cameras.items())


# ----------------------------------------------------------------------------- events
# What the daemon tells its outputs besides results, as typed values: each output reads
# the fields it needs, and only the ZeroMQ output (and the recorder's copy of the wire)
# turns them into protocol bytes (`edged.wire.telemetry.encode_event`). `t_ns` is the
# wall clock when the event happened; the wire message carries it.


@dataclass(frozen=True, slots=True)
class StatsReport:
    """A stats window closed (the `_stats` message). `machine`: the CPU's wire map
    (`edged.inference.cpu.CpuInfo.to_json`), None when unknown."""

    snapshot: DaemonSnapshot
    machine: Mapping[str, Any] | None = None
    t_ns: int = field(default_factory=time.time_ns)


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A camera's state changed (the `<camera>/state` message)."""

    camera: str
    state: CameraState
    detail: str = ""
    t_ns: int = field(default_factory=time.time_ns)
    # with `reconnecting` on a tracked camera: the track epoch of its next frames
    track_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class ModelChanged:
    """The degradation ladder switched the model variant (the `_model` message);
    `rung` 0 is the configured model, higher is cheaper."""

    variant: str
    rung: int
    previous: str
    reason: str
    t_ns: int = field(default_factory=time.time_ns)


class DropCause(enum.StrEnum):
    """Why a frame of a camera was not published (a budget miss or a failure)."""

    STALE = "stale"  # could not finish inside the budget: dropped before inference
    LATE = "late"  # over budget at publishing, and budget.on_late is drop
    ERROR = "error"  # inference failed


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A frame of `camera` was not published (no wire message: the `_stats` counts
    carry it). Said at most once per `DROP_EVENT_S` per camera and cause, so a camera
    dropping every frame does not flood the outputs; `seq` is the frame that was."""

    camera: str
    cause: DropCause
    seq: int
    t_ns: int = field(default_factory=time.time_ns)


DROP_EVENT_S = 1.0


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """`camera` publishes nothing more (the `<camera>/eos` message): `last_seq` is the
    last seq published, -1 if none; `boot` the daemon process's id."""

    camera: str
    last_seq: int
    reason: str
    boot: str = ""
    t_ns: int = field(default_factory=time.time_ns)


ControlEvent = StatsReport | StateChanged | ModelChanged | FrameDropped
