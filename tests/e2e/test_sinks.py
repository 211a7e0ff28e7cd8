"""Sinks and the publish stage: a slow or failing sink is counted and never delays the
others; the budget verdict is taken once and every sink sees the same one; control
messages and end-of-stream keep their order and are never dropped."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest
from test_codec import make_result

from edged.daemon.publish import PublishStage
from edged.daemon.scheduler import Budget
from edged.inference.cpu import detect as detect_cpu
from edged.outputs.base.sink import Outcome, Publishing, Sink, SinkClosed, SinkRunner
from edged.outputs.zmq import ZmqSink
from edged.telemetry import (
    ControlEvent,
    DaemonSnapshot,
    DropCause,
    FrameDropped,
    StatsReport,
    StreamEnded,
)
from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, MaskEncoder, Message, decode
from edged.wire.publisher import Publisher
from edged.wire.telemetry import Stats

STATS = StatsReport(DaemonSnapshot(uptime_s=1.0, interval_s=1.0))


class Recorder(Sink):
    """Keeps what it gets, in order; `gate` (when given) holds each delivery."""

    def __init__(self, name: str, gate: threading.Event | None = None,
                 fail: bool = False) -> None:
        self.name = name
        self.items: list[tuple[str, object]] = []
        self.gate = gate
        self.fail = fail
        self.inside = threading.Event()  # set while a delivery is held at the gate
        self.closed = False

    def deliver(self, outcome: Outcome) -> None:
        if self.gate is not None:
            self.inside.set()
            self.gate.wait(10)
        if self.fail:
            raise RuntimeError("disk full")
        self.items.append(("outcome", outcome.result.seq))

    def control(self, event: ControlEvent) -> None:
        self.items.append(("control", event))

    def end_of_stream(self, eos: StreamEnded) -> None:
        self.items.append(("eos", eos.camera))

    def close(self) -> None:
        self.closed = True


class Counters:
    def __init__(self) -> None:
        self.late = 0
        self.late_dropped = 0
        self.published: list[float] = []

    def record_published(self, e2e_ms: float, encode_ms: float) -> None:
        self.published.append(e2e_ms)


def outcome(seq: int) -> Outcome:
    return Outcome(make_result(seq=seq, n_det=0), None, False, 0, (b"t", b"h"))


def test_a_slow_sink_drops_its_oldest_and_never_holds_up_another():
    gate = threading.Event()
    slow, fast = Recorder("slow", gate), Recorder("fast")
    # the fast sink may queue the whole burst: whatever it loses is not for the slow one
    rs, rf = SinkRunner(slow, queue_size=8), SinkRunner(fast, queue_size=32)
    rs.start()
    rf.start()
    rs.offer(outcome(0))
    assert slow.inside.wait(5)  # the slow sink holds outcome 0
    t = time.monotonic()
    accepted = [rs.offer(outcome(i)) for i in range(1, 21)]
    for i in range(21):
        rf.offer(outcome(i))
    assert time.monotonic() - t < 1.0  # offers never wait (a mechanism, not a speed)
    assert accepted == [True] * 8 + [False] * 12
    assert rs.stats.dropped == 12 and rs.stats.queued == 8
    assert rf.close(5) and fast.items == [("outcome", i) for i in range(21)]
    gate.set()
    assert rs.close(5)
    # the newest 8 were kept, the 12 older ones dropped
    assert slow.items == [("outcome", 0)] + [("outcome", i) for i in range(13, 21)]
    s = rs.stats
    assert (s.delivered, s.dropped, s.failed, s.queued) == (9, 12, 0, 0)
    assert slow.closed and fast.closed


def test_a_failing_sink_is_counted_and_still_gets_its_end_of_stream():
    bad = Recorder("bad", fail=True)
    r = SinkRunner(bad)
    r.start()
    for i in range(5):
        r.offer(outcome(i))
    done = r.end_of_stream(StreamEnded("cam1", -1, "shutdown"))
    done.result(5)
    assert bad.items == [("eos", "cam1")]
    assert r.close(5)
    assert (r.stats.delivered, r.stats.failed) == (0, 5)


def test_control_and_end_of_stream_keep_their_place_and_are_never_dropped():
    gate = threading.Event()
    rec = Recorder("r", gate)
    r = SinkRunner(rec, queue_size=2)
    r.start()
    r.offer(outcome(0))
    assert rec.inside.wait(5)
    r.offer(outcome(1))
    r.control(STATS)
    r.offer(outcome(2))
    r.offer(outcome(3))  # the queue holds two outcomes: 1 is dropped, the control stays
    eos = r.end_of_stream(StreamEnded("cam1", 1, "shutdown"))
    gate.set()
    eos.result(5)
    assert rec.items == [("outcome", 0), ("control", STATS), ("outcome", 2),
                         ("outcome", 3), ("eos", "cam1")]
    assert r.close(5) and r.stats.dropped == 1


def test_a_call_hands_back_what_it_returned_or_raised_on_the_sink_thread():
    runner = SinkRunner(Recorder("plain"))
    runner.start()
    assert runner.call(lambda: threading.current_thread().name).result(10) == "sink-plain"

    def bad_keys() -> None:
        raise ValueError("clients_dir: no such directory")

    with pytest.raises(ValueError, match="clients_dir: no such directory"):
        runner.call(bad_keys).result(10)
    assert runner.stats.failed == 0  # the caller's error, not the sink failing
    assert runner.close(5)
    with pytest.raises(SinkClosed, match="sink plain is closed"):
        runner.call(lambda: 1).result(10)


def test_queue_size_must_hold_one_outcome():
    with pytest.raises(ValueError, match="at least one"):
        SinkRunner(Recorder("x"), queue_size=0)


@pytest.mark.parametrize("age_ms, late", [(1.0, False), (50.0, True)])
def test_the_budget_verdict_is_taken_once_and_every_sink_sees_it(age_ms, late):
    a, b = Recorder("a"), Recorder("b")

    class Keep(Recorder):
        def deliver(self, outcome: Outcome) -> None:
            self.items.append(("outcome", outcome))

    ka, kb = Keep("ka"), Keep("kb")
    stage = PublishStage([SinkRunner(ka), SinkRunner(kb), SinkRunner(a), SinkRunner(b)],
                         MaskEncoder(), send_masks=True)
    stage.start()
    budget, counters = Budget(20.0), Counters()
    res = make_result(seq=3)
    res = replace(res, flags=(), t_capture_wall_ns=time.time_ns() - int(age_ms * 1e6),
                  t_capture_mono_ns=time.monotonic_ns() - int(age_ms * 1e6))

    async def main() -> None:
        await stage.publish(budget, counters, res, None)
        await stage.end_of_stream("cam1", "shutdown")

    asyncio.run(main())
    stage.close(5)
    (_, oa), (_, ob) = ka.items[0], kb.items[0]
    assert oa is ob  # one verdict, one object, for every sink
    assert isinstance(oa, Outcome) and oa.late is late
    assert ("late" in oa.result.flags) is late
    assert res.flags == ()  # the camera loop's result is not changed
    msg = decode(list(oa.wire))
    assert isinstance(msg, Message)
    assert ("late" in msg.flags) is late and msg.t_publish_ns == oa.t_publish_ns
    assert (counters.late, counters.late_dropped, len(counters.published)) == \
        (int(late), 0, 1)
    assert a.items == b.items == [("outcome", 3), ("eos", "cam1")]


def test_on_late_drop_reaches_no_sink():
    rec = Recorder("r")
    stage = PublishStage([SinkRunner(rec)], MaskEncoder(), send_masks=False)
    stage.start()
    budget, counters = Budget(5.0, "drop"), Counters()
    res = replace(make_result(seq=1), flags=(),
                  t_capture_mono_ns=time.monotonic_ns() - 50_000_000)
    asyncio.run(_publish_then_eos(stage, budget, counters, res))
    stage.close(5)
    # the result reaches no sink; that a frame was dropped late does, as an event
    (kind, event), eos = rec.items
    assert kind == "control" and isinstance(event, FrameDropped)
    assert (event.camera, event.cause, event.seq) == ("cam1", DropCause.LATE, 1)
    assert eos == ("eos", "cam1") and counters.late_dropped == 1


async def _publish_then_eos(stage, budget, counters, res) -> None:
    await stage.publish(budget, counters, res, None)
    await stage.end_of_stream("cam1", "shutdown")


def test_zmq_sink_publishes_and_ends_each_camera_with_its_last_seq(tmp_path):
    ep = f"ipc://{tmp_path}/s.sock"
    with Subscriber(ep, stats=True) as sub:
        stage = PublishStage([SinkRunner(ZmqSink(Publisher([ep])))], MaskEncoder(),
                             send_masks=False)
        stage.start()
        # PUB/SUB slow joiner: control messages until one arrives, then nothing is missed
        end = time.monotonic() + 20
        while time.monotonic() < end and not isinstance(sub.recv(timeout=0.1), Stats):
            stage.control(STATS)
        budget, counters = Budget(10_000.0), Counters()

        async def main() -> None:
            for seq in (4, 5, 6):
                await stage.publish(budget, counters, replace(make_result(seq=seq),
                                                              flags=()), None)
            await stage.end_of_stream("cam1", "shutdown")

        asyncio.run(main())
        zmq_sink = stage.sinks[0].sink
        assert isinstance(zmq_sink, ZmqSink) and zmq_sink.published == {"cam1": 3}
        # what the daemon asks of it, on its thread: nothing refused, no CURVE to re-read
        assert isinstance(zmq_sink, Publishing)
        assert stage.sinks[0].call(zmq_sink.reload).result(10) == []
        stage.close(5)  # closing waits until the queued messages have left
        got: list = []
        end = time.monotonic() + 5
        while time.monotonic() < end and not any(isinstance(m, EndOfStream) for m in got):
            m = sub.recv(timeout=0.2)
            if m is not None and not isinstance(m, Stats):
                got.append(m)
    assert [m.seq for m in got if isinstance(m, Message)] == [4, 5, 6]
    assert isinstance(got[-1], EndOfStream) and got[-1].last_seq == 6


def test_sink_counts_reach_the_log_stats_and_prometheus(tmp_path, test_model, start_daemon):
    import urllib.request

    from conftest import free_port
    from test_daemon import write_config

    ep = f"ipc://{tmp_path}/e.sock"
    port = free_port()
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [ep], """\
  a:
    source: synthetic
    width: 160
    height: 120
    fps: 20""", extra=f"  metrics: 127.0.0.1:{port}\n")
    cfg.write_text(cfg.read_text().replace("log:\n  stats_interval_s: 1\n  metrics",
                                           "log:\n  stats_interval_s: 0.5\n  metrics"))
    with Subscriber(ep, stats=True) as sub:
        d = start_daemon(cfg)
        d.wait_for("ready")
        stats = None
        end = time.monotonic() + 20
        while time.monotonic() < end:
            m = sub.recv(timeout=0.2)
            if m is not None and hasattr(m, "sinks") and m.sinks.get("zmq", {}).get(
                    "delivered", 0) > 0:
                stats = m
                break
        assert stats is not None, d.log()
        assert set(stats.sinks["zmq"]) == {"delivered", "dropped", "failed", "queued"}
        here = detect_cpu()  # the machine info names this CPU's int8 class
        assert stats.machine is not None and stats.machine.int8_class == here.int8_class
        assert stats.machine.features == here.features and stats.machine.model == here.model
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert 'edged_sink_delivered_total{sink="zmq"}' in body.decode()
        assert d.terminate()[0] == 0
    assert "sink zmq: delivered " in d.log()  # the final line names every sink


def test_a_stuck_sink_does_not_hold_up_an_end_of_stream():
    gate = threading.Event()
    stuck, fine = Recorder("stuck", gate), Recorder("fine")
    stage = PublishStage([SinkRunner(stuck), SinkRunner(fine)], MaskEncoder(),
                         send_masks=False)
    stage.start()
    budget, counters = Budget(10_000.0), Counters()

    async def main() -> float:
        await stage.publish(budget, counters, replace(make_result(seq=1), flags=()), None)
        t = time.monotonic()
        await stage.end_of_stream("cam1", "shutdown", timeout=0.3)
        return time.monotonic() - t

    waited = asyncio.run(main())
    assert 0.3 <= waited < 5.0  # bounded by the timeout, not by the stuck sink
    gate.set()
    stage.close(5)
    assert fine.items == [("outcome", 1), ("eos", "cam1")]
    assert stuck.items == [("outcome", 1), ("eos", "cam1")]  # delivered once unstuck
