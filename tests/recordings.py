"""Recordings written here, for the replay tests."""

from __future__ import annotations

from pathlib import Path


def write_recording(path: Path, n: int = 50) -> None:
    """A finished edged MCAP file of `n` small wire messages, one chunk each few."""
    import msgpack
    from mcap.writer import CompressionType, Writer

    with open(path, "wb") as fh:
        w = Writer(fh, compression=CompressionType.ZSTD, chunk_size=2048)
        w.start(profile="", library="test")
        ch = w.register_channel("/a/edged", "edged.multipart", 0)
        for i in range(n):
            w.add_message(ch, 1_000_000 * i, msgpack.packb([b"a/r", bytes([i]) * 100]),
                          1_000_000 * i)
        w.finish()
