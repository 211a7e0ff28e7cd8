"""The periodic `_stats` message: per-camera health and latency on the bus.

Frames: topic `_stats`, then a msgpack map (see docs/protocol.md, "Statistics"):
`{"v": 1, "type": "stats", "t_ns": wall clock ns, "interval_s": float,
"cameras": {name: {...}}}` with, per camera, the keys of `CAMERA_KEYS`: the wire form of
`edged.telemetry.CameraSnapshot`, which `Stats.snapshots` holds decoded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import msgpack
import zmq

from edged import telemetry as typed
from edged.wire.codec import (
    PROTOCOL_VERSION,
    TOPIC_MODEL,
    TOPIC_STATE,
    TOPIC_STATS,
    ProtocolError,
    encode_eos,
    topic,
)

CAMERA_KEYS = ("state", "capture_fps", "processed_fps", "published", "late", "drops",
               "e2e_ms", "stages_ms_p50", "budget_ms", "variant", "budget_misses",
               "providers", "capture", "model_output")


@dataclass(frozen=True, slots=True)
class Stats:
    """A `_stats` message: `cameras` as on the wire, `snapshots` the same validated and
    typed."""

    t_ns: int
    interval_s: float
    cameras: dict[str, dict[str, Any]]
    snapshots: dict[str, typed.CameraSnapshot] = field(default_factory=dict)
    # the daemon's outputs: name -> {"delivered", "dropped", "failed", "queued"}
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)
    machine: Machine | None = None  # None from daemons before it


@dataclass(frozen=True, slots=True)
class Machine:
    """The `_stats` machine info: the daemon's CPU and the int8 class its kernels fall in."""

    arch: str  # platform.machine(): x86_64, aarch64, ...
    model: str
    features: tuple[str, ...]  # the int8-relevant ISA features (`edged.inference.cpu`)
    int8_class: str  # e.g. x86-vnni, x86-avx2, arm-dotprod


def encode_stats(cameras: dict[str, dict[str, Any]], interval_s: float,
                 sinks: dict[str, dict[str, int]] | None = None,
                 machine: Mapping[str, Any] | None = None,
                 t_ns: int | None = None) -> list[bytes]:
    """`t_ns`: when the window closed (default: now)."""
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION, "type": "stats", "t_ns": time.time_ns() if t_ns is None else t_ns,
        "interval_s": float(interval_s), "cameras": cameras, "sinks": sinks or {}}
    if machine is not None:
        header["machine"] = dict(machine)
    return [TOPIC_STATS.encode(), msgpack.packb(header, use_single_float=True)]


def _header(frames: Sequence[bytes | memoryview | zmq.Frame], kind: str,
            topic_bytes: bytes | None) -> tuple[bytes, dict[str, Any]]:
    """(topic, header map) of a 2-frame daemon message of `type` `kind`; ProtocolError
    for anything else. `topic_bytes`: the exact topic expected (None: checked by caller)."""
    parts = [f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in frames]
    if len(parts) != 2 or (topic_bytes is not None and parts[0] != topic_bytes):
        raise ProtocolError(f"{kind}: expected 2 frames"
                            + (f" on {topic_bytes.decode()!r}" if topic_bytes else ""))
    h = msgpack.unpackb(parts[1], raw=False, strict_map_key=True)
    if not isinstance(h, dict) or h.get("type") != kind:
        raise ProtocolError(f"{kind}: header is not a {kind} map")
    if h.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"{kind}: unsupported version {h.get('v')!r}")
    return parts[0], h


def decode_stats(frames: Sequence[bytes | memoryview | zmq.Frame]) -> Stats:
    try:
        _, h = _header(frames, "stats", TOPIC_STATS.encode())
        cams = h.get("cameras")
        if not isinstance(cams, dict) or not all(isinstance(v, dict) for v in cams.values()):
            raise ProtocolError("stats: 'cameras' must map names to maps")
        snapshots = {}
        for name, cam in cams.items():
            if not isinstance(name, str):
                raise ProtocolError("stats: camera names must be strings")
            snapshots[name] = typed.CameraSnapshot.from_wire(name, cam)
        sinks = h.get("sinks", {})  # optional: daemons before it sent none
        if not isinstance(sinks, dict) or not all(
                isinstance(k, str) and isinstance(v, dict)
                and all(isinstance(n, int) for n in v.values()) for k, v in sinks.items()):
            raise ProtocolError("stats: 'sinks' must map names to maps of counts")
        m = h.get("machine")  # optional: daemons before it sent none
        machine = None
        if m is not None:
            if not isinstance(m, dict) or not all(
                    isinstance(m.get(k), str) for k in ("machine", "model", "int8_class")) \
                    or not isinstance(m.get("features"), list) \
                    or not all(isinstance(f, str) for f in m["features"]):
                raise ProtocolError("stats: 'machine' must map machine, model, int8_class "
                                    "to strings and features to a list of strings")
            machine = Machine(m["machine"], m["model"], tuple(m["features"]),
                              m["int8_class"])
        return Stats(int(h["t_ns"]), float(h["interval_s"]), cams, snapshots, sinks,
                     machine)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack and type errors on garbage input
        raise ProtocolError(f"stats: {e}") from None


