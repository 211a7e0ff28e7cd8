"""Wire protocol v1 encode/decode, without sockets."""

from __future__ import annotations

import contextlib
import random
import time

import msgpack
import numpy as np
import pytest
import zmq
import zstandard as zstd

from edged.results import Detections, Letterbox, Result, nearest_indices
from edged.wire.codec import (
    PROTOCOL_VERSION,
    EndOfStream,
    MaskEncoder,
    Message,
    ProtocolError,
    decode,
    decode_mask,
    encode_eos,
    encode_result,
)

CLASSES = ("ball", "goalpost", "robot")
MASK_CLASSES = ("background", "field", "lines")


def regions_mask(h: int = 312, w: int = 416) -> np.ndarray:
    """A class map like a segmentation head gives: large uniform regions."""
    m = np.zeros((h, w), np.uint8)
    m[h // 3:, :] = 1
    m[h // 2:h // 2 + 4, :] = 2
    m[:, w // 2:w // 2 + 3] = 2
    yy, xx = np.mgrid[:h, :w]
    m[(yy - 2 * h // 3) ** 2 + (xx - w // 2) ** 2 < (h // 6) ** 2] = 2
    return m


def make_result(camera: str = "cam1", seq: int = 7, mask: np.ndarray | None = None,
                n_det: int = 3, frame: tuple[int, int] = (640, 480)) -> Result:
    rng = np.random.default_rng(seq)
    xy = rng.uniform(0, 300, (n_det, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 100, (n_det, 2))], axis=1).astype(np.float32)
    det = Detections(boxes, rng.uniform(0, 1, n_det).astype(np.float32),
                     rng.integers(0, len(CLASSES), n_det).astype(np.int32))
    return Result(camera=camera, seq=seq, t_capture_wall_ns=time.time_ns() - 5_000_000,
                  t_capture_mono_ns=time.monotonic_ns(), frame_w=frame[0], frame_h=frame[1],
                  detections=det, class_names=CLASSES, mask=mask, mask_classes=MASK_CLASSES,
                  letterbox=Letterbox.fit(frame[0], frame[1], 416, 416), model_id="yoeo-test@1",
                  timings_ms={"preprocess": 0.7, "inference": 12.25, "queue": 0},
                  flags=("late",))


def model_mask(rng: np.random.Generator) -> tuple[np.ndarray, Letterbox]:
    """A 416x416 model-input mask and the 640x480 frame's letterbox."""
    return rng.integers(0, 3, (416, 416), dtype=np.uint8), Letterbox.fit(640, 480, 416, 416)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("encoding", ["raw", "zstd", "png"])
@pytest.mark.parametrize("layout", ["contiguous", "cropped", "strided", "transposed"])
def test_mask_round_trip(encoding: str, layout: str) -> None:
    rng = np.random.default_rng(1)
    big, lb = model_mask(rng)
    mask = {"contiguous": lb.crop_mask(big),  # rows only: still C-contiguous
            "cropped": big[40:352, 3:411],
            "strided": big[::2, ::3],
            "transposed": big[:312, :].T}[layout]
    if layout != "contiguous":
        assert not mask.flags.c_contiguous
    enc = MaskEncoder(encoding)  # type: ignore[arg-type]
    data = enc.encode(mask)
    out = decode_mask(data, mask.shape, encoding)
    assert out.dtype == np.uint8 and out.shape == mask.shape
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(decode_mask(memoryview(data), mask.shape, encoding), mask)


def test_raw_mask_is_a_copy() -> None:
    mask = regions_mask()
    data = MaskEncoder("raw").encode(mask)
    mask[:] = 9  # the pipeline reusing its buffer must not change what is queued
    assert set(np.unique(decode_mask(data, mask.shape, "raw"))) <= {0, 1, 2}


def test_zstd_is_small_for_segmentation_masks() -> None:
    mask = regions_mask(312, 416)
    data = MaskEncoder("zstd", zstd_level=1).encode(mask)
    assert len(data) < 0.1 * mask.size, len(data)
    assert zstd.frame_content_size(data) == mask.size  # decoders can check before allocating


def test_encoder_rejects_bad_masks() -> None:
    with pytest.raises(ValueError):
        MaskEncoder("zstd").encode(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        MaskEncoder("raw").encode(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError):
        MaskEncoder("raw").encode(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError):
        MaskEncoder("gif")  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["raw", "zstd", "png"])
def test_result_round_trip(encoding: str) -> None:
    rng = np.random.default_rng(3)
    big, lb = model_mask(rng)
    res = make_result(mask=big[lb.pad_y:lb.pad_y + lb.content_h, 1:])  # non-contiguous
    t0 = time.time_ns()
    frames = encode_result(res, MaskEncoder(encoding))  # type: ignore[arg-type]
    t1 = time.time_ns()
    assert len(frames) == 3 and frames[0] == b"cam1/result"
    header = msgpack.unpackb(frames[1])
    assert header["v"] == PROTOCOL_VERSION and header["type"] == "result"
    assert header["mask"]["encoding"] == encoding and header["mask"]["dtype"] == "uint8"

    msg = decode(frames, t_received_ns=t1 + 1_000_000)
    assert isinstance(msg, Message)
    assert (msg.camera, msg.seq, msg.model) == ("cam1", 7, "yoeo-test@1")
    assert msg.t_capture_ns == res.t_capture_wall_ns and t0 <= msg.t_publish_ns <= t1
    assert (msg.frame_w, msg.frame_h) == (640, 480)
    assert msg.class_names == CLASSES and msg.mask_classes == MASK_CLASSES
    det = res.detections
    assert msg.boxes.dtype == np.float32 and msg.boxes.shape == (3, 4)
    np.testing.assert_array_equal(msg.boxes, det.boxes)  # float32 on the wire: exact
    np.testing.assert_array_equal(msg.scores, det.scores)
    assert msg.class_ids.dtype == np.int32
    np.testing.assert_array_equal(msg.class_ids, det.class_ids)
    assert msg.labels() == [CLASSES[i] for i in det.class_ids]
    assert msg.timings_ms == pytest.approx(res.timings_ms, rel=1e-6)
    assert msg.flags == ("late",)
    assert msg.latency_ms == pytest.approx((t1 + 1_000_000 - res.t_capture_wall_ns) / 1e6)
    assert res.mask is not None and msg.mask is not None
    np.testing.assert_array_equal(msg.mask, res.mask)
    assert msg.letterbox == {"input": (416, 416), "scale": pytest.approx((0.65, 0.65)),
                             "pad": (0, 52), "content": (416, 312)}
    to_cam = header["mask"]["to_camera"]
    assert to_cam == pytest.approx([640 / 415, 480 / 312])


def test_result_without_mask() -> None:
    res = make_result(mask=regions_mask(), n_det=0)
    for frames in (encode_result(res, MaskEncoder(), send_mask=False), encode_result(res, None)):
        assert len(frames) == 2
        msg = decode(frames)
        assert isinstance(msg, Message)
        assert msg.mask is None and msg.mask_camera() is None and msg.letterbox is None
        assert msg.boxes.shape == (0, 4) and msg.scores.shape == (0,) and len(msg) == 0
        assert msg.labels() == []


def test_eos_round_trip() -> None:
    frames = encode_eos("cam.2-x_", -1, "end of file")
    assert frames[0] == b"cam.2-x_/eos" and len(frames) == 2
    eos = decode(frames)
    assert isinstance(eos, EndOfStream)
    assert (eos.camera, eos.last_seq, eos.reason) == ("cam.2-x_", -1, "end of file")
    assert abs(eos.t_publish_ns - time.time_ns()) < 10**9


def test_unknown_class_id_label() -> None:
    res = make_result(n_det=1)
    res.detections.class_ids[0] = 12
    assert decode(encode_result(res, None)).labels() == ["12"]  # type: ignore[union-attr]


@pytest.mark.parametrize("camera", ["", "a/b", "x" * 65, "cam 1", "caméra", "cam\n"])
def test_invalid_camera_names(camera: str) -> None:
    with pytest.raises(ValueError):
        encode_result(make_result(camera=camera), None)
    with pytest.raises(ValueError):
        encode_eos(camera, 0, "stop")


# ----------------------------------------------------------------------------- mask geometry


@pytest.mark.parametrize(("src", "dst"), [(312, 480), (416, 640), (104, 480), (8, 196),
                                         (15, 170), (7, 7), (640, 416), (3, 1)])
def test_nearest_indices_sample_cell_containing_pixel_centre(src: int, dst: int) -> None:
    # camera pixel x (centre x + 0.5) lies in mask cell c = [c * s, (c + 1) * s), s = dst / src
    idx = nearest_indices(src, dst)
    expected = [int((x + 0.5) * src / dst) for x in range(dst)]
    assert idx.tolist() == expected
    assert idx.min() >= 0 and idx.max() < src


def test_mask_camera() -> None:
    mask = regions_mask(312, 416)
    res = make_result(mask=mask)
    msg = decode(encode_result(res, MaskEncoder()))
    assert isinstance(msg, Message)
    cam = msg.mask_camera()
    assert cam is not None and cam.shape == (480, 640) and cam.dtype == np.uint8
    rows, cols = nearest_indices(312, 480), nearest_indices(416, 640)
    for y, x in [(0, 0), (479, 639), (240, 321), (100, 7)]:
        assert cam[y, x] == mask[rows[y], cols[x]]
    # a full-resolution mask is returned as is
    full = decode(encode_result(make_result(mask=np.ones((480, 640), np.uint8)), MaskEncoder()))
    assert isinstance(full, Message) and full.mask_camera() is full.mask


# ----------------------------------------------------------------------------- garbage


def _valid(mask: bool = True, encoding: str = "zstd") -> list[bytes]:
    res = make_result(mask=regions_mask(24, 32) if mask else None)
    return encode_result(res, MaskEncoder(encoding))  # type: ignore[arg-type]


def _with_header(frames: list[bytes], **changes: object) -> list[bytes]:
    header = msgpack.unpackb(frames[1])
    for k, v in changes.items():
        if v is KeyError:
            del header[k]
        else:
            header[k] = v
    return [frames[0], msgpack.packb(header), *frames[2:]]


def _with_mask_header(frames: list[bytes], **changes: object) -> list[bytes]:
    header = msgpack.unpackb(frames[1])
    header["mask"].update(changes)
    return [frames[0], msgpack.packb(header), frames[2]]


def _malformed_cases() -> dict[str, object]:
    v = _valid()
    nm = _valid(mask=False)
    eos = encode_eos("cam1", 3, "stop")
    mh = msgpack.unpackb(v[1])["mask"]
    return {
        "no frames": [],
        "one frame": v[:1],
        "four frames": [*v, b"x"],
        "not a list": None,
        "bytes": b"cam1/result",
        "int frames": [1, 2],
        "not msgpack": [v[0], b"\xc1\xc1"],
        "truncated msgpack": [v[0], v[1][:-3], v[2]],
        "extra data": [v[0], v[1] + b"\x00", v[2]],
        "header is a list": [v[0], msgpack.packb([1, "result"])],
        "header is an int": [v[0], msgpack.packb(1)],
        "int map keys": [v[0], msgpack.packb({1: 2})],
        "version 2": _with_header(v, v=2),
        "version str": _with_header(v, v="1"),
        "version bool": _with_header(v, v=True),
        "version float": _with_header(v, v=1.0),
        "no version": _with_header(v, v=KeyError),
        "unknown type": _with_header(v, type="state"),
        "topic mismatch": [b"cam2/result", *v[1:]],
        "topic not utf-8": [b"\xff\xfe/result", *v[1:]],
        "bad camera": [b"a b/result", *_with_header(v, camera="a b")[1:]],
        "missing seq": _with_header(v, seq=KeyError),
        "seq str": _with_header(v, seq="7"),
        "seq bool": _with_header(v, seq=True),
        "seq negative": _with_header(v, seq=-1),
        "frame size 3": _with_header(v, frame=[640, 480, 3]),
        "frame zero": _with_header(v, frame=[0, 480]),
        "boxes not nested": _with_header(v, boxes=[1.0, 2.0, 3.0, 4.0]),
        "box of 3": _with_header(v, boxes=[[1.0, 2.0, 3.0]] * 3),
        "box str": _with_header(v, boxes=[["1", 2.0, 3.0, 4.0]] * 3),
        "box nan": _with_header(v, boxes=[[float("nan"), 2.0, 3.0, 4.0]] * 3),
        "scores short": _with_header(v, scores=[0.5]),
        "class id float": _with_header(v, class_ids=[0, 1.5, 2]),
        "class id huge": _with_header(v, class_ids=[0, 2**40, 2]),
        "classes ints": _with_header(v, classes=[1, 2]),
        "timing list": _with_header(v, timing_ms=[1.0]),
        "timing str value": _with_header(v, timing_ms={"a": "1"}),
        "flags str": _with_header(v, flags="late"),
        "mask is a list": _with_header(v, mask=[24, 32]),
        "mask announced, 2 frames": v[:2],
        "no mask, 3 frames": [*nm, b"\x00" * 10],
        "mask size mismatch raw": _with_mask_header(_valid(encoding="raw"), shape=[24, 31]),
        "mask raw truncated": (lambda r: [r[0], r[1], r[2][:-1]])(_valid(encoding="raw")),
        "mask zstd size mismatch": _with_mask_header(v, shape=[32, 32]),
        "mask zstd garbage": [v[0], v[1], b"\x28\xb5\x2f\xfd garbage"],
        "mask zstd truncated": [v[0], v[1], v[2][:-2]],
        "mask png garbage": _with_mask_header([v[0], v[1], b"\x89PNG nope"], encoding="png"),
        "mask png size mismatch": _with_mask_header(_valid(encoding="png"), shape=[32, 24]),
        "mask huge shape": _with_mask_header(v, shape=[10**6, 10**6]),
        "mask dtype": _with_mask_header(v, dtype="uint16"),
        "mask no classes": _with_header(v, mask={k: x for k, x in mh.items() if k != "classes"}),
        "letterbox str": _with_mask_header(v, letterbox="416x416"),
        "letterbox short": _with_mask_header(v, letterbox={"input": [416, 416]}),
        "eos 3 frames": [*eos, b"x"],
        "eos seq -2": _with_header(eos, seq=-2),
        "eos no reason": _with_header(eos, reason=KeyError),
    }


@pytest.mark.parametrize("case", list(_malformed_cases()))
def test_decode_rejects_malformed(case: str) -> None:
    with pytest.raises(ProtocolError):
        decode(_malformed_cases()[case])  # type: ignore[arg-type]


def test_an_unknown_mask_encoding_leaves_the_rest_of_the_message() -> None:
    """docs/protocol.md section 7: an unknown encoding makes only the mask unusable."""
    msg = decode(_with_mask_header(_valid(), encoding="lz4"))
    assert isinstance(msg, Message)
    assert msg.mask is None and len(msg) == 3 and msg.class_names == CLASSES
    assert msg.problems == ("mask: unknown encoding 'lz4', left out",)


def test_seq_is_bounded_and_the_boot_id_travels() -> None:
    from edged.wire.codec import MAX_SEQ, encode_stamped

    frames = encode_stamped(make_result(seq=MAX_SEQ), None, boot="0123abcd").frames
    msg = decode(frames)
    assert isinstance(msg, Message) and (msg.seq, msg.boot) == (MAX_SEQ, "0123abcd")
    header = msgpack.unpackb(frames[1])
    header["seq"] = 2**64 - 1
    with pytest.raises(ProtocolError, match=r"'seq' = 18446744073709551615 out of range"):
        decode([frames[0], msgpack.packb(header)])
    eos = decode(encode_eos("cam1", 5, "stop", boot="0123abcd"))
    assert isinstance(eos, EndOfStream) and eos.boot == "0123abcd"
    header["seq"], header["boot"] = 1, "x" * 65
    with pytest.raises(ProtocolError, match="'boot' must be a str of at most 64"):
        decode([frames[0], msgpack.packb(header)])


def test_a_new_boot_id_is_a_restart_not_lost_frames(tcp_endpoint: str) -> None:
    from edged.wire.client import Subscriber
    from edged.wire.codec import encode_stamped
    from edged.wire.publisher import Publisher

    with Publisher([tcp_endpoint], linger_ms=0) as pub, Subscriber(tcp_endpoint) as sub:
        time.sleep(0.3)  # the subscription through
        got = []
        for seq, boot in ((100, "aaaa"), (101, "aaaa"), (0, "bbbb"), (5000, "cccc")):
            pub.send(encode_stamped(make_result(seq=seq), None, boot=boot).frames)
            got.append(sub.recv(timeout=5))
        assert [m.seq for m in got] == [100, 101, 0, 5000]
        assert sub.gaps == 0 and sub.restarts == 2


def test_decode_accepts_zmq_frames_and_unknown_keys() -> None:
    frames = _with_header(_valid(), future_key={"x": 1})
    msg = decode([zmq.Frame(f) for f in frames])
    assert isinstance(msg, Message) and msg.mask is not None and msg.mask.shape == (24, 32)


def test_decode_fuzz_only_protocol_errors() -> None:
    rnd = random.Random(42)
    base = [_valid(), _valid(encoding="raw"), _valid(mask=False), encode_eos("c", 1, "x")]
    for _ in range(400):
        frames = [bytearray(f) for f in rnd.choice(base)]
        part = frames[rnd.randrange(len(frames))]
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            if op < 0.5 and part:
                part[rnd.randrange(len(part))] = rnd.randrange(256)
            elif op < 0.75:
                del part[rnd.randrange(len(part) + 1):]
            else:
                part[rnd.randrange(len(part) + 1):0] = rnd.randbytes(rnd.randint(1, 8))
        with contextlib.suppress(ProtocolError):
            decode([bytes(f) for f in frames])


def test_hostile_masks_cost_bounded_memory_and_time() -> None:
    """A zstd bomb (1 GiB of zeros, the size left out of its header) declared as a
    100x100 mask, and a declared 32768x32768 mask: ProtocolError, fast, the bomb never
    inflated beyond the declared 10,000 bytes (max_output_size)."""
    import resource

    cctx = zstd.ZstdCompressor(write_content_size=False)
    chunk = b"\0" * (1 << 20)
    co = cctx.compressobj()
    bomb = b"".join(co.compress(chunk) for _ in range(1024)) + co.flush()
    assert len(bomb) < 200_000 and zstd.frame_content_size(bomb) == -1
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.monotonic()
    with pytest.raises(ProtocolError):
        decode_mask(bomb, (100, 100), "zstd")
    with pytest.raises(ProtocolError, match="out of range"):
        decode_mask(b"x", (32768, 32768), "raw")
    assert time.monotonic() - t < 1.0
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grew_mb < 50, f"peak RSS grew {grew_mb:.0f} MB"
