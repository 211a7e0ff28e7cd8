"""Typed telemetry: one snapshot renders the log line, the `_stats` map, Prometheus."""

from __future__ import annotations

import re

import msgpack
import pytest

from edged.daemon.metrics import render
from edged.telemetry import (
    CameraSnapshot,
    CameraState,
    CaptureCounters,
    DaemonSnapshot,
    Drops,
    LatencyPercentiles,
)
from edged.wire.codec import ProtocolError
from edged.wire.telemetry import (
    CAMERA_KEYS,
    CAMERA_STATES,
    decode_state,
    decode_stats,
    encode_state,
    encode_stats,
)

# float32-exact values: the `_stats` message packs floats as single precision
FRONT = CameraSnapshot(
    camera="front", state=CameraState.RUNNING, capture_fps=29.5, processed_fps=12.25,
    published=100, late=3, drops=Drops(overwritten=7, stale=5, late=2, errors=1),
    e2e_ms=LatencyPercentiles(40.5, 60.25, 80.0),
    stages_ms_p50={"queue": 1.5, "inference": 20.25, "encode": 0.5}, budget_ms=250.0,
    variant="yoeo-test", capture=CaptureCounters(corrupt=1, reconnects=2, stalls=1, crashes=0,
                                                 stuck_readers=1),
    providers="CPUExecutionProvider: 12 nodes", processed=111)
IDLE = CameraSnapshot(
    camera="idle", state=CameraState.RECONNECTING, capture_fps=0.0, processed_fps=0.0,
    published=0, late=0, drops=Drops(), e2e_ms=LatencyPercentiles(), stages_ms_p50={},
    budget_ms=100.0, variant="yoeo-test", capture=CaptureCounters(),
    providers="CPUExecutionProvider: 12 nodes", processed=0)


def test_camera_state_is_the_protocol_text() -> None:
    assert CAMERA_STATES == ("starting", "running", "reconnecting", "stopped", "failed",
                             "model_error")
    assert [s.value for s in CameraState] == list(CAMERA_STATES)
    assert CameraState.FAILED == "failed" and f"{CameraState.RUNNING}" == "running"


def test_wire_map_is_todays_dict() -> None:
    wire = FRONT.to_wire()
    assert tuple(wire) == CAMERA_KEYS[:-3] + ("capture", "providers", "model_output")
    assert set(wire) == set(CAMERA_KEYS)
    assert wire == {
        "state": "running", "capture_fps": 29.5, "processed_fps": 12.25, "published": 100,
        "late": 3, "drops": {"overwritten": 7, "stale": 5, "late": 2, "errors": 1},
        "e2e_ms": {"p50": 40.5, "p90": 60.25, "p99": 80.0},
        "stages_ms_p50": {"queue": 1.5, "inference": 20.25, "encode": 0.5},
        "budget_ms": 250.0, "variant": "yoeo-test", "budget_misses": 5 + 3 + 2,
        "capture": {"corrupt": 1, "reconnects": 2, "stalls": 1, "crashes": 0,
                    "stuck_readers": 1},
        "providers": "CPUExecutionProvider: 12 nodes",
        "model_output": {"nonfinite_rows": 0, "nonfinite_frames": 0}}
    assert type(wire["state"]) is str  # plain text on the wire, not the enum
    assert IDLE.to_wire()["e2e_ms"] == {"p50": None, "p90": None, "p99": None}


def test_snapshot_wire_decode_round_trip() -> None:
    snap = DaemonSnapshot(uptime_s=12.0, interval_s=1.0, cameras={"front": FRONT, "idle": IDLE})
    frames = encode_stats(snap.to_wire(), snap.interval_s)
    stats = decode_stats(frames)
    assert stats.interval_s == 1.0
    assert stats.cameras == snap.to_wire()  # the protocol's maps, as before
    # typed again; `processed` is not carried on the wire
    assert stats.snapshots == {"front": CameraSnapshot(**{**_fields(FRONT), "processed": None}),
                               "idle": CameraSnapshot(**{**_fields(IDLE), "processed": None})}
    back = stats.snapshots["front"]
    assert back.state is CameraState.RUNNING and back.drops.stale == 5
    assert back.budget_misses == stats.cameras["front"]["budget_misses"] == 10
    assert back.e2e_ms.p99 == 80.0 and stats.snapshots["idle"].e2e_ms.p50 is None


