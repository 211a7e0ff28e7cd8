"""Publisher -> Subscriber over real tcp and ipc sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from resultgen import make_result, regions_mask

from edged.wire.client import Subscriber
from edged.wire.codec import EndOfStream, MaskEncoder, Message, encode_eos, encode_result
from edged.wire.publisher import Publisher, PublishError


def free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    # a context per test: term() at the end proves every socket was closed
    c = zmq.Context()
    yield c
    c.term()


@pytest.fixture(params=["tcp", "ipc"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return free_tcp_endpoint() if request.param == "tcp" else f"ipc://{tmp_path}/edged.sock"


def sync(pub: Publisher, sub: Subscriber, camera: str = "cam1", timeout: float = 60.0) -> None:
    """Wait out the PUB/SUB slow joiner: publish seq 0 until one arrives, then drain."""
    probe = encode_result(make_result(camera, seq=0), None)
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "subscriber never connected"
        pub.send(probe)
        if sub.recv(timeout=0.02) is not None:
            break
    while sub.recv(timeout=0.05) is not None:
        pass


def test_results_arrive_with_their_values(endpoint: str, ctx: zmq.Context) -> None:
    mask = regions_mask(312, 416)
    with Publisher([endpoint], context=ctx, linger_ms=0) as pub, \
            Subscriber(endpoint, ["cam1"], context=ctx) as sub:
        sync(pub, sub)
        received0 = sub.received
        enc = MaskEncoder("zstd")
        sent = []
        for seq in range(1, 6):
            res = make_result("cam1", seq=seq, mask=mask)
            sent.append(res)
            assert pub.send(encode_result(res, enc))
        got = [sub.recv(timeout=60) for _ in sent]
        assert sub.recv(timeout=0.05) is None
    for res, msg in zip(sent, got, strict=True):
        assert isinstance(msg, Message)
        assert msg.seq == res.seq and msg.camera == "cam1"
        np.testing.assert_array_equal(msg.boxes, res.detections.boxes)
        assert msg.labels() == [res.class_name(i) for i in res.detections.class_ids]
        assert msg.mask is not None
        np.testing.assert_array_equal(msg.mask, mask)
        assert msg.t_capture_ns <= msg.t_publish_ns <= msg.t_received_ns
        assert 0 < msg.latency_ms < 5000
    assert sub.received - received0 == 5 and sub.gaps == 0 and sub.malformed == 0
    assert pub.sent >= 5 and pub.dropped == 0


def test_raw_mask_over_zero_copy(endpoint: str, ctx: zmq.Context) -> None:
    mask = np.random.default_rng(0).integers(0, 4, (480, 640), np.uint8)  # 300 KB frame
    with Publisher([endpoint], context=ctx, linger_ms=0) as pub, \
            Subscriber(endpoint, context=ctx) as sub:
        sync(pub, sub)
        assert pub.send(encode_result(make_result(seq=1, mask=mask[:, ::-1]), MaskEncoder("raw")))
        msg = sub.recv(timeout=60)
    assert isinstance(msg, Message) and msg.mask is not None
    np.testing.assert_array_equal(msg.mask, mask[:, ::-1])
    assert msg.mask_camera() is msg.mask


def test_camera_prefix_filtering(tcp_ctx_pub: tuple[Publisher, str], ctx: zmq.Context) -> None:
    pub, endpoint = tcp_ctx_pub
    with Subscriber(endpoint, ["cam1"], context=ctx) as sub1, \
            Subscriber(endpoint, ["cam10"], context=ctx) as sub10:
        sync(pub, sub1, "cam1")
        sync(pub, sub10, "cam10")
        for seq in range(1, 4):
            pub.send(encode_result(make_result("cam10", seq), None))
            pub.send(encode_result(make_result("cam1", seq), None))
        pub.send(encode_eos("cam10", 3, "done"))
        pub.send(encode_eos("cam1", 3, "done"))
        got1 = list(sub1)
        got10 = list(sub10)
    assert [m.camera for m in got1] == ["cam1"] * 4
    assert [m.camera for m in got10] == ["cam10"] * 4
    assert isinstance(got1[-1], EndOfStream) and got1[-1].last_seq == 3


@pytest.fixture
def tcp_ctx_pub(ctx: zmq.Context) -> Iterator[tuple[Publisher, str]]:
    endpoint = free_tcp_endpoint()
    with Publisher([endpoint], context=ctx, linger_ms=0) as pub:
        yield pub, endpoint


def test_gap_detection(tcp_ctx_pub: tuple[Publisher, str], ctx: zmq.Context) -> None:
    pub, endpoint = tcp_ctx_pub
    with Subscriber(endpoint, ["cam1", "cam2"], context=ctx) as sub:
        sync(pub, sub, "cam1")  # sub has seen cam1 seq 0
        sync(pub, sub, "cam2")
        for seq in (1, 2, 5):
            pub.send(encode_result(make_result("cam1", seq), None))
        pub.send(encode_result(make_result("cam2", 3), None))  # cam2: 0 -> 3
        pub.send(encode_eos("cam2", 4, "stop"))  # seq 4 never arrived
        seqs = [m.seq if isinstance(m, Message) else -1 for m in
                (sub.recv(timeout=60) for _ in range(5))]
        assert seqs == [1, 2, 5, 3, -1]
        assert sub.gaps_by_camera == {"cam1": 2, "cam2": 3}
        assert sub.gaps == 5
        # a restarted stream (seq back to 0) is not a gap
        pub.send(encode_result(make_result("cam1", 0), None))
        pub.send(encode_result(make_result("cam1", 1), None))
        assert sub.recv(timeout=60) is not None and sub.recv(timeout=60) is not None
        assert sub.gaps == 5


def test_small_bursts_reach_a_fast_subscriber(tcp_ctx_pub: tuple[Publisher, str],
                                              ctx: zmq.Context) -> None:
    # regression: with sndhwm=8, libzmq's stale view of the queue dropped bursts of 3
    pub, endpoint = tcp_ctx_pub
    with Subscriber(endpoint, ["cam1"], context=ctx) as sub:
        sync(pub, sub)
        seq = 0
        for _ in range(40):
            for _ in range(3):
                seq += 1
                pub.send(encode_result(make_result("cam1", seq, n_det=0), None))
            for _ in range(3):
                assert sub.recv(timeout=60) is not None
        assert sub.gaps == 0


def test_eos_ends_iteration(endpoint: str, ctx: zmq.Context) -> None:
    with Publisher([endpoint], context=ctx, linger_ms=0) as pub, \
            Subscriber(endpoint, ["a", "b"], context=ctx) as sub:
        sync(pub, sub, "a")
        sync(pub, sub, "b")
        pub.send(encode_result(make_result("a", 1), None))
        pub.send(encode_eos("a", 1, "end of file"))
        pub.send(encode_result(make_result("b", 1), None))
        pub.send(encode_result(make_result("b", 2), None))
        pub.send(encode_eos("b", 2, "stopped"))
        pub.send(encode_result(make_result("a", 9), None))  # after the end: not iterated
        got = list(sub)
        assert sub.finished
    kinds = [(m.camera, type(m).__name__) for m in got]
    assert kinds == [("a", "Message"), ("a", "EndOfStream"), ("b", "Message"),
                     ("b", "Message"), ("b", "EndOfStream")]
    assert got[1].reason == "end of file"  # type: ignore[union-attr]


def test_malformed_and_reserved_topics_are_skipped(tcp_ctx_pub: tuple[Publisher, str],
                                                   ctx: zmq.Context) -> None:
    pub, endpoint = tcp_ctx_pub
    with Subscriber(endpoint, context=ctx) as sub:
        sync(pub, sub)
        pub.send([b"cam1/result", b"\xc1 not msgpack"])
        pub.send([b"cam1/result", b"\x80", b"x"])
        pub.send([b"_stats", b"\x80"])
        pub.send([b"cam1/state", b"\x80"])
        pub.send(encode_result(make_result("cam1", 1), None))
        msg = sub.recv(timeout=60)
        assert isinstance(msg, Message) and msg.seq == 1
        assert sub.malformed == 2 and sub.ignored == 2


def test_typed_stats_and_states_reach_the_subscriber(tcp_ctx_pub: tuple[Publisher, str],
                                                     ctx: zmq.Context) -> None:
    """A daemon snapshot -> `_stats` on the bus -> the client's typed snapshots, equal."""
    from test_telemetry import FRONT

    from edged.telemetry import CameraState, DaemonSnapshot
    from edged.wire.telemetry import CameraState as StateMessage
    from edged.wire.telemetry import Stats, encode_state, encode_stats

    pub, endpoint = tcp_ctx_pub
    snap = DaemonSnapshot(uptime_s=5.0, interval_s=1.0, cameras={"cam1": FRONT})
    with Subscriber(endpoint, ["cam1"], context=ctx, stats=True, states=True) as sub:
        sync(pub, sub)
        pub.send(encode_stats(snap.to_wire(), snap.interval_s))
        pub.send(encode_state("cam1", CameraState.STOPPED, "end of file"))
        stats, state = sub.recv(timeout=60), sub.recv(timeout=60)
    assert isinstance(stats, Stats) and isinstance(state, StateMessage)
    assert stats.cameras == snap.to_wire()
    (got,) = stats.snapshots.values()
    assert got.camera == "cam1" and got.state is CameraState.RUNNING
    assert got.to_wire() == FRONT.to_wire() and got.drops == FRONT.drops
    assert got.log_line(1.0) == FRONT.log_line(1.0).replace("stats front:", "stats cam1:")
    assert state.state is CameraState.STOPPED and state.detail == "end of file"


