"""MCAP files in a bounded directory: rotated by size, oldest deleted past `max_mb`.

A file is written as `NAME.mcap.part` and renamed to `NAME.mcap` once complete, so a
reader never opens a file that is still growing, and a crash leaves a `.part` (which
counts against `max_mb` too and is deleted first when space is needed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mcap.writer import CompressionType, Writer

log = logging.getLogger("edged.record")

MB = 1024 * 1024
# a recording's chunks are written at least this often (see McapFile.write)
FLUSH_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    encoding: str  # "protobuf", "jsonschema", or "" (no schema)
    data: bytes


class McapFile:
    """One MCAP file being written; channels and schemas registered on first use."""

    def __init__(self, path: Path) -> None:
        self.final = path
        self.part = path.with_name(path.name + ".part")
        self._fh: IO[bytes] = open(self.part, "wb")  # noqa: SIM115 - closed in close()
        try:
            # the whole-file data CRC too (the chunks have their own): a reader can tell a
            # damaged file from a sound one, as `mcap doctor` does
            self._w = Writer(self._fh, compression=CompressionType.ZSTD, chunk_size=512 * 1024,
                             enable_data_crcs=True)
            self._w.start(profile="", library="edged")
        except BaseException:
            self._fh.close()
            raise
        self._flushed = time.monotonic()
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.messages = 0

    def write(self, topic: str, encoding: str, schema: Schema | None, log_time: int,
              data: bytes, publish_time: int | None = None) -> None:
        ch = self._channels.get(topic)
        if ch is None:
            sid = 0
            if schema is not None:
                sid = self._schemas.get(schema.name, 0)
                if not sid:
                    sid = self._schemas[schema.name] = self._w.register_schema(
                        schema.name, schema.encoding, schema.data)
            ch = self._channels[topic] = self._w.register_channel(topic, encoding, sid)
        self._w.add_message(ch, log_time, data, publish_time or log_time)
        self.messages += 1
        now = time.monotonic()
        if now - self._flushed >= FLUSH_EVERY_S:
            # the chunk being built lives in memory until it is written: end it at least
            # this often (and hand it to the OS), so a SIGKILL or a crash loses only the
            # last moment of a recording, not up to chunk_size of it (minutes of results)
            self._w.flush()
            self._flushed = now

    @property
    def size(self) -> int:
        return self._fh.tell()

    def close(self) -> Path:
        """Finish the file (summary and index) and give it its final name."""
        try:
            self._w.finish()
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
        self.part.rename(self.final)
        return self.final

    def abandon(self) -> None:
        """After a write error: close and delete what was written (the space is needed)."""
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            self.part.unlink()


def recordings(directory: Path) -> list[Path]:
    """edged's files in `directory` (finished and partial), oldest first."""
    found = [p for p in directory.iterdir()
             if p.is_file() and (p.name.endswith(".mcap") or p.name.endswith(".mcap.part"))]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def enforce_limit(directory: Path, max_bytes: float, keep: set[Path]) -> list[Path]:
    """Delete the oldest recordings (partial ones first) until the directory's recordings
    total at most `max_bytes`; files in `keep` (being written) are left. Returns what was
    deleted."""
    files = recordings(directory)
    total = sum(p.stat().st_size for p in files)
    deleted = []
    order = [p for p in files if p.name.endswith(".part")] + \
        [p for p in files if not p.name.endswith(".part")]
    for p in order:
        if total <= max_bytes:
            break
        if p in keep:
            continue
        size = p.stat().st_size
        p.unlink()
        total -= size
        deleted.append(p)
    return deleted