def _fields(s: CameraSnapshot) -> dict[str, object]:
    return {f: getattr(s, f) for f in CameraSnapshot.__dataclass_fields__}


def test_decode_ignores_unknown_keys_and_rejects_bad_maps() -> None:
    def packed(cam: dict[str, object]) -> list[bytes]:
        header = {"v": 1, "type": "stats", "t_ns": 1, "interval_s": 1.0, "cameras": {"c": cam}}
        return [b"_stats", msgpack.packb(header)]

    wire = FRONT.to_wire()
    assert decode_stats(packed({**wire, "new_key": [1]})).snapshots["c"].camera == "c"
    for bad in ({**wire, "state": "dancing"}, {**wire, "published": "100"},
                {**wire, "drops": {"stale": 1}}, {k: v for k, v in wire.items() if k != "late"},
                {**wire, "e2e_ms": {"p50": "x", "p90": None, "p99": None}}):
        with pytest.raises(ProtocolError):
            decode_stats(packed(bad))


def test_state_messages_carry_the_enum() -> None:
    msg = decode_state(encode_state("front", CameraState.RECONNECTING, "timeout"))
    assert msg.state is CameraState.RECONNECTING and msg.state == "reconnecting"
    assert msgpack.unpackb(encode_state("front", CameraState.FAILED)[1])["state"] == "failed"
    with pytest.raises(ValueError):
        encode_state("front", "dancing")


def test_log_line_is_rendered_from_the_snapshot() -> None:
    assert FRONT.log_line(1.0) == (
        "stats front: capture 29.5 fps, processed 12.2 fps, e2e p50/p90/p99 40.5/60.2/80.0 ms, "
        "inference p50 20.2 ms, dropped 7 overwritten 5 stale 2 late, 3 published late, "
        "errors 1, state running")
    assert IDLE.log_line(30.04, final=True) == (
        "final idle: capture 0.0 fps, processed 0.0 fps, e2e p50/p90/p99 nan/nan/nan ms, "
        "inference p50 nan ms, dropped 0 overwritten 0 stale 0 late, 0 published late, "
        "errors 0, state reconnecting, 0 frames in 30.0 s")
    # what the daemon tests parse out of the final line
    final = re.compile(r"final (\S+): .* dropped (\d+) overwritten (\d+) stale (\d+) late, "
                       r"(\d+) published late")
    m = final.search(FRONT.log_line(9.5, final=True))
    assert m is not None and m.groups() == ("front", "7", "5", "2", "3")
    assert FRONT.log_line(9.5, final=True).endswith(", 111 frames in 9.5 s")
    snap = DaemonSnapshot(uptime_s=3.0, interval_s=9.5, final=True,
                          cameras={"front": FRONT, "idle": IDLE})
    assert snap.log_lines() == [FRONT.log_line(9.5, final=True), IDLE.log_line(9.5, final=True)]
    assert snap.status_line() == "front 12.2 fps (running), idle 0.0 fps (reconnecting)"


def test_prometheus_is_rendered_from_the_snapshot() -> None:
    body = render(DaemonSnapshot(uptime_s=3.0, interval_s=1.0,
                                 cameras={"idle": IDLE, "front": FRONT}))
    lines = body.splitlines()
    for line in ('edged_capture_fps{camera="front"} 29.5',
                 'edged_processed_fps{camera="front"} 12.25',
                 'edged_published_total{camera="front"} 100',
                 'edged_late_total{camera="front"} 3',
                 'edged_budget_misses_total{camera="front"} 10',
                 'edged_dropped_total{camera="front",cause="overwritten"} 7',
                 'edged_dropped_total{camera="front",cause="late"} 2',
                 'edged_e2e_latency_ms{camera="front",quantile="99"} 80.0',
                 'edged_stage_latency_ms{camera="front",stage="inference"} 20.25',
                 'edged_capture_events_total{camera="front",kind="reconnects"} 2',
                 'edged_camera_up{camera="front",state="running"} 1',
                 'edged_camera_up{camera="idle",state="reconnecting"} 0'):
        assert line in lines, line
    assert "stuck_readers" not in body  # a level, not a capture event
    assert not any(line.startswith('edged_e2e_latency_ms{camera="idle"') for line in lines)
    # cameras sorted by name within each family
    fps = [line for line in lines if line.startswith("edged_capture_fps{")]
    assert fps == ['edged_capture_fps{camera="front"} 29.5', 'edged_capture_fps{camera="idle"} 0.0']