def test_handshakes_tell_a_subscriber_it_is_connected_before_anything_is_sent(
        endpoint: str, ctx: zmq.Context) -> None:
    with Publisher([endpoint], context=ctx, linger_ms=0) as pub, \
            Subscriber(endpoint, context=ctx) as sub:
        deadline = time.monotonic() + 60
        while not sub.handshakes:
            assert time.monotonic() < deadline, "no handshake within 60 s"
            assert sub.recv(timeout=0.05) is None  # nothing has been published
        assert sub.handshakes == 1
        # its subscription follows the handshake: the publisher sees it arrive
        assert pub.wait_for_subscriptions(1, 60) == 1
        pub.send(encode_result(make_result("cam1", seq=7), None))
        msg = sub.recv(timeout=60)
        assert isinstance(msg, Message) and msg.seq == 7


def test_recv_timeout_returns_none(tcp_ctx_pub: tuple[Publisher, str], ctx: zmq.Context) -> None:
    _, endpoint = tcp_ctx_pub
    with Subscriber(endpoint, ["cam1"], context=ctx) as sub:
        t0 = time.monotonic()
        assert sub.recv(timeout=0.2) is None
        elapsed = time.monotonic() - t0
        assert 0.19 <= elapsed < 60  # a generous ceiling: a recv that ignored it would hang
        assert sub.recv(timeout=0) is None


