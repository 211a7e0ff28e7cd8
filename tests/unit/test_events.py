"""The daemon's typed events (`edged.telemetry`): each becomes its protocol message in one
place (`encode_event`), byte for byte what the older encoders give for the same fields;
the flight recorder starts a file on them and ends each camera with the daemon's own
end-of-stream (its boot id included)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edged.telemetry import (
    CameraState,
    DaemonSnapshot,
    DropCause,
    FrameDropped,
    ModelChanged,
    StateChanged,
    StatsReport,
    StreamEnded,
)
from edged.wire.codec import EndOfStream, decode, encode_eos
from edged.wire.telemetry import (
    decode_model_event,
    decode_state,
    decode_stats,
    encode_event,
    encode_model_event,
    encode_state,
    encode_stats,
)

T = 1_796_000_000_123_456_789


def test_each_event_is_its_protocol_message_stamped_when_it_happened() -> None:
    state = StateChanged("front", CameraState.RECONNECTING, "no frame for 1 s", T)
    assert encode_event(state) == encode_state("front", "reconnecting", "no frame for 1 s", T)
    st = decode_state(encode_event(state))
    assert (st.camera, st.state, st.detail, st.t_ns) == \
        ("front", CameraState.RECONNECTING, "no frame for 1 s", T)

    model = ModelChanged("yoeo-int8", 1, "yoeo", "p90 over budget", T)
    assert encode_event(model) == encode_model_event("yoeo-int8", 1, "yoeo", "p90 over budget", T)
    ev = decode_model_event(encode_event(model))
    assert (ev.variant, ev.rung, ev.previous, ev.reason, ev.t_ns) == \
        ("yoeo-int8", 1, "yoeo", "p90 over budget", T)

    snap = DaemonSnapshot(uptime_s=5.0, interval_s=2.0)
    stats = StatsReport(snap, {"machine": "x86_64", "model": "cpu", "features": ["avx2"],
                               "int8_class": "x86-avx2"}, T)
    frames = encode_event(stats)
    assert frames == encode_stats({}, 2.0, {}, dict(stats.machine or {}), T)
    got = decode_stats(frames)
    assert (got.t_ns, got.interval_s, got.machine and got.machine.int8_class) == \
        (T, 2.0, "x86-avx2")

    eos = StreamEnded("front", 41, "shutdown", "0123abcd", T)
    assert encode_event(eos) == encode_eos("front", 41, "shutdown", "0123abcd", T)
    msg = decode(encode_event(eos))
    assert isinstance(msg, EndOfStream)
    assert (msg.camera, msg.last_seq, msg.reason, msg.boot, msg.t_publish_ns) == \
        ("front", 41, "shutdown", "0123abcd", T)

    # no protocol message: the `_stats` counts carry drops
    assert encode_event(FrameDropped("front", DropCause.STALE, 7, T)) is None


def test_the_flight_recorder_starts_on_a_drop_event_and_ends_with_the_daemons_eos(
        tmp_path: Path) -> None:
    pytest.importorskip("mcap")
    from mcap.reader import make_reader

    from edged.outputs.record import decode_wire
    from edged.outputs.record.settings import RecordConfig
    from edged.outputs.record.sink import CONTROL_TOPIC, RecorderSink

    sink = RecorderSink(RecordConfig(dir=tmp_path, trigger="on_miss", before_s=60,
                                     after_s=60))
    sink.open()
    sink.control(StateChanged("front", CameraState.RUNNING, "synthetic"))  # kept in memory
    assert sink.events == [] and not list(tmp_path.glob("*.mcap*"))
    sink.control(FrameDropped("front", DropCause.STALE, 7))
    sink.control(FrameDropped("front", DropCause.ERROR, 8))  # extends the same event
    assert sink.events == [("front", "stale")]
    sink.end_of_stream(StreamEnded("front", 8, "shutdown", "0123abcd"))
    sink.close()
    assert sink.errors == 0 and len(sink.files) == 1
    assert re.fullmatch(r"front-\d{8}T\d{6}\.\d{3}Z-stale\.mcap", sink.files[0].name)
    with open(sink.files[0], "rb") as fh:
        msgs = [(c.topic, m.data) for _, c, m in make_reader(fh).iter_messages(
            log_time_order=False)]
    # the state from before the event, as the ZeroMQ output publishes it; drops have no
    # wire message
    assert [t for t, _ in msgs] == [CONTROL_TOPIC, "/front/edged"]
    st = decode_state(decode_wire(msgs[0][1]))
    assert (st.camera, st.state, st.detail) == ("front", CameraState.RUNNING, "synthetic")
    eos = decode(decode_wire(msgs[1][1]))
    assert isinstance(eos, EndOfStream)
    assert (eos.camera, eos.last_seq, eos.reason, eos.boot) == \
        ("front", 8, "shutdown", "0123abcd")
