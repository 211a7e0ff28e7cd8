"""MCAP recording (`record:` in the config, `edged record`, `edged replay`; optional
extra `edged[record]`).

`settings` is its config section (`RecordConfig`); `files` writes rotated MCAP files
into a bounded directory; `sink` is the recorder (all the time, or a flight recorder of
the seconds around an event); `replay` publishes a recording on ZeroMQ again with its
original timing.

A recording holds, per camera, the Foxglove messages of Foxglove live
(`/<camera>/image` JPEG when `record.frames`, `/<camera>/mask` mono8 class ids,
`/<camera>/mask_color` PNG in the view's colours, `/<camera>/annotations`; and
`/edged/stats`, JSON schema `edged.Stats`), so Foxglove and Lichtblick open the file,
and edged's own wire messages (`/<camera>/edged` and `/edged/control`): the ZeroMQ
frames exactly as published, as protobuf `edged.WireMessage { repeated bytes frames =
1; }` with its schema in the file, so a viewer decodes these channels too (it shows the
frames as bytes) instead of reporting an unknown encoding. Files written before
2026-12-07 carry them with the message encoding `edged.multipart` (a msgpack array of
the frames, no schema); replay reads both.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack

from edged.config import Config
from edged.errors import UserError
from edged.outputs.base.output import Held, Output, frame_ids
from edged.outputs.base.ros2msgs import require_ros2
from edged.outputs.base.sink import Sink
from edged.outputs.record.settings import RecordConfig
from edged.outputs.ros2.settings import Ros2Config

WIRE_ENCODING = "protobuf"
WIRE_SCHEMA_NAME = "edged.WireMessage"
LEGACY_WIRE_ENCODING = "edged.multipart"


class RecordError(UserError, RuntimeError):
    """Recording cannot start (its extra is missing, or its directory is unusable)."""


def require_record() -> None:
    try:
        import foxglove  # noqa: F401
        import mcap  # noqa: F401
    except ImportError:
        raise RecordError("recording needs mcap and foxglove-sdk: pip install "
                          "'edged[record]'") from None


# ------------------------------------------------------------------ edged.WireMessage
# Written by hand (protobuf's wire format is three rules here), so recording and replay
# need no protobuf runtime; tests/e2e/test_record.py decodes both with google.protobuf.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _vi(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


# FileDescriptorSet { file { name package message_type { name field { name number
# label=REPEATED type=BYTES json_name } } syntax } }
WIRE_SCHEMA = _ld(1, b"".join((
    _ld(1, b"edged/WireMessage.proto"), _ld(2, b"edged"),
    _ld(4, _ld(1, b"WireMessage") + _ld(2, b"".join((
        _ld(1, b"frames"), _vi(3, 1), _vi(4, 3), _vi(5, 12), _ld(10, b"frames"))))),
    _ld(12, b"proto3"))))


def encode_wire(frames: Sequence[bytes | memoryview]) -> bytes:
    return b"".join(_ld(1, bytes(f)) for f in frames)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_wire(data: bytes) -> list[bytes]:
    """The frames of an `edged.WireMessage`; other fields are skipped, as protobuf does.
    ValueError for a truncated message."""
    frames, i = [], 0
    try:
        while i < len(data):
            key, i = _read_varint(data, i)
            kind = key & 7
            if kind == 2:
                n, i = _read_varint(data, i)
                if i + n > len(data):
                    raise ValueError("truncated field")
                if key >> 3 == 1:
                    frames.append(data[i:i + n])
                i += n
            elif kind == 0:
                _, i = _read_varint(data, i)
            elif kind in (1, 5):
                i += 8 if kind == 1 else 4
            else:
                raise ValueError(f"wire type {kind}")
    except IndexError:
        raise ValueError("truncated varint") from None
    return frames


def is_wire_channel(encoding: str, schema_name: str) -> bool:
    """Whether a channel carries edged's wire messages (this format or the older one)."""
    return ((encoding == WIRE_ENCODING and schema_name == WIRE_SCHEMA_NAME)
            or encoding == LEGACY_WIRE_ENCODING)


def wire_frames(encoding: str, schema_name: str, data: bytes) -> list[bytes] | None:
    """The ZeroMQ frames of a recorded message if it is one of edged's wire messages
    (this format or the older msgpack one), None for any other channel's message."""
    if encoding == WIRE_ENCODING and schema_name == WIRE_SCHEMA_NAME:
        return decode_wire(data)
    if encoding == LEGACY_WIRE_ENCODING:
        return [bytes(f) for f in msgpack.unpackb(data)]
    return None


# ------------------------------------------------------------------ the output

def _require(config: Config, c: RecordConfig) -> None:
    require_record()
    if c.format == "rosbag2":
        require_ros2()


def _check(config: Config, c: RecordConfig, held: list[Held]) -> str:
    if c.format == "rosbag2":
        from edged.outputs.record.rosbag import check_bag_dir

        return f"record: rosbag2 into {check_bag_dir(c, create=False)} (created at start)"
    from edged.outputs.record.sink import check_dir

    return f"record: {check_dir(c)}: writable OK"


def _build(config: Config, c: RecordConfig, cameras: list[str]) -> Sink:
    if c.format == "rosbag2":
        from edged.outputs.record.rosbag import RosbagSink

        # the bag's topics are those the ros2 output would write
        ros2 = config.section(Ros2Config)
        return RosbagSink(c, frame_ids(config, cameras),
                          ros2.namespace if ros2 is not None else Ros2Config().namespace)
    from edged.outputs.record.sink import RecorderSink

    return RecorderSink(c)


# a queue of a few seconds: a disk pausing for a moment loses nothing
OUTPUT = Output("record", RecordConfig, queue_size=64, require=_require, check=_check, build=_build)