def test_slow_subscriber_does_not_block_publisher(endpoint: str, ctx: zmq.Context) -> None:
    mask = np.random.default_rng(0).integers(0, 4, (416, 416), np.uint8)  # 173 KB raw
    frames = encode_result(make_result("cam1", 1, mask=mask), MaskEncoder("raw"))
    assert len(frames[2]) > 170_000
    with Publisher([endpoint], sndhwm=2, context=ctx, linger_ms=0) as pub, \
            Subscriber(endpoint, ["cam1"], rcvhwm=2, context=ctx) as sub:
        sync(pub, sub)
        t0 = time.monotonic()
        for _ in range(2000):  # 340 MB offered to a subscriber that never reads
            assert pub.send(frames)
        total = time.monotonic() - t0
        # the subscriber got a bounded number (HWMs and socket buffers), the rest dropped
        # the first one waited for; the rest were queued by then (a short drain could
        # only lower the count, not fail the bound)
        n = 0 if sub.recv(timeout=60) is None else 1
        while n and sub.recv(timeout=0.2) is not None:
            n += 1
        assert 0 < n < 1000
    # a send that blocked on the full subscriber would never return; the ceiling only
    # bounds the failure (speeds are in docs/benchmarks.md, not asserted here)
    assert total < 120, total


def test_send_after_close_is_a_drop(ctx: zmq.Context) -> None:
    pub = Publisher([free_tcp_endpoint()], context=ctx, linger_ms=0)
    pub.close()
    pub.close()  # idempotent
    assert pub.send(encode_eos("cam1", -1, "x")) is False
    assert pub.dropped == 1 and pub.sent == 0


# ----------------------------------------------------------------------------- bind errors


def test_bind_errors_name_the_endpoint(ctx: zmq.Context, tmp_path: Path) -> None:
    ep = free_tcp_endpoint()
    with Publisher([ep], context=ctx, linger_ms=0), \
            pytest.raises(PublishError, match=ep.replace(".", r"\.")):
        Publisher([ep], context=ctx)
    for bad in ("tcp://127.0.0.1:*", "tcp://127.0.0.1:0", "udp://x:1", "nonsense",
                f"ipc://{tmp_path}/no/such/dir/x.sock"):
        with pytest.raises(PublishError, match="cannot bind"):
            Publisher([bad], context=ctx)
    with pytest.raises(PublishError):
        Publisher([], context=ctx)
    # a failure on the second endpoint closes the socket bound to the first
    with pytest.raises(PublishError):
        Publisher([free_tcp_endpoint(), "tcp://127.0.0.1:*"], context=ctx)


