"""An `mcap doctor` for the tests (the Go CLI cannot be installed here): the checks it
makes, on a recording's own bytes. Used for rosbag2 bags (tests/e2e/test_rosbag.py) and for
edged's own Foxglove-schema recordings (tests/e2e/test_record.py)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import zstandard as zstd

MAGIC = b"\x89MCAP0\r\n"
OP = {"header": 0x01, "footer": 0x02, "schema": 0x03, "channel": 0x04, "message": 0x05,
      "chunk": 0x06, "message_index": 0x07, "chunk_index": 0x08, "statistics": 0x0B,
      "metadata": 0x0C, "metadata_index": 0x0D, "summary_offset": 0x0E, "data_end": 0x0F}


def _walk(buf: bytes, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """(offset, opcode, content) of the records in buf[start:end], parsed here by the
    MCAP spec's framing (opcode u8, length u64), not by the mcap package."""
    out, o = [], start
    while o < end:
        op, n = struct.unpack_from("<BQ", buf, o)
        assert o + 9 + n <= end, f"record at {o} runs past its section"
        out.append((o, op, buf[o + 9:o + 9 + n]))
        o += 9 + n
    assert o == end
    return out


def _message(content: bytes) -> tuple[int, int]:
    channel, _seq, log_time = struct.unpack_from("<HIQ", content)
    return channel, log_time