CAMERA_STATES = tuple(s.value for s in typed.CameraState)


@dataclass(frozen=True, slots=True)
class CameraState:
    """A camera's state change (topic `<camera>/state`)."""

    camera: str
    state: typed.CameraState
    detail: str
    t_ns: int
    # with `reconnecting` on a tracked camera: the track epoch its results carry from its
    # first frame of the new connection (docs/protocol.md, "Tracks")
    track_epoch: int | None = None


def encode_state(camera: str, state: typed.CameraState | str, detail: str = "",
                 t_ns: int | None = None, track_epoch: int | None = None) -> list[bytes]:
    """`state`: a CameraState or its value (ValueError for anything else)."""
    header: dict[str, object] = {"v": PROTOCOL_VERSION, "type": "state", "camera": camera,
                                 "state": typed.CameraState(state).value, "detail": detail,
                                 "t_ns": time.time_ns() if t_ns is None else t_ns}
    if track_epoch is not None:
        header["track_epoch"] = int(track_epoch)
    return [topic(camera, TOPIC_STATE), msgpack.packb(header)]


def decode_state(frames: Sequence[bytes | memoryview | zmq.Frame]) -> CameraState:
    try:
        first, h = _header(frames, "state", None)
        cam, state, detail = h.get("camera"), h.get("state"), h.get("detail", "")
        if not (isinstance(cam, str) and isinstance(state, str) and isinstance(detail, str)):
            raise ProtocolError("state: camera, state and detail must be strings")
        if first != topic(cam, TOPIC_STATE):
            raise ProtocolError("state: topic does not match the camera")
        epoch = h.get("track_epoch")
        if epoch is not None and (type(epoch) is not int or epoch < 0):
            raise ProtocolError("state: 'track_epoch' must be an int >= 0")
        return CameraState(cam, typed.CameraState(state), detail, int(h["t_ns"]), epoch)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack and type errors on garbage input
        raise ProtocolError(f"state: {e}") from None


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """The degradation ladder switched the model variant (topic `_model`)."""

    variant: str
    rung: int  # 0 = the configured model, higher = cheaper
    previous: str
    reason: str
    t_ns: int


def encode_model_event(variant: str, rung: int, previous: str, reason: str,
                       t_ns: int | None = None) -> list[bytes]:
    header = {"v": PROTOCOL_VERSION, "type": "model", "variant": variant, "rung": int(rung),
              "previous": previous, "reason": reason,
              "t_ns": time.time_ns() if t_ns is None else t_ns}
    return [TOPIC_MODEL.encode(), msgpack.packb(header)]


def decode_model_event(frames: Sequence[bytes | memoryview | zmq.Frame]) -> ModelEvent:
    try:
        _, h = _header(frames, "model", TOPIC_MODEL.encode())
        strings = (h.get("variant"), h.get("previous"), h.get("reason"))
        if not all(isinstance(x, str) for x in strings) or not isinstance(h.get("rung"), int):
            raise ProtocolError("model: variant, previous, reason must be strings, rung an int")
        return ModelEvent(h["variant"], h["rung"], h["previous"], h["reason"], int(h["t_ns"]))
    except ProtocolError:
        raise
    except Exception as e:  # msgpack and type errors on garbage input
        raise ProtocolError(f"model: {e}") from None


@overload
def encode_event(event: typed.StreamEnded) -> list[bytes]: ...
@overload
def encode_event(event: typed.ControlEvent) -> list[bytes] | None: ...
def encode_event(event: typed.ControlEvent | typed.StreamEnded) -> list[bytes] | None:
    """The wire message of one of the daemon's events (docs/protocol.md); None for an
    event the protocol has no message for (`FrameDropped`: the `_stats` counts carry it).
    The one place those events become bytes: the ZeroMQ output and the recorder's copy of
    the wire both use it."""
    match event:
        case typed.StatsReport(snapshot=snap, machine=machine, t_ns=t_ns):
            return encode_stats(snap.to_wire(), snap.interval_s, snap.sinks_to_wire(),
                                machine, t_ns)
        case typed.StateChanged(camera=camera, state=state, detail=detail, t_ns=t_ns):
            return encode_state(camera, state, detail, t_ns, event.track_epoch)
        case typed.ModelChanged():
            return encode_model_event(event.variant, event.rung, event.previous,
                                      event.reason, event.t_ns)
        case typed.StreamEnded():
            return encode_eos(event.camera, event.last_seq, event.reason, event.boot,
                              event.t_ns)
        case typed.FrameDropped():
            return None