def test_ipc_stale_socket_file_is_replaced(ctx: zmq.Context, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # leaves the file behind, as a crashed daemon would
    assert path.exists()
    ep = f"ipc://{path}"
    with Publisher([ep], context=ctx, linger_ms=0) as pub, \
            Subscriber(ep, context=ctx) as sub:
        sync(pub, sub)
        # a live publisher's socket is not stolen
        with pytest.raises(PublishError, match="another process is listening"):
            Publisher([ep], context=ctx)
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(PublishError, match="not a socket"):
        Publisher([f"ipc://{regular}"], context=ctx)
    assert regular.read_text() == "not a socket"


def test_publisher_binds_several_endpoints(ctx: zmq.Context, tmp_path: Path) -> None:
    eps = [free_tcp_endpoint(), f"ipc://{tmp_path}/a.sock"]
    with Publisher(eps, context=ctx, linger_ms=0) as pub:
        for ep in eps:
            with Subscriber(ep, ["cam1"], context=ctx) as sub:
                sync(pub, sub)


def _feed_until(pub: zmq.Socket, sub: Subscriber, seq0: int, timeout: float = 15.0) -> Message:
    """Publish seq0, seq0+1, ... until the subscriber receives one of them."""
    deadline = time.monotonic() + timeout
    seq = seq0
    while time.monotonic() < deadline:
        pub.send_multipart(encode_result(make_result("cam1", seq=seq), None))
        seq += 1
        msg = sub.recv(timeout=0.05)
        if isinstance(msg, Message) and msg.seq >= seq0:
            return msg
    raise AssertionError(f"nothing from seq {seq0} on within {timeout} s")


def test_an_oversized_frame_costs_the_connection_not_the_feed(ctx: zmq.Context) -> None:
    # libzmq would allocate whatever size a frame header declares; with max_frame_bytes
    # it drops the connection instead, and never reconnects after such a protocol error
    # itself: the subscriber rebuilds its socket, and the feed resumes
    ep = free_tcp_endpoint()
    pub = ctx.socket(zmq.PUB)
    pub.bind(ep)
    try:
        with Subscriber(ep, context=ctx, max_frame_bytes=1 << 20) as sub:
            _feed_until(pub, sub, 0)
            assert sub.reconnects == 0
            pub.send_multipart([b"cam1/result", b"\0" * (4 << 20)])
            msg = _feed_until(pub, sub, 1000)
            assert sub.reconnects == 1 and msg.seq >= 1000
            # a frame at the limit is not refused: no further rebuild
            sub_max = sub.max_frame_bytes
            assert sub_max is not None
            pub.send_multipart([b"cam1/result", b"\0" * sub_max])
            _feed_until(pub, sub, 2000)
            assert sub.reconnects == 1 and sub.malformed == 1
    finally:
        pub.close(linger=0)


def test_a_publisher_restart_is_reconnected_by_zeromq_not_rebuilt(ctx: zmq.Context) -> None:
    ep = free_tcp_endpoint()
    pub = ctx.socket(zmq.PUB)
    pub.bind(ep)
    with Subscriber(ep, context=ctx) as sub:
        _feed_until(pub, sub, 0)
        pub.close(linger=0)
        assert sub.recv(timeout=1.0) is None  # the drop seen, and the retry with it
        pub = ctx.socket(zmq.PUB)
        pub.bind(ep)
        try:
            _feed_until(pub, sub, 100)
        finally:
            pub.close(linger=0)
        assert sub.reconnects == 0


def test_subscription_guard_counts_distinct_prefixes_per_address() -> None:
    from edged.wire.publisher import SubscriptionGuard

    g = SubscriptionGuard(limit=19, peers=2)
    # a reconnecting subscriber sends its prefixes again: counted once
    for _ in range(50):
        assert not g.add("10.0.0.1", b"\x01front/")
    assert g.held("10.0.0.1") == len(b"front/") + 1
    assert not g.add("10.0.0.1", b"\x01_stats")
    assert g.add("10.0.0.1", b"\x01rear/")  # 7 + 7 + 6 bytes: over 19
    assert not g.add("10.0.0.1", b"\x00rear/")  # unsubscribed: back under
    assert g.held("10.0.0.1") == 14
    # addresses are counted apart; past `peers` the oldest one is forgotten
    assert not g.add("10.0.0.2", b"\x01x")
    assert not g.add("10.0.0.3", b"\x01y")
    assert g.held("10.0.0.1") == 0 and g.held("10.0.0.3") == 2