def doctor(path: Path, profile: str = "ros2",
           encodings: dict[str, str] | None = None) -> dict[str, Any]:
    """What `mcap doctor` checks (the Go CLI is not installable here), on the file's own
    bytes, with the `mcap` package only to parse record contents: magic, header profile,
    CRCs (data section, each chunk, summary), every channel with a schema, each chunk's
    times and message indexes against its messages, chunk indexes against the chunks,
    statistics against a count, the metadata index and summary offsets against the
    records they point at, log times monotonic per channel. `profile` is the header's
    profile; `encodings` maps each schema encoding allowed to its channels' message
    encoding (rosbag2's by default). Returns the counts."""
    encodings = encodings if encodings is not None else {"ros2msg": "cdr"}
    from mcap.data_stream import ReadDataStream
    from mcap.records import (
        Channel,
        Chunk,
        ChunkIndex,
        DataEnd,
        Footer,
        Header,
        MessageIndex,
        Metadata,
        MetadataIndex,
        Schema,
        Statistics,
        SummaryOffset,
    )

    def parse(cls: Any, content: bytes) -> Any:
        return cls.read(ReadDataStream(io.BytesIO(content)))

    buf = path.read_bytes()
    assert buf[:8] == MAGIC and buf[-8:] == MAGIC, "magic"
    footer_at = len(buf) - 8 - 9 - 20
    assert buf[footer_at] == OP["footer"]
    footer = parse(Footer, buf[footer_at + 9:footer_at + 29])
    assert footer.summary_start, "no summary section"
    records = _walk(buf, 8, footer.summary_start)
    header = parse(Header, records[0][2])
    assert records[0][1] == OP["header"] and header.profile == profile, header
    assert records[-1][1] == OP["data_end"]
    data_end = parse(DataEnd, records[-1][2])
    assert data_end.data_section_crc == zlib.crc32(buf[:records[-1][0]]), "data section CRC"
    summary = _walk(buf, footer.summary_start, footer_at)
    assert footer.summary_crc == zlib.crc32(buf[footer.summary_start:footer_at + 9 + 16])

    schemas: dict[int, Any] = {}
    channels: dict[int, Any] = {}
    counts: dict[int, int] = {}
    last_log: dict[int, int] = {}
    chunks: list[tuple[int, int, Any, dict[int, int], int, int]] = []
    times: list[int] = []
    metadata_at: dict[int, Any] = {}
    for i, (off, op, content) in enumerate(records):
        if op == OP["schema"]:
            s = parse(Schema, content)
            schemas[s.id] = s
        elif op == OP["channel"]:
            c = parse(Channel, content)
            channels[c.id] = c
        elif op == OP["metadata"]:
            metadata_at[off] = parse(Metadata, content)
        elif op == OP["message"]:
            raise AssertionError("a message outside a chunk: the chunk indexes miss it")
        elif op == OP["chunk"]:
            ch = parse(Chunk, content)
            assert ch.compression == "zstd"
            raw = zstd.decompress(ch.data)
            assert len(raw) == ch.uncompressed_size and zlib.crc32(raw) == ch.uncompressed_crc
            inner = {o: (op2, c2) for o, op2, c2 in _walk(raw, 0, len(raw))}
            msgs = {o: _message(c2) for o, (op2, c2) in inner.items() if op2 == OP["message"]}
            assert msgs, "an empty chunk"
            for op2, c2 in inner.values():
                if op2 == OP["schema"]:
                    s = parse(Schema, c2)
                    schemas[s.id] = s
                elif op2 == OP["channel"]:
                    c = parse(Channel, c2)
                    channels[c.id] = c
            for o in sorted(msgs):
                cid, t = msgs[o]
                assert cid in channels, f"message on channel {cid} before its Channel record"
                assert t >= last_log.get(cid, 0), f"log time goes back on {channels[cid].topic}"
                last_log[cid] = t
                counts[cid] = counts.get(cid, 0) + 1
                times.append(t)
            ts = [t for _, t in msgs.values()]
            assert (ch.message_start_time, ch.message_end_time) == (min(ts), max(ts))
            # the message indexes right after the chunk: one per channel in it, each
            # entry (log time, offset) a message of that channel at that offset
            index_offsets: dict[int, int] = {}
            j = i + 1
            while j < len(records) and records[j][1] == OP["message_index"]:
                mi = parse(MessageIndex, records[j][2])
                index_offsets[mi.channel_id] = records[j][0]
                want = sorted((t, o) for o, (c, t) in msgs.items() if c == mi.channel_id)
                assert sorted(mi.records) == want, f"message index of channel {mi.channel_id}"
                j += 1
            assert set(index_offsets) == {c for c, _ in msgs.values()}
            index_end = records[j][0] if j < len(records) else footer.summary_start
            chunks.append((off, 9 + len(content), ch, index_offsets,
                           index_end - records[i + 1][0], len(msgs)))
    for c in channels.values():
        assert c.schema_id in schemas, f"{c.topic} has no schema"
        enc = schemas[c.schema_id].encoding
        assert encodings.get(enc) == c.message_encoding, (c.topic, enc, c.message_encoding)

    by_op: dict[int, list[tuple[int, int, bytes]]] = {}
    for rec in summary:
        by_op.setdefault(rec[1], []).append(rec)
    chunk_indexes = [parse(ChunkIndex, c) for _, _, c in by_op.get(OP["chunk_index"], [])]
    assert len(chunk_indexes) == len(chunks)
    for ci, (off, length, ch, index_offsets, index_len, _) in zip(chunk_indexes, chunks,
                                                                   strict=True):
        assert (ci.chunk_start_offset, ci.chunk_length) == (off, length)
        assert (ci.message_start_time, ci.message_end_time) == (ch.message_start_time,
                                                                 ch.message_end_time)
        assert ci.message_index_offsets == index_offsets
        assert ci.message_index_length == index_len
        assert (ci.compression, ci.uncompressed_size) == (ch.compression, ch.uncompressed_size)
        assert ci.compressed_size == len(ch.data)
    (stats,) = [parse(Statistics, c) for _, _, c in by_op[OP["statistics"]]]
    assert stats.message_count == sum(counts.values()) == sum(c[5] for c in chunks)
    assert dict(stats.channel_message_counts) == counts
    assert (stats.schema_count, stats.channel_count) == (len(schemas), len(channels))
    assert stats.chunk_count == len(chunks) and stats.metadata_count == len(metadata_at)
    assert (stats.message_start_time, stats.message_end_time) == (min(times), max(times))
    for _, _, c in by_op.get(OP["metadata_index"], []):
        mi = parse(MetadataIndex, c)
        assert mi.offset in metadata_at and metadata_at[mi.offset].name == mi.name
        assert buf[mi.offset] == OP["metadata"] and mi.length == 9 + struct.unpack_from(
            "<Q", buf, mi.offset + 1)[0]
    # summary offsets: each group of summary records where they say (the mcap package
    # writes an empty attachment index group), all of them covered
    covered = 0
    for off, _, c in by_op.get(OP["summary_offset"], []):
        assert off >= footer.summary_offset_start
        so = parse(SummaryOffset, c)
        group = [r for r in summary if so.group_start <= r[0] < so.group_start + so.group_length]
        assert {r[1] for r in group} == ({so.group_opcode} if so.group_length else set())
        assert sum(9 + len(r[2]) for r in group) == so.group_length
        covered += len(group)
    assert covered == len([r for r in summary if r[0] < footer.summary_offset_start])
    # the summary repeats every schema and channel
    assert {parse(Schema, c).id for _, _, c in by_op[OP["schema"]]} == set(schemas)
    assert {parse(Channel, c).id for _, _, c in by_op[OP["channel"]]} == set(channels)
    return {"chunks": len(chunks), "messages": sum(counts.values()),
            "channels": {channels[c].topic: n for c, n in counts.items()},
            "schemas": {s.name for s in schemas.values()},
            "metadata": [m.name for m in metadata_at.values()]}
