"""CDR (XCDR1, little endian) for the two large messages, sensor_msgs/Image and
sensor_msgs/CompressedImage, written with `struct` in one pass.

`dds_pad` (the default) pads the sample to a multiple of 4 bytes, as cyclonedds'
`DataWriter.write` pads what it writes; `dds_pad=False` gives the plain CDR, the bytes a
ROS 2 serializer (and `rosbags`) makes and rosbag2 stores: a rosbag2 payload carries no
trailing padding.

Why not the Cyclone DDS Python serializer for these: it walks a `sequence<uint8>` one
element at a time (12 ms for a 640x480 mono8 mask here, against 0.1 ms for this). The
small messages go through it. tests/e2e/test_ros2.py checks these bytes against Cyclone's
own serializer, and a Cyclone reader decodes them in the end-to-end test.
"""

from __future__ import annotations

import struct

ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR_LE, no options


def _pad(buf: bytearray, n: int) -> None:
    # alignment counts from the end of the encapsulation header
    buf.extend(b"\0" * (-(len(buf) - 4) % n))


def _string(buf: bytearray, s: str) -> None:
    b = s.encode() + b"\0"
    _pad(buf, 4)
    buf.extend(struct.pack("<I", len(b)))
    buf.extend(b)


def _header(buf: bytearray, t_ns: int, frame_id: str) -> None:
    _pad(buf, 4)
    buf.extend(struct.pack("<iI", t_ns // 1_000_000_000, t_ns % 1_000_000_000))
    _string(buf, frame_id)


def _bytes(buf: bytearray, data: bytes | memoryview) -> None:
    flat = memoryview(data).cast("B")  # a numpy array's buffer may have several dims
    _pad(buf, 4)
    buf.extend(struct.pack("<I", flat.nbytes))
    buf.extend(flat)


def image(t_ns: int, frame_id: str, height: int, width: int, encoding: str, step: int,
          data: bytes | memoryview, *, dds_pad: bool = True) -> bytes:
    buf = bytearray(ENCAPSULATION)
    _header(buf, t_ns, frame_id)
    _pad(buf, 4)
    buf.extend(struct.pack("<II", height, width))
    _string(buf, encoding)
    buf.append(0)  # is_bigendian
    _pad(buf, 4)
    buf.extend(struct.pack("<I", step))
    _bytes(buf, data)
    if dds_pad:
        _pad(buf, 4)
    return bytes(buf)


def compressed_image(t_ns: int, frame_id: str, fmt: str, data: bytes | memoryview, *,
                     dds_pad: bool = True) -> bytes:
    buf = bytearray(ENCAPSULATION)
    _header(buf, t_ns, frame_id)
    _string(buf, fmt)
    _bytes(buf, data)
    if dds_pad:
        _pad(buf, 4)
    return bytes(buf)
